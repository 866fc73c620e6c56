// Network addresses as written in configuration files ("host:port", "[v6-host]:port"), and the
// socket helpers the rest of the net layer shares.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lockstep::net {

struct Address {
  std::string host;  // a name, an IPv4 literal, or an IPv6 literal without brackets
  uint16_t port = 0;
  bool operator==(const Address&) const = default;
};

// Parses "host:port" (port 1..65535; an IPv6 host in brackets). Returns nullopt when malformed.
std::optional<Address> parse_address(std::string_view text);
// The inverse of parse_address.
std::string format_address(const Address& address);

// A resolved socket address (getaddrinfo; blocking, so call it at startup or on reconnect, not
// in the message path).
struct ResolvedAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family = AF_UNSPEC;
};
// Returns nullopt and sets `error` when the host cannot be resolved.
std::optional<ResolvedAddress> resolve(const Address& address, std::string& error);

// Nonblocking, close-on-exec TCP socket options applied to every connection: TCP_NODELAY,
// because the protocol sends small frames that must not wait for Nagle's delayed ACK.
void set_tcp_nodelay(int fd);

// Binds a listening socket (SO_REUSEADDR, nonblocking, close-on-exec). Throws std::runtime_error
// naming the address on failure.
int listen_tcp(const Address& address, int backlog);
// The port a bound socket got (for binds to port 0).
uint16_t local_port(int fd);

}  // namespace lockstep::net
