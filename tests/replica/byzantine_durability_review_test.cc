// Adversarial review of durable byzantine Replicas (docs/DESIGN.md §11.8), on the harness of
// byzantine_durable_fixture.h: the test plays the faulty replica through its hooks (it can drop,
// rewrite or add messages). Tests marked "pins" pass on the code reviewed and hold a subtle
// property; the others fail on it and name the fix they need.
#include <variant>

#include "byzantine_durable_fixture.h"
#include "core/wire.h"

namespace lockstep {
namespace {

using byzantine::testing::at;
using byzantine::testing::kEpsilonUs;
using byzantine::testing::kSlotUs;

class DurabilityReview : public byzantine::testing::DurableCluster {
 protected:
  void run_refused_transfer_then_rebuild(bool garbage) {
    start();
    run_load(10);
    const Bytes older = replicas_[1]->service().snapshot();
    run_load(20);
    run(100);
    for (uint32_t r = 0; r < kReplicas; ++r)
      checkpoint(r);
    up_[0] = false;
    restart(0);
    bool garbage_sent = false;
    // Replica 0 is heard by no one until the crash (its claims would change the others' order).
    filter_ = [&](uint32_t from, uint32_t to, ReplicaMessage& m) {
      if (from == 0) return std::holds_alternative<StateRequest>(m);
      if (to != 0) return true;
      if (auto* transfer = std::get_if<StateTransfer>(&m)) {
        if (from == 1 || !garbage) return false;  // lost
        transfer->service_snapshot = older;
        garbage_sent = true;
      }
      return true;
    };
    for (int s = 0; s < 400 && replicas_[0]->rejected_state_transfers() == 0; ++s)
      step();
    ASSERT_EQ(garbage_sent, garbage);
    ASSERT_EQ(replicas_[0]->rejected_state_transfers(), garbage ? 1u : 0u);
    ASSERT_FALSE(replicas_[0]->serving());
    // 1 and 2 crash and come back from their disks; 0 keeps running, still recovering.
    up_[1] = up_[2] = false;
    restart(1);
    restart(2);
    filter_ = nullptr;
    for (int s = 0; s < 4000 && !all_serving(); ++s)
      step();
    ASSERT_TRUE(all_serving());
    ASSERT_EQ(replicas_[0]->byzantine_core()->recoveries_completed(), 1u);
    ASSERT_FALSE(replicas_[0]->last_loaded_transfer().has_value()) << "it fetched: no rebuild";
    expect_alike();
  }
};

bool is_vote_from(const ReplicaMessage& message, uint32_t replica) {
  const auto* vote = std::get_if<CheckpointVote>(&message);
  return vote != nullptr && vote->replica.value == replica;
}

// Pins: replica 2 (faulty) withholds every vote; replicas 0 and 1 certify between them (t+1 = 2)
// and replies go out. The control for the next test.
TEST_F(DurabilityReview, PinsAReplicaWithholdingItsVotesDoesNotBlockCertification) {
  start();
  filter_ = [](uint32_t from, uint32_t, ReplicaMessage& m) {
    return !is_vote_from(m, 2) || from != 2;
  };
  run_load(10);
  run(200);
  EXPECT_EQ(acknowledged().size(), 10u);
}

// Found by review, fixed (liveness, high): one vote per replica and position is kept, the first
// that arrives, and its signature is checked only later. Replica 2 (faulty, its own key only) sends
// each honest replica, ahead of every position, a vote with garbage signature in the name of the
// other honest replica. That vote takes the honest signer's place; the real vote is then dropped as
// a second one, and the forged one fails verification: no position is ever certified, no reply ever
// leaves. Fix (durability.cc on_position_vote/try_certify): check the signature before a vote takes
// a replica's place (or let a later vote replace one that failed or is unverified; an honest signer
// sends one vote per position, so keeping every verified-once vote per (replica, digest) is safe).
TEST_F(DurabilityReview, ForgedVotesInAnHonestReplicasNameMustNotBlockCertification) {
  start();
  filter_ = [](uint32_t from, uint32_t, ReplicaMessage& m) {
    return !is_vote_from(m, 2) || from != 2;
  };
  before_step_ = [this] {
    // Every grid position the receivers accept a vote for already (their clock + ε + σ).
    const uint64_t last = now_us_ + kEpsilonUs + kSlotUs;
    for (uint64_t p = (now_us_ / kCertifyIntervalUs) * kCertifyIntervalUs; p <= last;
         p += kCertifyIntervalUs) {
      if (p == 0) continue;
      for (uint32_t to : {0u, 1u}) {
        const uint32_t impersonated = 1 - to;
        deliver(2, to, CheckpointVote{ReplicaId{impersonated}, p, Digest{}, Signature{}});
      }
    }
  };
  run_load(10);
  run(200);
  EXPECT_EQ(acknowledged().size(), 10u)
      << "a faulty replica without the honest replicas' keys blocked every certificate";
  EXPECT_GT(replicas_[0]->byzantine_core()->certified_us(), 0u);
}

// Found by review, fixed (safety, low likelihood): rounds wrap. A faulty replica's claim can carry
// any round, and an honest replica adopts it, logs it (kClaimedRecord) and claims in it; its next
// life claims in logged + 1, which for UINT64_MAX is 0: below the round of the earlier life, the
// very thing rounds exist to prevent (a late life completing a second recovery with claims counted
// by a first one, DESIGN §11.8 "Rounds"). Fix (durability.cc): treat a claim whose round is above a
// bound (say 2^62, which no honest life reaches) as invalid, alike on every honest replica; or
// refuse to claim when logged_round_ is at the top.
TEST_F(DurabilityReview, ALaterLifeNeverClaimsInARoundAtOrBelowAnEarlierLifesRound) {
  start();
  run_load(5);
  run(100);
  for (uint32_t r = 0; r < kReplicas; ++r) {
    up_[r] = false;
    checkpoint(r);
  }
  // What replica 0's disk holds after it adopted (and logged) the round a faulty claim carried.
  Bytes payload;
  Writer(payload).varint(UINT64_MAX);
  disks_[0].records.push_back(OrderingCore::PersistRecord{byzantine::kClaimedRecord, payload});
  // Fixed: a replica adopts at most one round more per decided claim, so no log holds such a
  // round; a disk that does is refused rather than let the round wrap around.
  EXPECT_THROW(restart(0), std::runtime_error);
}

// Found by review, fixed (safety, needs a faulty donor and a whole-cluster crash at the wrong
// moment): a state transfer the core refuses leaves its snapshot in the service (DESIGN §11.7 calls
// that harmless, since the next load restores the service). But a replica recovering from its disk
// can then complete a whole-cluster recovery by rebuilding from its own disk (rebuild_to), which
// replays its batches on the service as it is, not on the base. Here replica 0 restarts from its
// disk while 1 and 2 run; faulty 2 answers its StateRequest with another (older, real) snapshot and
// 1's answer is lost; then 1 and 2 crash and restart, and the three recover by claims. Replica 0
// rebuilds on the older snapshot and diverges. Fix: rebuild_to restores the service to
// base_snapshot() first (e.g. the core flags "rebuilt", and the Replica restores the service from
// base_snapshot() before executing the replayed entries), or the Replica restores the service to
// the base whenever a load is refused.
TEST_F(DurabilityReview, ARefusedTransferDoesNotLeaveItsSnapshotUnderARebuild) {
  run_refused_transfer_then_rebuild(/*garbage=*/true);
}

// Pins the control of the test above: the same run with 2's answer lost too (nothing refused).
TEST_F(DurabilityReview, PinsARecoveryByClaimsAfterALostTransferRebuildsTheHonestState) {
  run_refused_transfer_then_rebuild(/*garbage=*/false);
}
// Pins: checkpoints taken between any two steps (recovering replicas too), then a whole-cluster
// crash: every replica rebuilds the same state, nothing acknowledged is lost, and the recovered
// cluster keeps going; then again, from checkpoints taken right after the recovery.
TEST_F(DurabilityReview, PinsCheckpointsBetweenEveryTwoStepsRebuildTheSameState) {
  start();
  checkpoint_every_step_ = true;
  for (int life = 0; life < 2; ++life) {
    run_load(25);
    run(100);
    const std::vector<ClientId> acked = acknowledged();
    ASSERT_GE(acked.size(), 25u * (life + 1));
    for (uint32_t r = 0; r < kReplicas; ++r)
      up_[r] = false;
    for (uint32_t r = 0; r < kReplicas; ++r)
      restart(r);
    for (int s = 0; s < 4000 && !all_serving(); ++s)
      step();
    ASSERT_TRUE(all_serving()) << "life " << life;
    for (uint32_t r = 0; r < kReplicas; ++r) {
      for (ClientId client : acked) {
        EXPECT_TRUE(replicas_[r]->service().already_executed_or_stale(client, Sequence{1}))
            << "r" << r << " life " << life;
      }
    }
    expect_alike();
  }
}

// Found by review, fixed (resources, medium): a replica recovering from its disk keeps everything
// decided from its participation start on (decided_), boundaries included: one entry per certify
// interval even with no traffic at all, plus every batch a faulty replica proposes (up to
// proposal_bytes_max per slot). A recovery can wait for the operator's ruling indefinitely (a
// silent replica), so this grows without bound: here replicas 0 and 1 recover while 2 stays down.
// Fix (core.cc drain_decided): a replica recovering from its disk needs decided entries only from a
// boundary it may still catch up from; drop those below the latest checkpoint boundary that has not
// yet gathered t+1 votes within a bounded horizon (or cap decided_ and fall back to the next
// boundary), and count it in pending_entries() as now.
TEST_F(DurabilityReview, AStalledRecoveryHoldsABoundedDecidedQueue) {
  start();
  run_load(10);
  run(100);
  for (uint32_t r = 0; r < kReplicas; ++r)
    up_[r] = false;
  restart(0);
  restart(1);
  run(2'000);  // 1 s
  const size_t after_one_second = replicas_[0]->byzantine_core()->pending_entries();
  run(8'000);  // 4 s more
  const size_t after_five_seconds = replicas_[0]->byzantine_core()->pending_entries();
  ASSERT_FALSE(replicas_[0]->serving());
  EXPECT_LE(after_five_seconds, after_one_second + 50)
      << "held after 1 s: " << after_one_second << ", after 5 s: " << after_five_seconds;
}

}  // namespace
}  // namespace lockstep
