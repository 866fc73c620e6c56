// Byzantine restarts in the simulator (docs/DESIGN.md §11.7): honest replicas crash, come back
// without their state (`join`) and catch up from a checkpoint that t+1 replicas vouch for, while
// faulty replicas forge checkpoint votes and snapshots (forge_state). Drawn seeds must restart
// replicas, load checkpoints and pass; and the checker of what a joiner loads must fire when a
// joiner is fed a forged state (the planted load_forged_state).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>

#include "apps/kv/kv_machine.h"
#include "crypto/crypto.h"
#include "crypto/signing.h"
#include "protocol/byzantine/durability.h"
#include "sim/byzantine.h"
#include "sim/runner.h"
#include "sim/simulator.h"
#include "statemachine/service.h"

namespace lockstep::sim {
namespace {

uint64_t count_of(const RunResult& result, FaultKind kind) {
  return result.faults[static_cast<size_t>(kind)];
}

SimOptions restart_options(uint64_t seed) {
  SimOptions options;
  options.mode = Mode::kByzantine;
  options.seed = seed;
  options.restarts = true;
  // Catch-up as in docs/DESIGN.md §11.7 (durable runs vouch for positions differently and have
  // tests of their own: byzantine_durable_test.cc).
  options.durable = false;
  return options;
}

TEST(ByzantineRestartSimTest, DrawnSeedsRestartReplicasThatCatchUpAndPass) {
  const uint64_t seeds = std::max<uint64_t>(10, scale_count(30, seeds_scale_from_environment()));
  uint64_t restarts = 0;
  uint64_t loads = 0;
  uint64_t runs_with_several = 0;
  uint64_t runs_with_forgers = 0;
  uint64_t refused_with_forgers = 0;
  BatchResult batch =
      run_seeds(restart_options(1), SeedRange{1, seeds}, 1, [&](const RunResult& r) {
        EXPECT_TRUE(r.profile.restarts);
        EXPECT_GE(r.profile.checkpoint_interval_us, 50'000u) << summarize(r);
        const uint64_t count = count_of(r, FaultKind::kCatchUpRestart);
        restarts += count;
        loads += r.state_transfers_loaded;
        runs_with_several += count >= 2 ? 1 : 0;
        if (r.profile.behaviours.find("forge_state") != std::string::npos) {
          ++runs_with_forgers;
          refused_with_forgers += r.snapshots_refused;
        }
        // A restarted process loads once at most.
        EXPECT_LE(r.state_transfers_loaded, count) << summarize(r);
      });
  EXPECT_EQ(batch.passed, seeds);
  for (const RunResult& failure : batch.failures)
    ADD_FAILURE() << summarize(failure);
  EXPECT_GT(restarts, seeds / 2) << "restarts should be common on seeds drawn with them";
  EXPECT_GT(loads, restarts / 2) << "most restarted replicas should load a checkpoint";
  EXPECT_GT(runs_with_several, 0u) << "some runs restart several times";
  EXPECT_GT(runs_with_forgers, 0u) << "forge_state should be drawn on some of these seeds";
  // The forgers' states reach joiners, and the core refuses them (none was loaded: they pass).
  EXPECT_GT(refused_with_forgers, 0u) << "no forged state was ever refused";
}

TEST(ByzantineRestartSimTest, RestartsAreOffWhenAskedAndTheSeedStaysDeterministic) {
  SimOptions off = restart_options(3);
  off.restarts = false;
  const RunResult without = run_simulation(off);
  EXPECT_TRUE(without.passed) << summarize(without);
  EXPECT_EQ(count_of(without, FaultKind::kCatchUpRestart), 0u);
  EXPECT_EQ(without.state_transfers_loaded, 0u);
  const RunResult first = run_simulation(restart_options(3));
  const RunResult again = run_isolated(restart_options(3));
  EXPECT_EQ(first.event_log_hash, again.event_log_hash);
  EXPECT_EQ(first.faults, again.faults);
  EXPECT_EQ(first.state_transfers_loaded, again.state_transfers_loaded);
  EXPECT_EQ(first.profile.describe(), again.profile.describe());
}

TEST(ByzantineRestartSimTest, ForgedSnapshotIsAValidStateNoHonestReplicaHas) {
  const Bytes forged = forged_snapshot(100'000);
  EXPECT_EQ(forged, forged_snapshot(100'000)) << "colluders forge the same state";
  EXPECT_NE(crypto::digest(forged), crypto::digest(forged_snapshot(200'000)));
  Service scratch(std::make_unique<kv::KvMachine>());
  EXPECT_NE(crypto::digest(forged), crypto::digest(scratch.snapshot()));
  scratch.restore(forged);  // decodes: only the digest check keeps it out
  EXPECT_EQ(scratch.executed_count(), 1u);
  // The protocol state names the order hash the forged votes name with the snapshot's digest,
  // and the first membership schedule (no change to vouch for).
  const auto parts = byzantine::decode_catch_up_state(forged_protocol_state(100'000));
  ASSERT_TRUE(parts);
  EXPECT_EQ(parts->second, Schedule{}.encode());
  const std::optional<byzantine::BaseAndBatches> state =
      byzantine::decode_base_and_batches(parts->first);
  ASSERT_TRUE(state);
  EXPECT_EQ(state->base.position_us, 100'000u);
  EXPECT_TRUE(state->batches.empty());
  EXPECT_EQ(state->base.order_hash, forged_order_hash(100'000));
  EXPECT_NE(forged_order_hash(100'000), Digest{});
  EXPECT_EQ(crypto::position_digest(state->base.order_hash, crypto::digest(forged)),
            forged_position_digest(100'000));
  EXPECT_NE(forged_position_digest(100'000), forged_position_digest(200'000));
}

TEST(ByzantineRestartSimTest, AJoinerFedAForgedStateIsCaught) {
  // The planted hook swaps every vote and snapshot reaching a joiner for a forged state's (as if
  // t+1 replicas vouched for it): the joiner loads it, and the checker must say so.
  SimOptions options = restart_options(1);
  options.planted.load_forged_state = true;
  std::optional<RunResult> caught;
  for (uint64_t seed = 1; seed <= 40 && !caught; ++seed) {
    options.seed = seed;
    RunResult r = run_isolated(options);
    if (!r.passed) caught = std::move(r);
  }
  ASSERT_TRUE(caught) << "a joiner loading a forged snapshot went unnoticed for 40 seeds";
  EXPECT_EQ(caught->violation.rfind("catch-up: ", 0), 0u) << caught->violation;
  EXPECT_NE(caught->violation.find("forged snapshot"), std::string::npos) << caught->violation;
  std::printf("load_forged_state: caught at seed %llu: %s\n",
              static_cast<unsigned long long>(caught->seed), caught->violation.c_str());
  // The same seed passes without the plant: the forged state, not something else, was caught.
  SimOptions clean = restart_options(caught->seed);
  const RunResult passed = run_simulation(clean);
  EXPECT_TRUE(passed.passed) << summarize(passed);
}

TEST(ByzantineRestartSimTest, ReplayCommandsCarryTheRestartChoice) {
  SimOptions options = restart_options(9);
  EXPECT_NE(replay_command(options, 9).find("--restarts yes"), std::string::npos);
  options.restarts = false;
  EXPECT_NE(replay_command(options, 9).find("--restarts no"), std::string::npos);
  options.restarts.reset();
  EXPECT_EQ(replay_command(options, 9).find("--restarts"), std::string::npos);
  PlantedBugs planted;
  EXPECT_TRUE(set_planted_bug(planted, "load_forged_state"));
  EXPECT_TRUE(planted.load_forged_state);
}

}  // namespace
}  // namespace lockstep::sim
