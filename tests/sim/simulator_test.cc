// The simulator itself: determinism (a seed is a reproducible bug report), the size of a run,
// that its checkers see what a faulty replica does, and that the runner survives an aborting
// seed and reports it.
#include "sim/simulator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "apps/kv/kv_machine.h"
#include "core/assert.h"
#include "sim/runner.h"

namespace lockstep::sim {
namespace {

SimOptions options_for(uint64_t seed) {
  SimOptions options;
  options.seed = seed;
  return options;
}

TEST(SimulatorTest, SameSeedGivesTheSameRunEventForEvent) {
  // Seed 4 draws a durable run (restarts, torn writes, a whole-cluster crash).
  for (uint64_t seed : {1, 2, 3, 4, 17, 99}) {
    const RunResult first = run_simulation(options_for(seed));
    const RunResult second = run_simulation(options_for(seed));
    EXPECT_EQ(first.event_log_hash, second.event_log_hash) << "seed " << seed;
    EXPECT_EQ(first.events, second.events) << "seed " << seed;
    EXPECT_EQ(first.simulated_ns, second.simulated_ns) << "seed " << seed;
    EXPECT_EQ(first.ops_completed, second.ops_completed) << "seed " << seed;
    EXPECT_EQ(first.faults, second.faults) << "seed " << seed;
  }
}

TEST(SimulatorTest, DifferentSeedsGiveDifferentRuns) {
  EXPECT_NE(run_simulation(options_for(1)).event_log_hash,
            run_simulation(options_for(2)).event_log_hash);
}

TEST(SimulatorTest, TracingDoesNotChangeTheRun) {
  // A failing seed is replayed with the trace on; that replay must be the same run.
  SimOptions traced = options_for(5);
  traced.trace = true;
  size_t lines_seen = 0;
  traced.trace_sink = [&](std::string_view) { ++lines_seen; };
  const RunResult plain = run_simulation(options_for(5));
  const RunResult with_trace = run_simulation(traced);
  EXPECT_EQ(plain.event_log_hash, with_trace.event_log_hash);
  EXPECT_EQ(plain.events, with_trace.events);
  EXPECT_TRUE(plain.trace_tail.empty());
  EXPECT_EQ(with_trace.trace_tail.size(), traced.trace_tail_events);
  EXPECT_GT(lines_seen, with_trace.trace_tail.size());
}

TEST(SimulatorTest, ARunInAChildProcessIsTheSameRun) {
  const RunResult here = run_simulation(options_for(8));
  const RunResult there = run_isolated(options_for(8));
  EXPECT_EQ(here.event_log_hash, there.event_log_hash);
  EXPECT_EQ(here.events, there.events);
  EXPECT_EQ(here.passed, there.passed);
  EXPECT_EQ(here.faults, there.faults);
  EXPECT_EQ(here.profile.describe(), there.profile.describe());
}

TEST(SimulatorTest, ARunHasTheWorkloadAndFaultsItPromises) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    SimOptions options = options_for(seed);
    options.ops = 300;
    options.faults_min = 12;
    const RunResult result = run_simulation(options);
    ASSERT_TRUE(result.passed) << summarize(result);
    EXPECT_GE(result.ops_submitted, 300u);
    EXPECT_EQ(result.ops_submitted, result.ops_completed + result.ops_unknown) << summarize(result);
    EXPECT_GE(result.fault_episodes, 12u);
    EXPECT_EQ(result.profile.replicas, result.profile.t + 1);
  }
}

TEST(SimulatorTest, OptionsOverrideTheDrawnProfile) {
  SimOptions options = options_for(4);
  options.t = 2;
  options.clients = 7;
  options.clock_beyond_bounds = true;
  const RunResult result = run_simulation(options);
  EXPECT_EQ(result.profile.t, 2u);
  EXPECT_EQ(result.profile.replicas, 3u);
  EXPECT_EQ(result.profile.clients, 7u);
  EXPECT_TRUE(result.profile.clock_beyond_bounds);
}

