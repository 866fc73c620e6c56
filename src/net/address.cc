#include "net/address.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>

namespace lockstep::net {

std::optional<Address> parse_address(std::string_view text) {
  std::string_view host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    // An unbracketed host with a colon is an IPv6 literal missing its brackets: ambiguous.
    if (host.find(':') != std::string_view::npos) return std::nullopt;
  }
  if (host.empty() || port_text.empty()) return std::nullopt;
  for (char c : host) {
    if (c <= ' ' || c == '/' || c == '[' || c == ']') return std::nullopt;
  }
  uint32_t port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535) {
    return std::nullopt;
  }
  return Address{std::string(host), static_cast<uint16_t>(port)};
}

std::string format_address(const Address& address) {
  if (address.host.find(':') != std::string::npos) {
    return "[" + address.host + "]:" + std::to_string(address.port);
  }
  return address.host + ":" + std::to_string(address.port);
}

std::optional<ResolvedAddress> resolve(const Address& address, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* results = nullptr;
  std::string port = std::to_string(address.port);
  int rc = getaddrinfo(address.host.c_str(), port.c_str(), &hints, &results);
  if (rc != 0 || results == nullptr) {
    error = "cannot resolve " + format_address(address) + ": " + gai_strerror(rc);
    return std::nullopt;
  }
  ResolvedAddress resolved;
  std::memcpy(&resolved.storage, results->ai_addr, results->ai_addrlen);
  resolved.length = results->ai_addrlen;
  resolved.family = results->ai_family;
  freeaddrinfo(results);
  return resolved;
}

void set_tcp_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int listen_tcp(const Address& address, int backlog) {
  std::string error;
  std::optional<ResolvedAddress> resolved = resolve(address, error);
  if (!resolved) throw std::runtime_error(error);
  int fd = socket(resolved->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&resolved->storage), resolved->length) != 0 ||
      listen(fd, backlog) != 0) {
    int saved = errno;
    ::close(fd);
    throw std::runtime_error("cannot listen on " + format_address(address) + ": " +
                             std::strerror(saved));
  }
  return fd;
}

uint16_t local_port(int fd) {
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) != 0) return 0;
  if (storage.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  }
  if (storage.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  return 0;
}

}  // namespace lockstep::net
