// Byzantine membership changes in the simulator (docs/DESIGN.md §11.9): spare slots listed after
// the 2t+1 first members are added by a change the administrator signs, then an honest first
// member is removed by another, under the usual faults (faulty replicas and clients, restarts,
// lossy links). Drawn seeds must change the membership and pass every check; the choice is off
// unless asked for (the seed suites keep their runs) and never made on durable runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "sim/runner.h"
#include "sim/simulator.h"

namespace lockstep::sim {
namespace {

uint64_t count_of(const RunResult& result, FaultKind kind) {
  return result.faults[static_cast<size_t>(kind)];
}

SimOptions membership_options(uint64_t seed) {
  SimOptions options;
  options.mode = Mode::kByzantine;
  options.seed = seed;
  options.reconfiguration = true;
  options.durable = false;
  return options;
}

TEST(ByzantineReconfigurationSimTest, DrawnSeedsAddSparesRemoveAMemberAndPass) {
  const uint64_t seeds = std::max<uint64_t>(10, scale_count(30, seeds_scale_from_environment()));
  uint64_t additions = 0;
  uint64_t removals = 0;
  uint64_t loads = 0;
  uint64_t runs_with_two_spares = 0;
  BatchResult batch =
      run_seeds(membership_options(1), SeedRange{1, seeds}, 1, [&](const RunResult& r) {
        EXPECT_TRUE(r.profile.reconfiguration) << summarize(r);
        const uint32_t first_members = 2 * r.profile.t + 1;
        EXPECT_EQ(r.profile.spare, static_cast<int32_t>(first_members));
        EXPECT_GE(r.profile.replicas, first_members + 1);
        EXPECT_LE(r.profile.replicas, first_members + 2);
        runs_with_two_spares += r.profile.replicas == first_members + 2 ? 1 : 0;
        additions += count_of(r, FaultKind::kSpareJoin);
        removals += count_of(r, FaultKind::kOperatorRemove);
        loads += r.state_transfers_loaded;
      });
  EXPECT_EQ(batch.passed, seeds);
  for (const RunResult& failure : batch.failures)
    ADD_FAILURE() << summarize(failure);
  // Every seed signs the addition (a run whose replicas were all up in time); most remove.
  EXPECT_GT(additions, seeds / 2) << "the administrator should add the spares on most seeds";
  EXPECT_GT(removals, 0u) << "some runs should remove a member";
  EXPECT_GE(loads, additions) << "every added spare loads a vouched state";
  EXPECT_GT(runs_with_two_spares, 0u) << "some runs should add two spares (t grows)";
}

TEST(ByzantineReconfigurationSimTest, OffUnlessAskedForAndNeverOnDurableRuns) {
  SimOptions options = membership_options(5);
  options.reconfiguration.reset();  // the library's default: not drawn
  options.ops = 60;
  RunResult r = run_simulation(options);
  EXPECT_FALSE(r.profile.reconfiguration) << summarize(r);
  EXPECT_EQ(r.profile.replicas, 2 * r.profile.t + 1);

  options = membership_options(5);
  options.durable = true;
  options.ops = 60;
  r = run_simulation(options);
  EXPECT_TRUE(r.profile.durable);
  EXPECT_FALSE(r.profile.reconfiguration) << "not built together with durability";
}

TEST(ByzantineReconfigurationSimTest, ReplayCommandsCarryTheChoice) {
  SimOptions options = membership_options(9);
  EXPECT_NE(replay_command(options, 9).find("--reconfiguration yes"), std::string::npos);
  options.reconfiguration.reset();
  EXPECT_NE(replay_command(options, 9).find("--reconfiguration no"), std::string::npos)
      << "the tool draws by default, the library does not: the replay must say so";
}

}  // namespace
}  // namespace lockstep::sim