TEST(SimulatorTest, SwarmProfilesVaryAcrossSeeds) {
  // Swarm testing only helps if seeds really differ in what they enable.
  bool saw_crash = false;
  bool saw_long_pause = false;
  bool saw_no_crash = false;
  bool saw_client_crash = false;
  bool saw_clock_jump = false;
  bool saw_retransmit = false;
  std::set<uint32_t> replica_counts;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    const RunResult r = run_simulation(options_for(seed));
    const auto count = [&](FaultKind kind) { return r.faults[static_cast<size_t>(kind)]; };
    saw_crash |= count(FaultKind::kReplicaCrash) > 0;
    saw_no_crash |= count(FaultKind::kReplicaCrash) == 0;
    saw_long_pause |= count(FaultKind::kReplicaLongPause) > 0;
    saw_client_crash |= count(FaultKind::kClientCrash) > 0;
    saw_clock_jump |= count(FaultKind::kClockJump) > 0;
    saw_retransmit |= count(FaultKind::kRetransmit) > 0;
    replica_counts.insert(r.profile.replicas);
  }
  EXPECT_TRUE(saw_crash && saw_no_crash && saw_long_pause && saw_client_crash && saw_clock_jump &&
              saw_retransmit);
  EXPECT_EQ(replica_counts.size(), 3u);
}

// A Byzantine replica that answers reads with a value nobody wrote: outside the failstop model,
// and exactly what the linearizability check of the client history must catch.
class ForgedReadsHook final : public ByzantineHook {
 public:
  bool is_byzantine(ReplicaId replica) const override { return replica.value == 0; }
  bool on_peer_send(ReplicaId, ReplicaId, ReplicaMessage&, Random&) override { return true; }
  bool on_client_reply(ReplicaId, ClientReply& reply, Random&) override {
    auto result = kv::decode_result(reply.result);
    if (result && result->code == kv::ResultCode::kOk && !result->value.empty()) {
      result->value = "forged";
      reply.result = kv::encode_result(*result);
    }
    return true;
  }
};

TEST(SimulatorTest, LinearizabilityCheckCatchesForgedReads) {
  ForgedReadsHook hook;
  SimOptions options = options_for(3);
  options.t = 1;
  options.clients = 4;
  options.hooks.byzantine = &hook;
  const RunResult result = run_simulation(options);
  ASSERT_FALSE(result.passed);
  // The project's checker itself, not only the simulator's order witness, must see it.
  EXPECT_EQ(result.violation.rfind("linearizability: the client history is not linearizable", 0),
            0u)
      << result.violation;
  EXPECT_EQ(result.violation.find("suspect the checker"), std::string::npos) << result.violation;
  EXPECT_NE(result.violation.find("forged"), std::string::npos) << result.violation;
}

// A hook that trips an assertion partway through the run, as a failing invariant check would.
class AssertingHook final : public ByzantineHook {
 public:
  bool is_byzantine(ReplicaId replica) const override { return replica.value == 0; }
  bool on_peer_send(ReplicaId, ReplicaId, ReplicaMessage&, Random&) override {
    LOCKSTEP_ASSERT(++sends_ < 200, "planted assertion for the runner test");
    return true;
  }
  bool on_client_reply(ReplicaId, ClientReply&, Random&) override { return true; }

 private:
  int sends_ = 0;
};

TEST(SimulatorTest, RunnerReportsAnAbortingSeedWithItsMessageAndTrace) {
  AssertingHook hook;
  SimOptions options = options_for(6);
  options.t = 1;
  options.hooks.byzantine = &hook;
  options.trace = true;
  const RunResult result = run_isolated(options);
  EXPECT_FALSE(result.passed);
  EXPECT_EQ(result.seed, 6u);
  EXPECT_NE(result.violation.find("aborted"), std::string::npos) << result.violation;
  EXPECT_NE(result.violation.find("planted assertion for the runner test"), std::string::npos)
      << result.violation;
  EXPECT_FALSE(result.trace_tail.empty());
}

