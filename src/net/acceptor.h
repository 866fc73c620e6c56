// The listening side of the runtime: accepts TCP connections and waits for each one's first
// frame, which must be a Hello saying who is calling (a replica or a client, and its id). The
// connection is then handed, with that Hello, to whoever serves that role. Connections that send
// anything else first, or nothing within `hello_timeout_ns`, are closed with a logged reason.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "net/connection.h"

namespace lockstep::net {

class Acceptor final : public ConnectionHandler {
 public:
  // Takes ownership of the connection. It has no handler yet: set one (the next frames already
  // read go to it), or reject with `connection->close(...)` and EventLoop::dispose.
  using OnHello = std::function<void(std::unique_ptr<Connection> connection, const Hello& hello)>;

  // Throws std::runtime_error naming the address when it cannot listen.
  Acceptor(EventLoop& loop, const Address& address, OnHello on_hello, ConnectionLimits limits = {},
           uint64_t hello_timeout_ns = 5'000'000'000);
  ~Acceptor();

  uint16_t port() const { return listener_.port(); }
  size_t pending_connections() const { return pending_.size(); }

  void on_message(Connection& connection, WireMessage&& message) override;
  void on_closed(Connection& connection, const std::string& reason) override;

 private:
  struct Pending {
    std::unique_ptr<Connection> connection;
    uint64_t accepted_ns;
  };
  void on_accept(int fd, std::string peer_name);
  void expire_silent();

  EventLoop& loop_;
  OnHello on_hello_;
  ConnectionLimits limits_;
  uint64_t hello_timeout_ns_;
  Listener listener_;
  std::unordered_map<Connection*, Pending> pending_;
  EventLoop::TimerId sweep_timer_ = 0;
};

}  // namespace lockstep::net
