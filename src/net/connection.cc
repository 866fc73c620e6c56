#include "net/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <variant>

namespace lockstep::net {
namespace {

constexpr int kListenBacklog = 512;
// After accept() fails for lack of file descriptors, wait this long before trying again, since
// the level-triggered listener would otherwise wake the loop continuously.
constexpr uint64_t kAcceptPauseNs = 100'000'000;
// Output buffers start at this capacity and grow geometrically.
constexpr size_t kOutputReserveMinBytes = 64 * 1024;

std::string describe_peer(const sockaddr_storage& storage) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (storage.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (storage.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "unknown peer";
}

}  // namespace

Connection::Connection(EventLoop& loop, ConnectionHandler* handler, ConnectionLimits limits)
    : loop_(loop), handler_(handler), limits_(limits) {}

Connection::Connection(EventLoop& loop, int fd, std::string peer_name, ConnectionHandler* handler,
                       ConnectionLimits limits)
    : Connection(loop, handler, limits) {
  fd_ = fd;
  peer_name_ = std::move(peer_name);
  set_tcp_nodelay(fd_);
  loop_.add_fd(fd_, EPOLLIN, this);
}

std::unique_ptr<Connection> Connection::dial(EventLoop& loop, const Address& address,
                                             ConnectionHandler* handler, ConnectionLimits limits) {
  std::unique_ptr<Connection> connection(new Connection(loop, handler, limits));
  connection->peer_name_ = format_address(address);
  std::string error;
  std::optional<ResolvedAddress> resolved = resolve(address, error);
  if (!resolved) {
    connection->fail_later(error);
    return connection;
  }
  int fd = socket(resolved->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    connection->fail_later(std::string("socket: ") + std::strerror(errno));
    return connection;
  }
  connection->fd_ = fd;
  set_tcp_nodelay(fd);
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&resolved->storage), resolved->length);
  if (rc != 0 && errno != EINPROGRESS) {
    connection->fail_later("connect to " + connection->peer_name_ + ": " + std::strerror(errno));
    return connection;
  }
  // Even an immediately completed connect is reported through EPOLLOUT, so on_connected always
  // comes from the loop and never from inside dial().
  connection->connecting_ = true;
  connection->want_write_ = true;
  loop.add_fd(fd, EPOLLIN | EPOLLOUT, connection.get());
  return connection;
}

Connection::~Connection() {
  loop_.cancel_flush(this);
  if (fd_ >= 0) {
    loop_.remove_fd(fd_);
    ::close(fd_);
  }
}

void Connection::fail_later(std::string reason) {
  if (close_pending_) return;
  close_pending_ = true;
  close_reason_ = std::move(reason);
  loop_.request_flush(this);
}

void Connection::close(const std::string& reason) {
  if (closed_) return;
  closed_ = true;
  close_pending_ = false;
  connecting_ = false;
  loop_.cancel_flush(this);
  if (fd_ >= 0) {
    loop_.remove_fd(fd_);
    ::close(fd_);
    fd_ = -1;
  }
  input_.clear();
  output_.clear();
  input_begin_ = input_end_ = output_begin_ = 0;
  slot_.reset();
  if (handler_ != nullptr) handler_->on_closed(*this, reason);
}

void Connection::send(const WireMessage& message) {
  if (!is_open()) return;
  reserve_output();
  encode_frame(message, output_);
  after_append();
}

void Connection::send_encoded(std::span<const uint8_t> frames) {
  if (!is_open()) return;
  reserve_output();
  output_.insert(output_.end(), frames.begin(), frames.end());
  after_append();
}

void Connection::reserve_output() {
  // encode_frame reserves exactly what one frame needs; growing geometrically here keeps many
  // appends per iteration from reallocating (and copying the buffer) for each frame.
  size_t free_bytes = output_.capacity() - output_.size();
  if (free_bytes < output_.capacity() / 4 || free_bytes < 4096) {
    output_.reserve(std::max(output_.capacity() * 2, kOutputReserveMinBytes));
  }
}

void Connection::after_append() {
  if (output_bytes() > limits_.write_buffer_bytes_max) {
    // Logged here, once per connection (send() is a no-op from now on), because a slow or dead
    // reader is the one failure the handler cannot tell from an ordinary disconnect.
    spdlog::warn(
        "closing connection to {}: it is not reading; {} bytes waiting to be written "
        "(limit {})",
        peer_name_, output_bytes(), limits_.write_buffer_bytes_max);
    fail_later("peer is not reading: " + std::to_string(output_bytes()) +
               " bytes waiting to be written");
    return;
  }
  if (!connecting_ && !want_write_) loop_.request_flush(this);
}

void Connection::flush() {
  if (close_pending_) {
    std::string reason = std::move(close_reason_);
    close(reason);
    return;
  }
  if (fd_ < 0 || connecting_ || want_write_) return;
  write_output();
}

