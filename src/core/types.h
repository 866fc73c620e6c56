// Strong types for protocol quantities (STYLE habit 7): a ReplicaId cannot be passed where a
// Sequence is expected, and every quantity names its unit.
#pragma once

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
