// The simulator's PRNG must give the same numbers everywhere (a seed is a bug report), so it is
// checked against the reference outputs of xoshiro256** and splitmix64, and its helpers against
// their contracts.
#include "sim/random.h"

#include <gtest/gtest.h>

#include <array>

namespace lockstep::sim {
namespace {

TEST(RandomTest, XoshiroMatchesTheReferenceImplementation) {
  // Outputs of Blackman and Vigna's xoshiro256starstar.c from the state {1, 2, 3, 4}.
  Random random = Random::from_state({1, 2, 3, 4});
  EXPECT_EQ(random.next_u64(), 11520ULL);
  EXPECT_EQ(random.next_u64(), 0ULL);
  EXPECT_EQ(random.next_u64(), 1509978240ULL);
  EXPECT_EQ(random.next_u64(), 1215971899390074240ULL);
  EXPECT_EQ(random.next_u64(), 1216172134540287360ULL);
}

TEST(RandomTest, SplitmixMatchesTheReferenceImplementation) {
  uint64_t state = 0;
  EXPECT_EQ(splitmix64(state), 16294208416658607535ULL);
  EXPECT_EQ(splitmix64(state), 7960286522194355700ULL);
  EXPECT_EQ(splitmix64(state), 487617019471545679ULL);
}

TEST(RandomTest, SameSeedSameSequenceDifferentSeedDifferentSequence) {
  Random a(42);
  Random b(42);
  Random c(43);
  int differences = 0;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    differences += x != c.next_u64();
  }
  EXPECT_GT(differences, 990);
}

TEST(RandomTest, BelowStaysInRangeAndReachesEveryValue) {
  Random random(7);
  std::array<int, 7> seen{};
  for (int i = 0; i < 7000; ++i) {
    const uint64_t value = random.below(7);
    ASSERT_LT(value, 7u);
    ++seen[value];
  }
  // 1000 expected per value; 800 is more than six standard deviations below.
  for (int count : seen)
    EXPECT_GT(count, 800);
  EXPECT_EQ(random.below(1), 0u);
}

TEST(RandomTest, BetweenIncludesBothEnds) {
  Random random(9);
  bool low = false;
  bool high = false;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t value = random.between(10, 13);
    ASSERT_GE(value, 10u);
    ASSERT_LE(value, 13u);
    low |= value == 10;
    high |= value == 13;
  }
  EXPECT_TRUE(low);
  EXPECT_TRUE(high);
  EXPECT_EQ(random.between(5, 5), 5u);
}

TEST(RandomTest, ChanceFollowsItsProbability) {
  Random random(11);
  int hits = 0;
  for (int i = 0; i < 100'000; ++i)
    hits += random.chance(250'000);
  EXPECT_GT(hits, 24'000);
  EXPECT_LT(hits, 26'000);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_FALSE(random.chance(0));
    EXPECT_TRUE(random.chance(1'000'000));
  }
}

TEST(RandomTest, LongTailedRespectsItsCapAndHasATail) {
  Random random(13);
  uint64_t above_base = 0;
  for (int i = 0; i < 100'000; ++i) {
    const uint64_t value = random.long_tailed(100, 200, 100'000, 10'000);
    ASSERT_GE(value, 100u);
    ASSERT_LE(value, 10'000u);
    above_base += value > 200;
  }
  // One doubling happens about 10% of the time.
  EXPECT_GT(above_base, 9'000u);
  EXPECT_LT(above_base, 11'000u);
}

TEST(RandomTest, ForkedStreamsAreIndependentOfLaterDraws) {
  // A child stream depends only on the parent's state when forked, so draws added to the parent
  // afterwards do not change what the child produces.
  Random parent_a(5);
  Random parent_b(5);
  Random child_a = parent_a.fork();
  Random child_b = parent_b.fork();
  parent_b.next_u64();
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(child_a.next_u64(), child_b.next_u64());
}

}  // namespace
}  // namespace lockstep::sim
