// Durable failstop runs (SimOptions::durable): replicas keep a log and checkpoints on a simulated
// disk, crash and restart from it, alone or all at once. These tests pin down what such runs must
// show beyond passing the checkers: a short restart is not a membership change, a whole-cluster
// crash loses nothing, and the same seed replays exactly.
#include <gtest/gtest.h>

#include <cstdio>

#include "sim/runner.h"
#include "sim/simulator.h"

namespace lockstep::sim {
namespace {

uint64_t count_of(const RunResult& result, FaultKind kind) {
  return result.faults[static_cast<size_t>(kind)];
}

// Replica faults that may change the membership (a removal is a new view).
bool only_short_restarts(const RunResult& result) {
  for (FaultKind kind :
       {FaultKind::kReplicaCrash, FaultKind::kReplicaLongPause, FaultKind::kReplicaLongRestart,
        FaultKind::kDiskCorruption, FaultKind::kClusterCrash, FaultKind::kClockJump}) {
    if (count_of(result, kind) > 0) return false;
  }
  return count_of(result, FaultKind::kReplicaRestart) > 0;
}

TEST(DurableTest, AShortRestartKeepsTheReplicaInViewZero) {
  // Over a range of seeds, every run whose only replica faults are restarts within the failure
  // timeout (and short pauses) must end in view 0: the restarted replica came back as the same
  // member, nobody was removed.
  SimOptions options;
  options.durable = true;
  options.clock_beyond_bounds = false;
  uint64_t matching = 0;
  BatchResult batch = run_seeds(options, SeedRange{1, 150}, 2, [&](const RunResult& result) {
    if (!only_short_restarts(result)) return;
    ++matching;
    EXPECT_TRUE(result.passed) << summarize(result);
    EXPECT_EQ(result.final_view, 0u)
        << "a short restart changed the membership: " << summarize(result);
  });
  EXPECT_TRUE(batch.failures.empty()) << summarize(batch.failures.front());
  EXPECT_GE(matching, 5u) << "too few runs with only short restarts to say anything";
  std::printf("%llu runs with only short restarts, all in view 0\n",
              static_cast<unsigned long long>(matching));
}

TEST(DurableTest, AWholeClusterCrashLosesNoAcknowledgedWrite) {
  // Every run with a whole-cluster crash passes every checker: among them agreement as a
  // continuation (each restarted replica re-executes the agreed sequence from its checkpoint),
  // "no acknowledged write lost" against every live replica's executions, and linearizability of
  // the whole history across the crash.
  SimOptions options;
  options.durable = true;
  uint64_t crashes = 0;
  uint64_t runs = 0;
  BatchResult batch = run_seeds(options, SeedRange{1, 150}, 2, [&](const RunResult& result) {
    if (count_of(result, FaultKind::kClusterCrash) == 0) return;
    ++runs;
    crashes += count_of(result, FaultKind::kClusterCrash);
    EXPECT_TRUE(result.passed) << summarize(result);
    EXPECT_GE(result.ops_completed, 400u) << summarize(result);
  });
  EXPECT_TRUE(batch.failures.empty()) << summarize(batch.failures.front());
  EXPECT_GE(runs, 10u);
  std::printf("%llu runs with %llu whole-cluster crashes, all passed\n",
              static_cast<unsigned long long>(runs), static_cast<unsigned long long>(crashes));
}

TEST(DurableTest, DiskFaultsHappenAndRecoveryEitherRepairsOrRefuses) {
  SimOptions options;
  options.durable = true;
  FaultCounts totals{};
  BatchResult batch = run_seeds(options, SeedRange{1, 60}, 2, [&](const RunResult& result) {
    for (size_t k = 0; k < totals.size(); ++k)
      totals[k] += result.faults[k];
  });
  EXPECT_TRUE(batch.failures.empty()) << summarize(batch.failures.front());
  auto total = [&](FaultKind kind) { return totals[static_cast<size_t>(kind)]; };
  EXPECT_GT(total(FaultKind::kReplicaRestart), 0u);
  EXPECT_GT(total(FaultKind::kReplicaLongRestart), 0u);
  EXPECT_GT(total(FaultKind::kTornWrite), 0u);
  EXPECT_GT(total(FaultKind::kDiskCorruption), 0u);
  EXPECT_GT(total(FaultKind::kRecoveryRefused), 0u);
  // Some damage is repaired (a bad checkpoint while the log still starts at its first record).
  EXPECT_LT(total(FaultKind::kRecoveryRefused), total(FaultKind::kDiskCorruption));
}

TEST(DurableTest, TheSameSeedReplaysExactly) {
  for (uint64_t seed : {2, 6, 47, 80}) {
    SimOptions options;
    options.durable = true;
    options.seed = seed;
    const RunResult first = run_simulation(options);
    const RunResult second = run_simulation(options);
    EXPECT_TRUE(first.passed) << summarize(first);
    EXPECT_EQ(first.event_log_hash, second.event_log_hash) << "seed " << seed;
    EXPECT_EQ(first.events, second.events);
    options.trace = true;
    EXPECT_EQ(run_simulation(options).event_log_hash, first.event_log_hash)
        << "tracing changed durable seed " << seed;
  }
}

TEST(DurableTest, NonDurableRunsDrawExactlyAsBefore) {
  // Durability is drawn last from the profile's stream: a seed that draws a non-durable run is
  // the same run with the flag forced off.
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    SimOptions drawn;
    drawn.seed = seed;
    const RunResult result = run_simulation(drawn);
    if (result.profile.durable) continue;
    SimOptions off = drawn;
    off.durable = false;
    EXPECT_EQ(run_simulation(off).event_log_hash, result.event_log_hash) << "seed " << seed;
  }
}

}  // namespace
}  // namespace lockstep::sim