TEST(SimulatorTest, RunnerGoesOnAfterAnAbortingSeed) {
  AssertingHook hook;
  SimOptions options;
  options.t = 1;
  options.hooks.byzantine = &hook;
  std::vector<uint64_t> reported;
  const BatchResult batch = run_seeds(options, SeedRange{10, 13}, 2,
                                      [&](const RunResult& r) { reported.push_back(r.seed); });
  EXPECT_EQ(batch.runs, 4u);
  EXPECT_EQ(batch.passed, 0u);
  ASSERT_EQ(batch.failures.size(), 4u);
  for (uint64_t i = 0; i < 4; ++i)
    EXPECT_EQ(batch.failures[i].seed, 10 + i);
  std::sort(reported.begin(), reported.end());
  EXPECT_EQ(reported, (std::vector<uint64_t>{10, 11, 12, 13}));
}

TEST(SimulatorTest, RunnerPassesResultsThroughUnchanged) {
  const BatchResult batch = run_seeds(SimOptions{}, SeedRange{20, 23}, 2);
  EXPECT_EQ(batch.runs, 4u);
  EXPECT_EQ(batch.passed, 4u);
  const RunResult here = run_simulation(options_for(21));
  SimOptions one;
  one.seed = 21;
  EXPECT_EQ(run_isolated(one).event_log_hash, here.event_log_hash);
}

TEST(RunnerTest, ParsesSeedRanges) {
  auto range = parse_seed_range("3..9");
  ASSERT_TRUE(range);
  EXPECT_EQ(range->first, 3u);
  EXPECT_EQ(range->last, 9u);
  EXPECT_EQ(range->count(), 7u);
  range = parse_seed_range("42");
  ASSERT_TRUE(range);
  EXPECT_EQ(range->first, 42u);
  EXPECT_EQ(range->last, 42u);
  EXPECT_FALSE(parse_seed_range("9..3"));
  EXPECT_FALSE(parse_seed_range("a..b"));
  EXPECT_FALSE(parse_seed_range("1..."));
  EXPECT_FALSE(parse_seed_range(""));
  EXPECT_FALSE(parse_seed_range("..4"));
}

TEST(RunnerTest, ScalesSeedCounts) {
  EXPECT_EQ(scale_count(1000, 1.0), 1000u);
  EXPECT_EQ(scale_count(1000, 0.1), 100u);
  EXPECT_EQ(scale_count(1000, 2.5), 2500u);
  EXPECT_EQ(scale_count(5, 0.01), 1u);
}

TEST(RunnerTest, ReplayCommandCarriesTheOptionsThatShapeTheRun) {
  SimOptions options;
  options.t = 2;
  options.ops = 700;
  ASSERT_TRUE(set_planted_bug(options.planted, "skip_relay"));
  EXPECT_FALSE(set_planted_bug(options.planted, "no_such_bug"));
  const std::string command = replay_command(options, 77);
  EXPECT_NE(command.find("--seed 77"), std::string::npos) << command;
  EXPECT_NE(command.find("--t 2"), std::string::npos) << command;
  EXPECT_NE(command.find("--ops 700"), std::string::npos) << command;
  EXPECT_NE(command.find("--plant skip_relay"), std::string::npos) << command;
  EXPECT_EQ(planted_bug_names(options.planted), std::vector<std::string>{"skip_relay"});
  for (const std::string& name : all_planted_bug_names()) {
    PlantedBugs planted;
    EXPECT_TRUE(set_planted_bug(planted, name)) << name;
    EXPECT_EQ(planted_bug_names(planted), std::vector<std::string>{name});
  }
}

}  // namespace
}  // namespace lockstep::sim
