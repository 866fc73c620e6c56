// The listening side of the runtime: accepts TCP connections and waits for each one's first
// frame, which must be a Hello saying who is calling (a replica or a client, and its id). The
// connection is then handed, with that Hello, to whoever serves that role. Connections that send
// anything else first, or nothing within `hello_timeout_ns`, are closed with a logged reason.
//
// Limits (AcceptorLimits): at most `connections_max` accepted connections are open at once,
// counting those already handed off (each holds a slot until it closes, whoever owns it then);
// beyond it a new connection is accepted and closed at once, with a rate-limited log line, so a
// flood of clients cannot exhaust descriptors or memory. A client connection's unsent output is
// capped at `client_output_bytes_max` (a client that stops reading its replies is disconnected);
// replica connections keep the ConnectionLimits they were made with, and PeerChannel raises the
// cap to what its resend buffer may need (net/peer_channel.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "net/connection.h"

namespace lockstep::net {

struct AcceptorLimits {
  size_t connections_max = 4096;
  size_t client_output_bytes_max = 8 * 1024 * 1024;
  // At most one log line per this interval about rejected connections (with a count).
  uint64_t reject_log_interval_ns = 1'000'000'000;
};

// How long an accepted connection may take to send its Hello before it is closed.
inline constexpr uint64_t kHelloTimeoutNsDefault = 5'000'000'000;

class Acceptor final : public ConnectionHandler {
 public:
  // Takes ownership of the connection. It has no handler yet: set one (the next frames already
  // read go to it), or reject with `connection->close(...)` and EventLoop::dispose.
  using OnHello = std::function<void(std::unique_ptr<Connection> connection, const Hello& hello)>;

  // Throws std::runtime_error naming the address when it cannot listen.
  Acceptor(EventLoop& loop, const Address& address, OnHello on_hello, ConnectionLimits limits = {},
           uint64_t hello_timeout_ns = kHelloTimeoutNsDefault, AcceptorLimits acceptor_limits = {});
  ~Acceptor();

  uint16_t port() const { return listener_.port(); }
  size_t pending_connections() const { return pending_.size(); }
  // Accepted connections still open (pending and handed off).
  size_t open_connections() const { return *open_; }
  uint64_t rejected_connections() const { return rejected_; }

  void on_message(Connection& connection, WireMessage&& message) override;
  void on_closed(Connection& connection, const std::string& reason) override;

 private:
  struct Pending {
    std::unique_ptr<Connection> connection;
    uint64_t accepted_ns;
  };
  void on_accept(int fd, std::string peer_name);
  void reject(std::unique_ptr<Connection> connection, const std::string& reason);
  void expire_silent();

  EventLoop& loop_;
  OnHello on_hello_;
  ConnectionLimits limits_;
  uint64_t hello_timeout_ns_;
  AcceptorLimits acceptor_limits_;
  // Shared with the slots the connections hold, so that a connection outliving the acceptor
  // still has a counter to release.
  std::shared_ptr<size_t> open_ = std::make_shared<size_t>(0);
  uint64_t rejected_ = 0;
  uint64_t rejected_unlogged_ = 0;  // since the last log line
  uint64_t last_reject_log_ns_ = 0;
  bool reject_logged_ = false;
  Listener listener_;
  std::unordered_map<Connection*, Pending> pending_;
  EventLoop::TimerId sweep_timer_ = 0;
};

}  // namespace lockstep::net
