// Hybrid logical clock (Kulkarni et al. 2014) packed into 64 bits: the upper 48 bits hold
// microseconds of physical time, the lower 16 a logical counter. Comparing packed values compares
// (physical, counter) lexicographically, and a counter overflow carries into the physical part,
// which keeps the clock monotonic (it then runs slightly ahead of real time, as Lamport allows).
//
// Every event takes `max(previous + 1, received + 1, physical << 16)`: Lamport's LC1/LC2 rules
// (Schneider §3.2.1) with a floor at physical time, so timestamps track real time and stability
// comes about one round trip after a request is stamped.
#pragma once

#include <algorithm>
#include <cstdint>

namespace lockstep {

class HybridClock {
 public:
  static constexpr int kCounterBits = 16;

  static constexpr uint64_t from_wall_us(uint64_t wall_us) { return wall_us << kCounterBits; }
  static constexpr uint64_t wall_us_of(uint64_t clock) { return clock >> kCounterBits; }

  // A local event (stamping a request, sending a heartbeat): returns the new clock value.
  uint64_t tick(uint64_t wall_us) {
    value_ = std::max(value_ + 1, from_wall_us(wall_us));
    return value_;
  }
  // A receive of a message carrying `received` (LC2): afterwards the clock exceeds it.
  uint64_t observe(uint64_t received, uint64_t wall_us) {
    value_ = std::max({value_ + 1, received + 1, from_wall_us(wall_us)});
    return value_;
  }
  uint64_t value() const { return value_; }

 private:
  uint64_t value_ = 0;
};

}  // namespace lockstep
