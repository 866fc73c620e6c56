#include "client/blocking_exchange.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <span>

#include "core/codec.h"
#include "net/event_loop.h"

namespace lockstep {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// Waits for `events` on `fd` until `deadline_ns`; false on timeout or error.
bool wait_for(int fd, short events, uint64_t deadline_ns) {
  for (;;) {
    const uint64_t now = net::monotonic_now_ns();
    if (now >= deadline_ns) return false;
    pollfd p{fd, events, 0};
    const int timeout_ms = static_cast<int>((deadline_ns - now) / 1'000'000 + 1);
    const int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

// A nonblocking connect, finished (or not) by the deadline.
bool connect_by(int fd, const net::ResolvedAddress& resolved, uint64_t deadline_ns,
                const std::string& where, std::string& error) {
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&resolved.storage), resolved.length) != 0 &&
      errno != EINPROGRESS) {
    error = where + ": connect: " + std::strerror(errno);
    return false;
  }
  if (!wait_for(fd, POLLOUT, deadline_ns)) {
    error = where + ": connect timed out";
    return false;
  }
  int socket_error = 0;
  socklen_t length = sizeof socket_error;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &socket_error, &length);
  if (socket_error != 0) {
    error = where + ": connect: " + std::strerror(socket_error);
    return false;
  }
  return true;
}

bool send_all(int fd, const Bytes& out, uint64_t deadline_ns, const std::string& where,
              std::string& error) {
  size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_for(fd, POLLOUT, deadline_ns)) {
        error = where + ": send timed out";
        return false;
      }
    } else {
      error = where + ": send: " + std::strerror(errno);
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<WireMessage> blocking_exchange(
    const net::Address& address, uint64_t nonce, const WireMessage& request,
    const std::function<bool(const WireMessage&)>& is_reply, uint64_t timeout_ms,
    std::string_view reply_name, std::string& error) {
  const uint64_t deadline_ns = net::monotonic_now_ns() + timeout_ms * 1'000'000;
  const std::string where = net::format_address(address);
  std::optional<net::ResolvedAddress> resolved = net::resolve(address, error);
  if (!resolved) return std::nullopt;
  Fd fd(::socket(resolved->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return std::nullopt;
  }
  if (!connect_by(fd.get(), *resolved, deadline_ns, where, error)) return std::nullopt;
  Bytes out;
  encode_frame(Hello{PeerRole::kClient, nonce, nonce, 0}, out);
  encode_frame(request, out);
  if (!send_all(fd.get(), out, deadline_ns, where, error)) return std::nullopt;
  Bytes in;
  for (;;) {
    for (;;) {
      auto size = frame_size(in);
      if (auto* bad = std::get_if<DecodeError>(&size)) {
        error = where + ": bad frame: " + bad->reason;
        return std::nullopt;
      }
      const size_t frame_bytes = std::get<size_t>(size);
      if (frame_bytes == 0) break;
      auto decoded = decode_frame(std::span<const uint8_t>(in.data(), frame_bytes));
      in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(frame_bytes));
      if (auto* message = std::get_if<WireMessage>(&decoded); message && is_reply(*message)) {
        return std::move(*message);
      }
    }
    if (!wait_for(fd.get(), POLLIN, deadline_ns)) {
      error = where + ": no " + std::string(reply_name) + " within " + std::to_string(timeout_ms) +
              " ms";
      return std::nullopt;
    }
    uint8_t buffer[4096];
    const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
    if (n == 0) {
      error = where + ": connection closed before the " + std::string(reply_name);
      return std::nullopt;
    }
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      error = where + ": recv: " + std::strerror(errno);
      return std::nullopt;
    }
    in.insert(in.end(), buffer, buffer + n);
  }
}

}  // namespace lockstep
