// Strong types for protocol quantities (STYLE habit 7): a ReplicaId cannot be passed where a
// Sequence is expected, and every quantity names its unit.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace lockstep {

template <typename Tag, typename Rep>
struct StrongId {
  Rep value{};
  constexpr StrongId() = default;
  constexpr explicit StrongId(Rep v) : value(v) {}
  constexpr auto operator<=>(const StrongId&) const = default;
};

struct ReplicaIdTag {};
struct ClientIdTag {};
struct SequenceTag {};
struct ViewTag {};

// Index of a replica in the cluster configuration, 0-based.
using ReplicaId = StrongId<ReplicaIdTag, uint32_t>;
// A client session's identity; chosen at random by the client library (64 bits make collisions
// negligible), or from a key in byzantine mode.
using ClientId = StrongId<ClientIdTag, uint64_t>;
// A client's request number within its session, starting at 1, one per request.
using Sequence = StrongId<SequenceTag, uint64_t>;
// Configuration (membership) epoch of the failstop protocol, starting at 0.
using ViewNumber = StrongId<ViewTag, uint64_t>;

using Bytes = std::vector<uint8_t>;

// Byzantine mode: an Ed25519 signature, and a 32-byte BLAKE2b digest (crypto/crypto.h makes and
// checks both; the core layer only carries them).
using Signature = std::array<uint8_t, 64>;
using Digest = std::array<uint8_t, 32>;

// Byzantine mode: a client session's id is bound to the key that signs its requests. The high 32
// bits name the client principal (a key listed in the cluster file); the low 32 bits number the
// sessions one principal runs, so one key serves many sessions.
inline constexpr uint32_t principal_of(ClientId client) {
  return static_cast<uint32_t>(client.value >> 32);
}
inline constexpr ClientId client_id_of(uint32_t principal, uint32_t session) {
  return ClientId{(uint64_t{principal} << 32) | session};
}

inline Bytes to_bytes(std::string_view s) {
  return Bytes(s.begin(), s.end());
}
inline std::string to_string(const Bytes& b) {
  return std::string(b.begin(), b.end());
}

// A point in the total order (Schneider §3.2.1): a hybrid logical clock value with the id of the
// replica that issued it as tiebreak, so no two replicas ever issue the same timestamp.
struct Timestamp {
  uint64_t clock = 0;  // see core/hlc.h for the layout
  ReplicaId source{};
  constexpr auto operator<=>(const Timestamp&) const = default;
};

// Time as the environment reports it to a protocol core. The core never reads a clock: the
// runtime or the simulator passes these in with every input.
struct Now {
  uint64_t monotonic_ns = 0;  // for timeouts; never goes backwards
  uint64_t wall_us = 0;       // physical part of the hybrid logical clock; may be skewed
};

}  // namespace lockstep

template <typename Tag, typename Rep>
struct std::hash<lockstep::StrongId<Tag, Rep>> {
  size_t operator()(const lockstep::StrongId<Tag, Rep>& id) const noexcept {
    return std::hash<Rep>{}(id.value);
  }
};
