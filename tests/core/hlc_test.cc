#include "core/hlc.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace lockstep {
namespace {

constexpr uint64_t kCounterMax = (uint64_t{1} << HybridClock::kCounterBits) - 1;

TEST(HybridClock, StrictlyMonotonicEvenWhenPhysicalTimeGoesBack) {
  HybridClock clock;
  uint64_t last = 0;
  // Wall time jumps forward, stalls and steps back (an NTP correction); the clock only rises.
  for (uint64_t wall_us : {1000u, 1000u, 2000u, 1500u, 0u, 2000u, 2001u, 10u}) {
    const uint64_t now = clock.tick(wall_us);
    EXPECT_GT(now, last) << "wall_us " << wall_us;
    EXPECT_EQ(clock.value(), now);
    last = now;
  }
}

TEST(HybridClock, TracksPhysicalTime) {
  HybridClock clock;
  EXPECT_EQ(clock.tick(5000), HybridClock::from_wall_us(5000));
  EXPECT_EQ(clock.tick(5000), HybridClock::from_wall_us(5000) + 1);
  // Once physical time passes the logical part, the clock returns to it with a zero counter.
  EXPECT_EQ(clock.tick(5001), HybridClock::from_wall_us(5001));
  EXPECT_EQ(HybridClock::wall_us_of(clock.tick(9'000'000)), 9'000'000u);
  EXPECT_EQ(HybridClock::wall_us_of(HybridClock::from_wall_us(123456)), 123456u);
}

TEST(HybridClock, ObserveExceedsWhatWasReceived) {
  HybridClock clock;
  clock.tick(100);
  // A message from a replica whose clock runs far ahead (LC2).
  const uint64_t received = HybridClock::from_wall_us(700) + 42;
  const uint64_t after = clock.observe(received, 100);
  EXPECT_GT(after, received);
  EXPECT_GT(clock.tick(100), after);
  // A message from the past still advances the clock by one event.
  const uint64_t before = clock.value();
  EXPECT_EQ(clock.observe(HybridClock::from_wall_us(1), 100), before + 1);
  // And physical time still wins when it is ahead of both.
  EXPECT_EQ(clock.observe(received, 800), HybridClock::from_wall_us(800));
}

TEST(HybridClock, CounterOverflowCarriesIntoPhysicalPart) {
  HybridClock clock;
  const uint64_t wall_us = 77;
  uint64_t last = clock.tick(wall_us);
  for (uint64_t i = 0; i < kCounterMax; ++i) {
    const uint64_t now = clock.tick(wall_us);
    ASSERT_EQ(now, last + 1);
    last = now;
  }
  EXPECT_EQ(last, HybridClock::from_wall_us(wall_us) + kCounterMax);
  // One more event in the same microsecond: the counter is full and carries.
  EXPECT_EQ(clock.tick(wall_us), HybridClock::from_wall_us(wall_us + 1));
  // Real time catching up with the carried clock does not move it back or repeat a value.
  EXPECT_EQ(clock.tick(wall_us + 1), HybridClock::from_wall_us(wall_us + 1) + 1);
}

}  // namespace
}  // namespace lockstep
