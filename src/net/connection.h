// A nonblocking TCP connection carrying lockstep frames (core/codec.h) in both directions.
//
// Reading: bytes are read into one buffer and split into frames with frame_size/decode_frame;
// every complete frame is decoded and handed to the handler, so one read can deliver many
// messages. A malformed, oversized or unknown frame closes this connection (and only this one)
// with a logged reason naming the peer; nothing a peer sends can crash the process.
//
// Writing: send() only appends the encoded frame to an output buffer and asks the event loop for
// a flush; the loop flushes every connection once at the end of the iteration with one send()
// call each, so everything produced in one iteration leaves in as few packets as possible. When
// the kernel buffer is full the rest waits for EPOLLOUT. A peer that does not read long enough
// for the buffer to pass `write_buffer_bytes_max` is disconnected with a logged reason, so a slow
// or dead reader cannot grow this process's memory. The limit can be changed once the peer's role
// is known (the Acceptor gives client connections a smaller one than the default).
//
// Lifetime: the owner holds the Connection in a unique_ptr. close() (or any failure) calls the
// handler's on_closed exactly once; from there the owner retires the object with
// EventLoop::dispose, because the connection may be in the middle of one of its own callbacks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/codec.h"
#include "core/messages.h"
#include "net/address.h"
#include "net/event_loop.h"

namespace lockstep::net {

struct ConnectionLimits {
  size_t read_chunk_bytes = 256 * 1024;               // bytes asked of one read() call
  size_t reads_per_event_max = 4;                     // then other connections get their turn
  size_t write_buffer_bytes_max = 256 * 1024 * 1024;  // unsent output bytes
};

class Connection;

// Callbacks from a connection, on the loop thread. A handler may close the connection, or hand
// it to another handler (set_handler), from inside any of them.
class ConnectionHandler {
 public:
  // An outgoing connection completed its TCP handshake.
  virtual void on_connected(Connection& /*connection*/) {}
  // One decoded frame. The message may be moved from.
  virtual void on_message(Connection& connection, WireMessage&& message) = 0;
  // The connection is closed (by the peer, an error, a bad frame, or close()); called once.
  virtual void on_closed(Connection& connection, const std::string& reason) = 0;

 protected:
  virtual ~ConnectionHandler() = default;
};

class Connection final : public IoHandler, public Flushable {
 public:
  // Wraps an accepted, connected socket (takes ownership of `fd`).
  Connection(EventLoop& loop, int fd, std::string peer_name, ConnectionHandler* handler,
             ConnectionLimits limits = {});
  // Starts a nonblocking connect to `address`. A failure, even an immediate one, is reported
  // through on_closed at the end of the current iteration, never from inside this call.
  static std::unique_ptr<Connection> dial(EventLoop& loop, const Address& address,
                                          ConnectionHandler* handler, ConnectionLimits limits = {});
  // Closes the socket without calling the handler (the owner is destroying it on purpose).
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void set_handler(ConnectionHandler* handler) { handler_ = handler; }
  // For log lines: who is at the other end ("replica 2 at 127.0.0.1:7002").
  void set_peer_name(std::string name) { peer_name_ = std::move(name); }
  const std::string& peer_name() const { return peer_name_; }

  bool is_open() const { return fd_ >= 0 && !closed_ && !close_pending_; }
  bool is_connecting() const { return connecting_; }

  // Queues one frame; it is written at the end of the iteration. No-op once closed.
  void send(const WireMessage& message);
  // Queues bytes that already are whole encoded frames (a resend buffer's copies).
  void send_encoded(std::span<const uint8_t> frames);
  // Closes now and calls on_closed(reason). Idempotent.
  void close(const std::string& reason);

  size_t output_bytes() const { return output_.size() - output_begin_; }
  size_t output_bytes_max() const { return limits_.write_buffer_bytes_max; }
  // Applies from the next send on: a connection already over the new limit closes at its next
  // send.
  void set_output_bytes_max(size_t bytes) { limits_.write_buffer_bytes_max = bytes; }
  // Keeps `slot` alive until this connection closes or is destroyed, whichever comes first:
  // how an Acceptor counts the connections it accepted after handing them off.
  void hold_slot(std::shared_ptr<void> slot) { slot_ = std::move(slot); }
  uint64_t frames_received() const { return frames_received_; }

  void on_io(uint32_t epoll_events) override;
  void flush() override;

 private:
  Connection(EventLoop& loop, ConnectionHandler* handler, ConnectionLimits limits);

  void finish_connect();
  void read_available();
  // Decodes the complete frames in the input buffer; false when the connection closed.
  bool deliver_frames();
  void write_output();
  void update_interest();
  void after_append();
  void reserve_output();
  void fail_later(std::string reason);

  EventLoop& loop_;
  ConnectionHandler* handler_;
  ConnectionLimits limits_;
  int fd_ = -1;
  std::string peer_name_;
  bool connecting_ = false;
  bool want_write_ = false;     // EPOLLOUT registered
  bool close_pending_ = false;  // a failure found outside a safe point; closed at flush
  bool closed_ = false;         // close() ran (on_closed was called)
  std::string close_reason_;

  Bytes input_;  // [input_begin_, input_end_) holds unparsed bytes
  size_t input_begin_ = 0;
  size_t input_end_ = 0;
  Bytes output_;  // [output_begin_, size()) is still to be written
  size_t output_begin_ = 0;
  uint64_t frames_received_ = 0;
  std::shared_ptr<void> slot_;
};

// Accepts TCP connections and hands each new socket to `on_accept` (which must take ownership
// of the fd, normally by wrapping it in a Connection).
class Listener final : public IoHandler {
 public:
  using AcceptCallback = std::function<void(int fd, std::string peer_name)>;
  // Throws std::runtime_error naming the address when it cannot listen.
  Listener(EventLoop& loop, const Address& address, AcceptCallback on_accept);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  uint16_t port() const { return port_; }
  void on_io(uint32_t epoll_events) override;

 private:
  EventLoop& loop_;
  int fd_ = -1;
  uint16_t port_ = 0;
  AcceptCallback on_accept_;
  EventLoop::TimerId resume_timer_ = 0;
};

}  // namespace lockstep::net
