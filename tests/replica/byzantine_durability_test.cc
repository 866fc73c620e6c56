// Durable byzantine Replicas (docs/DESIGN.md §11.8): certified replies, whole-cluster crashes,
// lagging disks, the operator's ruling, crashes during a recovery, single restarts, and a replica
// that leaves the order (the harness: byzantine_durable_fixture.h).
#include <optional>
#include <utility>
#include <vector>

#include "byzantine_durable_fixture.h"

namespace lockstep {
namespace {

// Cut-off and deaf replicas, and lost values, through the fixture's filter.
class ByzantineDurability : public byzantine::testing::DurableCluster {
 protected:
  void SetUp() override {
    filter_ = [this](uint32_t from, uint32_t to, ReplicaMessage& message) {
      if (cut_off_ == from || cut_off_ == to || deaf_ == to) return false;
      return !(drop_ && drop_(from, to, message));
    };
  }

  std::optional<uint32_t> cut_off_;  // hears and sends nothing
  std::optional<uint32_t> deaf_;     // sends, hears nothing
  std::function<bool(uint32_t from, uint32_t to, const ReplicaMessage&)> drop_;
};

using byzantine::testing::at;

TEST_F(ByzantineDurability, RepliesLeaveOnlyBelowACertifiedPosition) {
  start();
  const ClientId client = put("x");
  step();
  EXPECT_TRUE(replies_.empty()) << "a reply before the request was even decided";
  for (int s = 0; s < 200 && acknowledged().empty(); ++s)
    step();
  ASSERT_EQ(acknowledged(), std::vector<ClientId>{client});
  for (uint32_t r = 0; r < kReplicas; ++r) {
    const byzantine::Core& core = *replicas_[r]->byzantine_core();
    EXPECT_GT(core.certified_us(), 0u);
    EXPECT_EQ(replicas_[r]->held_replies(), 0u);
    // The disk holds the batch and the certificate that released its reply.
    const auto& records = disks_[r].records;
    EXPECT_TRUE(std::any_of(
        records.begin(), records.end(),
        [](const auto& record) { return record.type == byzantine::kCertificateRecord; }))
        << "r" << r;
  }
}

TEST_F(ByzantineDurability, AWholeClusterCrashLosesNoAcknowledgedWrite) {
  start();
  run_load(60);
  const std::vector<ClientId> acked = acknowledged();
  ASSERT_GT(acked.size(), 40u);
  crash_and_restart_all();
  for (uint32_t r = 0; r < kReplicas; ++r)
    EXPECT_FALSE(replicas_[r]->serving()) << "serves before the recovery";
  run_until_serving(4000);
  ASSERT_TRUE(all_serving()) << "the recovery never completed";
  for (uint32_t r = 0; r < kReplicas; ++r)
    EXPECT_EQ(replicas_[r]->byzantine_core()->recoveries_completed(), 1u) << "r" << r;
  expect_nothing_acknowledged_lost(acked);
  run_load(20);  // and it serves again
  for (int s = 0; s < 200; ++s)
    step();
  EXPECT_EQ(acknowledged().size(), acked.size() + 20);
  expect_alike();
}

// Replica 2 is cut off for a while, so its disk lacks the end of the certified order: after the
// crash it rebuilds what its disk holds, then fetches the rest from a signer of the target.
TEST_F(ByzantineDurability, AReplicaWhoseDiskLaggedFetchesTheRecoveredPrefix) {
  start();
  run_load(20);
  cut_off_ = 2;
  run_load(30);  // replicas 0 and 1 certify without it
  const std::vector<ClientId> acked = acknowledged();
  crash_all();
  cut_off_.reset();
  for (uint32_t r = 0; r < kReplicas; ++r)
    restart(r);
  run_until_serving(4000);
  ASSERT_TRUE(all_serving());
  EXPECT_EQ(replicas_[2]->rejected_state_transfers(), 0u);
  EXPECT_TRUE(replicas_[2]->last_loaded_transfer().has_value()) << "it never fetched";
  expect_nothing_acknowledged_lost(acked);
  expect_alike();
}

// A recovery needs every replica's claim: with replica 2 gone for good it waits, until the
// operator rules replica 2 out (on every replica alike).
TEST_F(ByzantineDurability, ASilentReplicaHoldsUpRecoveryUntilTheOperatorRulesItOut) {
  start();
  run_load(30);
  const std::vector<ClientId> acked = acknowledged();
  crash_all();
  restart(0);
  restart(1);
  run_until_serving(1000);
  EXPECT_FALSE(replicas_[0]->serving() || replicas_[1]->serving())
      << "recovered without replica 2's claim, which may hold the only copy of a write";
  crash_all();
  restart(0, {ReplicaId{2}});
  restart(1, {ReplicaId{2}});
  for (int s = 0; s < 4000 && !(replicas_[0]->serving() && replicas_[1]->serving()); ++s)
    step();
  ASSERT_TRUE(replicas_[0]->serving() && replicas_[1]->serving());
  for (uint32_t r = 0; r < 2; ++r) {
    for (ClientId client : acked) {
      // Replica 2 signed nothing after its crash, so every certificate has 0 or 1 among its
      // signers: here nothing was lost by ruling it out.
      EXPECT_TRUE(replicas_[r]->service().already_executed_or_stale(client, Sequence{1}));
    }
  }
}

// Every replica crashes again during the recovery, after their claims went out: the next lives
// claim in a higher round, and the recovery completes in it.
TEST_F(ByzantineDurability, AWholeClusterCrashDuringTheRecoveryStillRecovers) {
  start();
  run_load(30);
  const std::vector<ClientId> acked = acknowledged();
  crash_and_restart_all();
  for (int s = 0; s < 80; ++s)
    step();  // claims decided, recovery not yet complete
  ASSERT_FALSE(all_serving());
  crash_and_restart_all();
  run_until_serving(6000);
  ASSERT_TRUE(all_serving());
  expect_nothing_acknowledged_lost(acked);
  expect_alike();
}

// Replica 0's claims are counted by a recovery that it does not see complete (it hears nothing
// more), then it crashes. Its next life must not complete a recovery of its own by claims (that
// would be a second, different one): it claims in a higher round, which the others, serving
// again, never join, and catches up from them.
TEST_F(ByzantineDurability, AReplicaThatMissedTheRecoveryCatchesUpInstead) {
  start();
  run_load(30);
  const std::vector<ClientId> acked = acknowledged();
  crash_and_restart_all();
  for (int s = 0; s < 80; ++s)
    step();  // its claims are decided everywhere
  deaf_ = 0;
  for (int s = 0; s < 4000 && !(replicas_[1]->serving() && replicas_[2]->serving()); ++s)
    step();
  ASSERT_TRUE(replicas_[1]->serving() && replicas_[2]->serving());
  ASSERT_FALSE(replicas_[0]->serving());
  deaf_.reset();
  up_[0] = false;
  restart(0);
  run_until_serving(6000);
  ASSERT_TRUE(all_serving());
  EXPECT_EQ(replicas_[0]->byzantine_core()->recoveries_completed(), 0u)
      << "completed a recovery of its own by claims";
  EXPECT_TRUE(replicas_[0]->last_loaded_transfer().has_value());
  expect_nothing_acknowledged_lost(acked);
  expect_alike();
}

// Replica 0 misses every copy of one decided value (as if Δ broke at it: the value came outside
// its window), so it runs another order than the others. When t+1 of them certify a position it
// voted differently on, it knows it left the honest order, drops the replies it held (none went
// out: they were never certified with it) and catches up from a vouched checkpoint.
TEST_F(ByzantineDurability, AReplicaThatLeftTheOrderNoticesAndCatchesUp) {
  start();
  run_load(10);
  std::optional<std::pair<uint64_t, uint32_t>> missed;
  drop_ = [&](uint32_t, uint32_t to, const ReplicaMessage& message) {
    const auto* value = std::get_if<SignedProposal>(&message);
    if (to != 0 || value == nullptr || value->proposal.requests.empty() ||
        value->proposal.origin.value == 0) {
      return false;
    }
    const std::pair key{value->proposal.timestamp_us, value->proposal.origin.value};
    if (!missed) missed = key;
    return key == *missed;
  };
  run_load(30);
  ASSERT_TRUE(missed.has_value());
  EXPECT_GE(replicas_[0]->byzantine_core()->rejections().diverged, 1u);
  // Both others signed against its order there, and it against theirs.
  EXPECT_GE(replicas_[0]->byzantine_core()->rejections().votes_against, 2u);
  EXPECT_GE(replicas_[1]->byzantine_core()->rejections().votes_against, 1u);
  drop_ = nullptr;
  for (int i = 0; i < 400 && !replicas_[0]->serving(); ++i)
    run_load(1);
  ASSERT_TRUE(replicas_[0]->serving()) << "it never caught up";
  EXPECT_TRUE(replicas_[0]->last_loaded_transfer().has_value());
  expect_nothing_acknowledged_lost(acknowledged());
  expect_alike();
}

// One replica restarts from its disk while the others run: it catches up from them (§11.7), as
// a wiped one would, and its disk's state is left behind.
TEST_F(ByzantineDurability, OneReplicaRestartedFromItsDiskCatchesUpFromTheLiveCluster) {
  start();
  run_load(30);
  up_[2] = false;
  run_load(10);
  restart(2);
  for (int i = 0; i < 200 && !replicas_[2]->serving(); ++i)
    run_load(1);
  ASSERT_TRUE(replicas_[2]->serving());
  EXPECT_EQ(replicas_[2]->byzantine_core()->recoveries_completed(), 0u);
  for (uint32_t i = 0; i < 3; ++i)
    EXPECT_EQ(replicas_[i]->byzantine_core()->rejections().votes_against, 0u) << i;
  expect_nothing_acknowledged_lost(acknowledged());
  expect_alike();
}

}  // namespace
}  // namespace lockstep
