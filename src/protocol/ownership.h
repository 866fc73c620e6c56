// Which replica orders a client's requests: rendezvous (highest random weight) hashing over the
// members, so removing a replica moves only that replica's clients. Shared by every mode.
#pragma once

#include <cstdint>
#include <vector>

#include "core/assert.h"
#include "core/types.h"

namespace lockstep {

// The splitmix64 finalizer: client ids may be sequential in tests, so mix the bits first.
constexpr uint64_t mix_bits(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

inline ReplicaId rendezvous_owner(ClientId client, const std::vector<ReplicaId>& members) {
  LOCKSTEP_ASSERT(!members.empty(), "an owner needs a member");
  ReplicaId owner = members.front();
  uint64_t best = 0;
  for (ReplicaId r : members) {
    const uint64_t score = mix_bits(client.value ^ (0x9e3779b97f4a7c15ULL * (r.value + 1ULL)));
    if (r == members.front() || score > best) {
      best = score;
      owner = r;
    }
  }
  return owner;
}

}  // namespace lockstep
