// The simulator's only source of randomness: xoshiro256** (Blackman and Vigna 2018) seeded
// through splitmix64. It is written out here rather than taken from <random> because the standard
// distributions are implementation-defined: a seed must replay the same run with any standard
// library, and with integer-only arithmetic it does (no libm call decides anything).
#pragma once

#include <array>
#include <cstdint>

#include "core/assert.h"

namespace lockstep::sim {

// 128-bit products for Lemire's method; __extension__ keeps -Wpedantic quiet about the GCC type.
__extension__ using Uint128 = unsigned __int128;

// splitmix64: a good 64-bit mixer. Expands one seed into xoshiro's 256-bit state and derives
// independent sub-seeds (one per purpose) from one run seed.
constexpr uint64_t splitmix64(uint64_t& state) {
  state += 0x9e3779b97f4a7c15ULL;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Random {
 public:
  explicit Random(uint64_t seed) {
    uint64_t s = seed;
    for (auto& word : state_)
      word = splitmix64(s);
  }

  // Exactly this state (not all zero), for known-answer tests against the reference code.
  static Random from_state(const std::array<uint64_t, 4>& state) {
    LOCKSTEP_ASSERT(state[0] | state[1] | state[2] | state[3], "xoshiro's state must not be zero");
    Random random(0);
    random.state_ = state;
    return random;
  }

  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, bound). Lemire's multiply-and-reject: unbiased, and the rejection loop runs
  // more than once with probability below bound / 2^64.
  uint64_t below(uint64_t bound) {
    LOCKSTEP_ASSERT(bound > 0, "below(0) has no value to return");
    Uint128 product = static_cast<Uint128>(next_u64()) * bound;
    auto low = static_cast<uint64_t>(product);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        product = static_cast<Uint128>(next_u64()) * bound;
        low = static_cast<uint64_t>(product);
      }
    }
    return static_cast<uint64_t>(product >> 64);
  }

  // Uniform in [low, high], both included.
  uint64_t between(uint64_t low, uint64_t high) {
    LOCKSTEP_ASSERT(low <= high, "empty range");
    if (high - low == UINT64_MAX) return next_u64();
    return low + below(high - low + 1);
  }

  // True with probability `per_million` / 1'000'000. Probabilities are integers so that a
  // swarm profile prints exactly and replays without floating-point rounding questions.
  bool chance(uint32_t per_million) {
    if (per_million == 0) return false;
    return below(1'000'000) < per_million;
  }

  // A long-tailed duration: uniform in [low, high], then doubled while a coin with
  // `tail_per_million` comes up, and capped at `cap`. Each doubling is rarer, so most values are
  // near the base and a few are orders of magnitude larger, like real network delays; the cap
  // keeps the model within the bounds the protocol is entitled to assume.
  uint64_t long_tailed(uint64_t low, uint64_t high, uint32_t tail_per_million, uint64_t cap) {
    uint64_t value = between(low, high);
    while (value < cap && chance(tail_per_million))
      value *= 2;
    return value < cap ? value : cap;
  }

  // A child generator for one purpose (the fault schedule, one client's workload...), so that
  // adding a draw in one place does not shift every other stream of the same seed.
  Random fork() { return Random(next_u64()); }

 private:
  static constexpr uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  std::array<uint64_t, 4> state_{};
};

}  // namespace lockstep::sim
