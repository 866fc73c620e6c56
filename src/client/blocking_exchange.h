// One blocking request/reply exchange with a replica, as a client: connect, say Hello, send one
// message, read frames until the awaited reply. For one-shot operator commands (`lockstep status`,
// `lockstep admin`) and tests, where a whole event loop (client/client.h) would be too much.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "core/messages.h"
#include "net/address.h"

namespace lockstep {

// Connects to `address` (nonblocking, with the deadline `timeout_ms` from now for everything),
// sends Hello{kClient, nonce} then `request`, and returns the first frame that `is_reply` accepts;
// other frames (the replica's Hello) are skipped. Returns nullopt and sets `error`, prefixed with
// the address, on failure: unresolvable, refused, timed out, closed, or a bad frame. `reply_name`
// names the awaited reply in those errors ("no <reply_name> within N ms").
std::optional<WireMessage> blocking_exchange(
    const net::Address& address, uint64_t nonce, const WireMessage& request,
    const std::function<bool(const WireMessage&)>& is_reply, uint64_t timeout_ms,
    std::string_view reply_name, std::string& error);

// The usual case: the reply is the `Reply` alternative that carries the request's `nonce`.
template <typename Reply>
std::optional<Reply> blocking_exchange_for(const net::Address& address, uint64_t nonce,
                                           const WireMessage& request, uint64_t timeout_ms,
                                           std::string_view reply_name, std::string& error) {
  std::optional<WireMessage> reply = blocking_exchange(
      address, nonce, request,
      [nonce](const WireMessage& message) {
        const Reply* candidate = std::get_if<Reply>(&message);
        return candidate != nullptr && candidate->nonce == nonce;
      },
      timeout_ms, reply_name, error);
  if (!reply) return std::nullopt;
  return std::get<Reply>(std::move(*reply));
}

}  // namespace lockstep
