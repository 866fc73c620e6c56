// Failstop reconfiguration in the simulator (SimOptions::reconfiguration): operator removals,
// rejoins by state transfer, wiped members rejoining and a spare slot joining. These tests pin
// down that the schedule really draws each kind, that joiners load states and serve again, and
// that such runs pass every checker (the joiner's continuation of the agreed order, equal
// digests, no acknowledged write lost, linearizability, liveness) and replay exactly.
#include <gtest/gtest.h>

#include <cstdio>

#include "sim/runner.h"
#include "sim/simulator.h"

namespace lockstep::sim {
namespace {

uint64_t count_of(const RunResult& result, FaultKind kind) {
  return result.faults[static_cast<size_t>(kind)];
}

constexpr FaultKind kReconfigurationKinds[] = {FaultKind::kOperatorRemove, FaultKind::kRejoin,
                                               FaultKind::kWipeRejoin, FaultKind::kSpareJoin};

void expect_every_kind_and_pass(const SimOptions& options, SeedRange seeds) {
  FaultCounts totals{};
  uint64_t loaded = 0;
  uint64_t spare_runs = 0;
  BatchResult batch = run_seeds(options, seeds, 2, [&](const RunResult& result) {
    EXPECT_TRUE(result.profile.reconfiguration) << summarize(result);
    for (size_t k = 0; k < totals.size(); ++k)
      totals[k] += result.faults[k];
    loaded += result.state_transfers_loaded;
    if (result.profile.spare >= 0) {
      ++spare_runs;
      EXPECT_EQ(result.profile.replicas, result.profile.t + 2) << summarize(result);
    } else {
      EXPECT_EQ(count_of(result, FaultKind::kSpareJoin), 0u) << summarize(result);
    }
  });
  EXPECT_TRUE(batch.failures.empty()) << summarize(batch.failures.front());
  for (FaultKind kind : kReconfigurationKinds) {
    EXPECT_GT(totals[static_cast<size_t>(kind)], 0u) << fault_kind_name(kind);
  }
  EXPECT_GT(spare_runs, 0u);
  // Every wipe-rejoin, rejoin and spare join ends with a loaded state unless the run ended first;
  // at least most of them must have.
  const uint64_t joins = totals[static_cast<size_t>(FaultKind::kRejoin)] +
                         totals[static_cast<size_t>(FaultKind::kWipeRejoin)] +
                         totals[static_cast<size_t>(FaultKind::kSpareJoin)];
  EXPECT_GE(loaded * 2, joins) << loaded << " states loaded for " << joins << " joins";
  std::printf("%llu joins, %llu state transfers loaded, %llu runs with a spare\n",
              static_cast<unsigned long long>(joins), static_cast<unsigned long long>(loaded),
              static_cast<unsigned long long>(spare_runs));
}

TEST(ReconfigurationTest, EveryKindOccursAndRunsPass) {
  SimOptions options;
  options.reconfiguration = true;
  options.durable = false;
  expect_every_kind_and_pass(options, SeedRange{20, 80});
}

TEST(ReconfigurationTest, DurableRunsRejoinWithWipedAndOldDisks) {
  SimOptions options;
  options.reconfiguration = true;
  options.durable = true;
  expect_every_kind_and_pass(options, SeedRange{20, 60});
}

TEST(ReconfigurationTest, NoReconfigurationMeansNoneOfTheKinds) {
  SimOptions options;
  options.reconfiguration = false;
  BatchResult batch = run_seeds(options, SeedRange{1, 20}, 2, [&](const RunResult& result) {
    EXPECT_FALSE(result.profile.reconfiguration);
    EXPECT_EQ(result.profile.spare, -1);
    EXPECT_EQ(result.state_transfers_loaded, 0u);
    for (FaultKind kind : kReconfigurationKinds)
      EXPECT_EQ(count_of(result, kind), 0u);
  });
  EXPECT_TRUE(batch.failures.empty()) << summarize(batch.failures.front());
}

TEST(ReconfigurationTest, ASeedReplaysExactly) {
  SimOptions options;
  options.reconfiguration = true;
  options.seed = 42;
  const RunResult first = run_simulation(options);
  const RunResult second = run_simulation(options);
  EXPECT_EQ(first.event_log_hash, second.event_log_hash);
  EXPECT_EQ(first.faults, second.faults);
  EXPECT_EQ(first.state_transfers_loaded, second.state_transfers_loaded);
}

}  // namespace
}  // namespace lockstep::sim