void Connection::write_output() {
  while (output_begin_ < output_.size()) {
    ssize_t n =
        ::send(fd_, output_.data() + output_begin_, output_.size() - output_begin_, MSG_NOSIGNAL);
    if (n > 0) {
      output_begin_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    close(std::string("write error: ") + std::strerror(errno));
    return;
  }
  if (output_begin_ == output_.size()) {
    // Keeps the capacity: the next iteration's frames reuse it without allocating.
    output_.clear();
    output_begin_ = 0;
  } else if (output_begin_ > output_.size() / 2) {
    output_.erase(output_.begin(), output_.begin() + static_cast<ptrdiff_t>(output_begin_));
    output_begin_ = 0;
  }
  update_interest();
}

void Connection::update_interest() {
  if (fd_ < 0) return;
  bool want = connecting_ || output_begin_ < output_.size();
  if (want == want_write_) return;
  want_write_ = want;
  loop_.modify_fd(fd_, want ? (EPOLLIN | EPOLLOUT) : EPOLLIN, this);
}

void Connection::on_io(uint32_t epoll_events) {
  if (fd_ < 0 || close_pending_) return;
  if (connecting_) {
    if ((epoll_events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
    finish_connect();
    return;
  }
  if ((epoll_events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
    read_available();
    if (fd_ < 0) return;
  }
  if ((epoll_events & EPOLLOUT) != 0 && !close_pending_) write_output();
}

void Connection::finish_connect() {
  int error = 0;
  socklen_t length = sizeof error;
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  if (error != 0) {
    close("connect to " + peer_name_ + ": " + std::strerror(error));
    return;
  }
  connecting_ = false;
  want_write_ = false;
  loop_.modify_fd(fd_, EPOLLIN, this);
  // Frames queued while connecting go out with this iteration's flush.
  if (output_bytes() > 0) loop_.request_flush(this);
  if (handler_ != nullptr) handler_->on_connected(*this);
}

void Connection::read_available() {
  for (size_t reads = 0; reads < limits_.reads_per_event_max; ++reads) {
    if (input_begin_ == input_end_) input_begin_ = input_end_ = 0;
    if (input_.size() - input_end_ < limits_.read_chunk_bytes) {
      // Move the partial frame to the front, then grow if a large frame still does not fit.
      if (input_begin_ > 0) {
        std::memmove(input_.data(), input_.data() + input_begin_, input_end_ - input_begin_);
        input_end_ -= input_begin_;
        input_begin_ = 0;
      }
      if (input_.size() - input_end_ < limits_.read_chunk_bytes) {
        input_.resize(std::max(input_.size() * 2, input_end_ + limits_.read_chunk_bytes));
      }
    }
    size_t room = input_.size() - input_end_;
    ssize_t n = ::read(fd_, input_.data() + input_end_, room);
    if (n > 0) {
      input_end_ += static_cast<size_t>(n);
      if (!deliver_frames()) return;
      if (static_cast<size_t>(n) < room) return;  // drained the socket
      continue;
    }
    if (n == 0) {
      close(input_begin_ == input_end_ ? "connection closed by peer"
                                       : "connection closed by peer in the middle of a frame");
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    close(std::string("read error: ") + std::strerror(errno));
    return;
  }
}

bool Connection::deliver_frames() {
  while (input_begin_ < input_end_) {
    std::span<const uint8_t> available(input_.data() + input_begin_, input_end_ - input_begin_);
    std::variant<size_t, DecodeError> size = frame_size(available);
    if (auto* error = std::get_if<DecodeError>(&size)) {
      spdlog::warn("closing connection from {}: malformed frame: {}", peer_name_, error->reason);
      close("malformed frame: " + error->reason);
      return false;
    }
    size_t frame_bytes = std::get<size_t>(size);
    if (frame_bytes == 0) break;  // partial frame: wait for more bytes
    std::variant<WireMessage, DecodeError> decoded = decode_frame(available.first(frame_bytes));
    input_begin_ += frame_bytes;
    if (auto* error = std::get_if<DecodeError>(&decoded)) {
      spdlog::warn("closing connection from {}: malformed frame: {}", peer_name_, error->reason);
      close("malformed frame: " + error->reason);
      return false;
    }
    ++frames_received_;
    if (handler_ != nullptr) handler_->on_message(*this, std::move(std::get<WireMessage>(decoded)));
    if (fd_ < 0 || close_pending_) return false;
  }
  return true;
}

Listener::Listener(EventLoop& loop, const Address& address, AcceptCallback on_accept)
    : loop_(loop), on_accept_(std::move(on_accept)) {
  fd_ = listen_tcp(address, kListenBacklog);
  port_ = local_port(fd_);
  loop_.add_fd(fd_, EPOLLIN, this);
}

Listener::~Listener() {
  loop_.cancel(resume_timer_);
  loop_.remove_fd(fd_);
  ::close(fd_);
}

void Listener::on_io(uint32_t /*epoll_events*/) {
  for (;;) {
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    int fd =
        accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      on_accept_(fd, describe_peer(peer));
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      spdlog::error("accept: {}; not accepting for {} ms", std::strerror(errno),
                    kAcceptPauseNs / 1'000'000);
      loop_.remove_fd(fd_);
      resume_timer_ = loop_.schedule(kAcceptPauseNs, [this] {
        resume_timer_ = 0;
        loop_.add_fd(fd_, EPOLLIN, this);
      });
      return;
    }
    spdlog::error("accept: {}", std::strerror(errno));
    return;
  }
}

}  // namespace lockstep::net
