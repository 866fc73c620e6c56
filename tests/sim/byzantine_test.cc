// The simulator's byzantine mode: determinism, the model it promises (n = 2t+1, clocks within
// ε/2 of true time, no pauses, the fault budget), the adversary's behaviours, and that the quorum
// and the checkers see what a lying replica does.
#include "sim/byzantine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "apps/kv/kv_machine.h"
#include "crypto/crypto.h"
#include "crypto/signing.h"
#include "sim/runner.h"
#include "sim/simulator.h"

namespace lockstep::sim {
namespace {

SimOptions byzantine_options(uint64_t seed) {
  SimOptions options;
  options.mode = Mode::kByzantine;
  options.seed = seed;
  return options;
}

TEST(ByzantineSimTest, SameSeedGivesTheSameRunEventForEvent) {
  bool saw_liars = false;
  for (uint64_t seed : {1, 2, 7, 30}) {
    const RunResult first = run_simulation(byzantine_options(seed));
    const RunResult second = run_simulation(byzantine_options(seed));
    EXPECT_EQ(first.event_log_hash, second.event_log_hash) << "seed " << seed;
    EXPECT_EQ(first.events, second.events) << "seed " << seed;
    EXPECT_EQ(first.simulated_ns, second.simulated_ns) << "seed " << seed;
    EXPECT_EQ(first.faults, second.faults) << "seed " << seed;
    EXPECT_EQ(first.profile.describe(), second.profile.describe()) << "seed " << seed;
    saw_liars |= first.profile.byzantine_replicas > 0 && first.profile.byzantine_clients > 0;
  }
  EXPECT_TRUE(saw_liars)
      << "the determinism check should cover runs with lying replicas and clients";
}

TEST(ByzantineSimTest, TracingAndChildProcessesDoNotChangeTheRun) {
  SimOptions traced = byzantine_options(5);
  traced.trace = true;
  const RunResult plain = run_simulation(byzantine_options(5));
  const RunResult with_trace = run_simulation(traced);
  const RunResult isolated = run_isolated(byzantine_options(5));
  EXPECT_EQ(plain.event_log_hash, with_trace.event_log_hash);
  EXPECT_EQ(plain.event_log_hash, isolated.event_log_hash);
  EXPECT_EQ(plain.profile.describe(), isolated.profile.describe());
  EXPECT_EQ(plain.faults, isolated.faults);
}

TEST(ByzantineSimTest, ModeDiffersFromFailstopForTheSameSeed) {
  SimOptions failstop;
  failstop.seed = 3;
  EXPECT_NE(run_simulation(failstop).event_log_hash,
            run_simulation(byzantine_options(3)).event_log_hash);
}

TEST(ByzantineSimTest, RunsHaveTheShapeTheModelPromises) {
  std::set<uint32_t> ts;
  std::set<std::string> behaviours_seen;
  bool saw_honest_only = false;
  bool saw_full_budget = false;
  bool saw_liar_clients = false;
  bool saw_crash_ended_by_cluster_crash = false;
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    const RunResult r = run_simulation(byzantine_options(seed));
    const auto count = [&](FaultKind kind) { return r.faults[static_cast<size_t>(kind)]; };
    EXPECT_EQ(r.profile.mode, Mode::kByzantine);
    EXPECT_EQ(r.profile.replicas, 2 * r.profile.t + 1) << summarize(r);
    // A crash is for good, except that a whole-cluster crash (durable runs) restarts the replicas
    // crashed earlier with the others: those served again, and their units of t were free again.
    EXPECT_LE(r.crashes_ended_by_cluster_crash, count(FaultKind::kReplicaCrash)) << summarize(r);
    if (r.crashes_ended_by_cluster_crash > 0) {
      EXPECT_TRUE(r.profile.durable) << summarize(r);
      EXPECT_GT(count(FaultKind::kClusterCrash), 0u) << summarize(r);
    }
    saw_crash_ended_by_cluster_crash |= r.crashes_ended_by_cluster_crash > 0;
    EXPECT_LE(r.profile.byzantine_replicas + count(FaultKind::kReplicaCrash) -
                  r.crashes_ended_by_cluster_crash,
              r.profile.t)
        << summarize(r);
    EXPECT_GE(r.profile.delta_us, 2'000u);
    EXPECT_GE(r.profile.epsilon_us, 200u);
    EXPECT_FALSE(r.profile.clock_beyond_bounds);
    // Outside the model in this mode: pauses (an honest replica must answer within Δ) and
    // clock jumps (clocks are synchronized).
    EXPECT_EQ(count(FaultKind::kReplicaPause), 0u) << summarize(r);
    EXPECT_EQ(count(FaultKind::kReplicaLongPause), 0u) << summarize(r);
    EXPECT_EQ(count(FaultKind::kClockJump), 0u) << summarize(r);
    EXPECT_GE(r.ops_submitted, 500u);
    if (r.profile.byzantine_replicas > 0) {
      EXPECT_GT(count(FaultKind::kByzantineDrop) + count(FaultKind::kByzantineInject) +
                    count(FaultKind::kByzantineAlter) + count(FaultKind::kByzantineLie),
                0u)
          << "a faulty replica that never misbehaves: " << summarize(r);
    }
    if (r.profile.byzantine_clients > 0) {
      saw_liar_clients = true;
      EXPECT_GT(count(FaultKind::kByzantineClient), 0u) << summarize(r);
    }
    ts.insert(r.profile.t);
    saw_honest_only |= r.profile.byzantine_replicas == 0;
    saw_full_budget |= r.profile.byzantine_replicas == r.profile.t;
    for (size_t b = 0; b < kBehaviourCount; ++b) {
      const std::string name(behaviour_name(static_cast<Behaviour>(b)));
      if (r.profile.behaviours.find(name) != std::string::npos) behaviours_seen.insert(name);
    }
  }
  EXPECT_TRUE(ts.contains(1) && ts.contains(2));
  EXPECT_TRUE(saw_honest_only && saw_full_budget && saw_liar_clients);
  // (A crash ended by a whole-cluster crash is drawn rarely; seed 7 had one until the core's
  // changes of 554b6a4..8953ce9 moved the runs. When one happens, the checks above hold.)
  if (!saw_crash_ended_by_cluster_crash) std::printf("no crash ended by a whole-cluster crash\n");
  EXPECT_EQ(behaviours_seen.size(), kBehaviourCount) << "swarm: every behaviour on some seed";
}

TEST(ByzantineSimTest, OptionsOverrideTheDrawnProfile) {
  SimOptions options = byzantine_options(4);
  options.t = 2;
  options.clients = 5;
  options.byzantine_replicas = 2;
  options.byzantine_clients = 3;
  const RunResult r = run_simulation(options);
  EXPECT_EQ(r.profile.t, 2u);
  EXPECT_EQ(r.profile.replicas, 5u);
  EXPECT_EQ(r.profile.clients, 5u);
  EXPECT_EQ(r.profile.byzantine_replicas, 2u);
  EXPECT_EQ(r.profile.byzantine_clients, 3u);
  EXPECT_NE(r.profile.behaviours.find("c2:"), std::string::npos) << r.profile.behaviours;
}

// Watches a "faulty" replica that behaves honestly: its clock is one of the simulated clocks, so
// it must stay within ε/2 of true time, and its steps (ticks every few ms) must never stop for
// long (no pauses in this mode).
class ClockSpyHook final : public ByzantineHook {
 public:
  bool is_byzantine(ReplicaId replica) const override { return replica.value == 0; }
  bool on_peer_send(ReplicaId, ReplicaId, ReplicaMessage&, Random&) override { return true; }
  bool on_client_reply(ReplicaId, ClientReply&, Random&) override { return true; }
  std::vector<Injection> on_step(const Step& step, Random&) override {
    const auto wall_ns = static_cast<int64_t>(step.now.wall_us) * 1000;
    const int64_t truth = step.wall_epoch_ns + static_cast<int64_t>(step.sim_ns);
    max_offset_ns = std::max(max_offset_ns, std::abs(wall_ns - truth));
    if (steps > 0) max_gap_ns = std::max(max_gap_ns, step.sim_ns - last_step_ns);
    last_step_ns = step.sim_ns;
    ++steps;
    return {};
  }
  int64_t max_offset_ns = 0;
  uint64_t max_gap_ns = 0;
  uint64_t last_step_ns = 0;
  uint64_t steps = 0;
};

TEST(ByzantineSimTest, ClocksStayWithinHalfEpsilonAndReplicasNeverPause) {
  for (uint64_t seed : {1, 2, 3, 4}) {
    ClockSpyHook spy;
    SimOptions options = byzantine_options(seed);
    options.t = 1;
    options.hooks.byzantine = &spy;
    const RunResult r = run_simulation(options);
    EXPECT_TRUE(r.passed) << summarize(r);
    ASSERT_GT(spy.steps, 100u);
    // The wall clock is read in µs (truncation: up to 1 µs more).
    EXPECT_LE(spy.max_offset_ns, static_cast<int64_t>(r.profile.epsilon_us * 1000 / 2) + 1000)
        << "seed " << seed;
    EXPECT_LE(spy.max_gap_ns, 3'000'000u) << "seed " << seed << ": a replica stopped stepping";
  }
}

// A replica that lies on every reply it sends (validly signed: the simulator signs after the
// hook). t+1 matching replies keep the lie out; a client that accepts t does not.
class AlwaysLiesHook final : public ByzantineHook {
 public:
  bool is_byzantine(ReplicaId replica) const override { return replica.value == 1; }
  bool on_peer_send(ReplicaId, ReplicaId, ReplicaMessage&, Random&) override { return true; }
  bool on_client_reply(ReplicaId, ClientReply& reply, Random&) override {
    kv::Result lie{kv::ResultCode::kOk, "forged;"};
    reply.result = kv::encode_result(lie);
    return true;
  }
};

TEST(ByzantineSimTest, AQuorumOfTPlusOneOutvotesALiar) {
  AlwaysLiesHook hook;
  SimOptions options = byzantine_options(11);
  options.t = 1;
  options.hooks.byzantine = &hook;
  const RunResult honest_quorum = run_simulation(options);
  EXPECT_TRUE(honest_quorum.passed) << summarize(honest_quorum);
  EXPECT_EQ(honest_quorum.profile.byzantine_replicas, 1u);
  EXPECT_GT(honest_quorum.faults[static_cast<size_t>(FaultKind::kByzantineLie)], 0u);

  options.planted.accept_short_quorum = true;
  const RunResult short_quorum = run_simulation(options);
  ASSERT_FALSE(short_quorum.passed);
  EXPECT_EQ(short_quorum.violation.rfind("accepted result", 0), 0u) << short_quorum.violation;
  EXPECT_NE(short_quorum.violation.find("forged"), std::string::npos) << short_quorum.violation;
}

// The drawn adversary itself: an equivocating replica sends differently-composed versions of
// one proposal (same origin and timestamp), each validly signed with its own key.
TEST(DrawnByzantineHookTest, EquivocationSendsTwoValidlySignedVersions) {
  const ReplicaId faulty{0};
  std::vector<crypto::KeyPair> keys;
  crypto::KeyDirectory directory;
  for (uint8_t r = 0; r < 3; ++r) {
    std::array<uint8_t, 32> seed{};
    seed[0] = static_cast<uint8_t>(r + 1);
    keys.push_back(crypto::derive_key_pair(crypto::Scheme::kSim, seed));
    directory.replicas.push_back(keys.back().public_key);
  }
  const auto verifier = crypto::make_verifier(crypto::Scheme::kSim, directory, keys);
  const auto signer = crypto::make_signer(crypto::Scheme::kSim, keys[0]);

  // Draw adversaries until one equivocates and does nothing that hides it.
  std::optional<DrawnByzantineHook> hook;
  for (uint64_t draw_seed = 1; draw_seed < 10'000 && !hook; ++draw_seed) {
    AdversarySetup setup;
    setup.t = 1;
    setup.replica_count = 3;
    setup.delta_us = 5'000;
    setup.epsilon_us = 1'000;
    setup.faulty.emplace(faulty, signer.get());
    Random draw(draw_seed);
    DrawnByzantineHook candidate(setup, draw);
    if (candidate.has(faulty, Behaviour::kEquivocate) &&
        !candidate.has(faulty, Behaviour::kSilence) &&
        !candidate.has(faulty, Behaviour::kBreakSignatures) &&
        !candidate.has(faulty, Behaviour::kShiftTimestamps)) {
      Random again(draw_seed);  // the same draw again: the same behaviours
      hook.emplace(setup, again);
    }
  }
  ASSERT_TRUE(hook);

  Random random(42);
  bool saw_equivocation = false;
  for (uint64_t slot = 1; slot <= 50; ++slot) {
    Proposal proposal{faulty, 1'000'000 + slot * 100, {}, {}};
    for (uint64_t k = 1; k <= 2; ++k) {
      ClientRequest request;
      request.client = client_id_of(1, 1);
      request.sequence = Sequence{2 * slot + k};
      request.command = to_bytes("x");
      proposal.requests.push_back(request);
    }
    const Digest digest = crypto::proposal_digest(proposal);
    SignedProposal original{proposal, {}};
    original.chain.push_back(
        Endorsement{faulty, signer->sign(crypto::endorsement_signing_bytes(digest))});
    std::set<Digest> versions;
    for (uint32_t to = 1; to <= 2; ++to) {
      ReplicaMessage message = original;
      ASSERT_TRUE(hook->on_peer_send(faulty, ReplicaId{to}, message, random));
      const auto& sent = std::get<SignedProposal>(message);
      EXPECT_EQ(sent.proposal.origin, faulty);
      EXPECT_EQ(sent.proposal.timestamp_us, proposal.timestamp_us);
      ASSERT_EQ(sent.chain.size(), 1u);
      const Digest sent_digest = crypto::proposal_digest(sent.proposal);
      EXPECT_TRUE(verifier->verify_replica(faulty, crypto::endorsement_signing_bytes(sent_digest),
                                           sent.chain[0].signature));
      versions.insert(sent_digest);
    }
    saw_equivocation |= versions.size() == 2;
  }
  EXPECT_TRUE(saw_equivocation);
}

}  // namespace
}  // namespace lockstep::sim
