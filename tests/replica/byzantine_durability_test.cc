// Durable byzantine Replicas (docs/DESIGN.md §11.8) on an instant network, each with a "disk" that
// keeps exactly what the runtime would: every step's log records (synced before the step's
// messages and replies leave) and checkpoints. A crash keeps the disk and loses everything else.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "../protocol/byzantine_fixture.h"
#include "apps/kv/kv_machine.h"
#include "replica/replica.h"

namespace lockstep {
namespace {

using byzantine::testing::at;
using byzantine::testing::ByzantineFixture;
using byzantine::testing::kPrincipal;

constexpr uint64_t kCertifyIntervalUs = 2'000;
constexpr uint64_t kCheckpointIntervalUs = 50'000;
constexpr uint32_t kReplicas = 3;

struct Disk {
  Replica::CheckpointData checkpoint;
  std::vector<OrderingCore::PersistRecord> records;
};

class ByzantineDurability : public ByzantineFixture {
 protected:
  std::unique_ptr<Replica> make(uint32_t self, std::vector<ReplicaId> excused = {}) const {
    byzantine::Options options = options_for(self);
    options.checkpoint_interval_us = kCheckpointIntervalUs;
    options.certify_interval_us = kCertifyIntervalUs;
    options.recovery_excused = std::move(excused);
    return std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>());
  }

  void start() {
    for (uint32_t r = 0; r < kReplicas; ++r) {
      replicas_.push_back(make(r));
      disks_.emplace_back();
      up_.push_back(true);
    }
  }

  // The process dies; a new one rebuilds itself from the disk.
  void restart(uint32_t r, std::vector<ReplicaId> excused = {}) {
    replicas_[r] = make(r, std::move(excused));
    replicas_[r]->recover(disks_[r].checkpoint, disks_[r].records);
    up_[r] = true;
  }

  void checkpoint(uint32_t r) {
    disks_[r].checkpoint = replicas_[r]->checkpoint();
    disks_[r].records.clear();
  }

  void step() {
    now_us_ += 500;
    for (uint32_t r = 0; r < kReplicas; ++r) {
      if (up_[r]) replicas_[r]->tick(at(now_us_));
    }
    for (int round = 0; round < 4; ++round) {
      for (uint32_t r = 0; r < kReplicas; ++r) {
        if (!up_[r]) continue;
        Replica::Output out = replicas_[r]->take_output();
        // The runtime's order: a loaded (or recovered) state is checkpointed before the step's
        // records, and the records are durable before anything leaves.
        if (out.loaded_state) checkpoint(r);
        for (auto& record : out.persist)
          disks_[r].records.push_back(std::move(record));
        for (const ClientReply& reply : out.to_clients) {
          if (reply.status == ReplyStatus::kOk) replies_[reply.client].insert(reply.replica.value);
        }
        for (auto& send : out.to_peers) {
          if (up_[send.to.value] && !cut_off(r) && !cut_off(send.to.value) &&
              deaf_ != send.to.value && !(drop_ && drop_(r, send.to.value, send.message))) {
            replicas_[send.to.value]->on_peer_message(at(now_us_), ReplicaId{r},
                                                      std::move(send.message));
          }
        }
      }
    }
    if (++steps_ % 97 == 0) {
      for (uint32_t r = 0; r < kReplicas; ++r) {
        if (up_[r] && replicas_[r]->serving()) checkpoint(r);
      }
    }
  }

  bool cut_off(uint32_t r) const { return cut_off_ && *cut_off_ == r; }

  // A put by a session of its own, to every replica (the client broadcasts).
  ClientId put(const std::string& key) {
    const uint32_t session = ++sessions_;
    ClientRequest r = request(session, 1, "");
    kv::Command command;
    command.op = kv::Op::kPut;
    command.key = key;
    command.value = "value of " + key;
    r.command = kv::encode_command(command);
    crypto::sign_request(*client_signer_, r);
    for (uint32_t i = 0; i < kReplicas; ++i) {
      if (up_[i]) replicas_[i]->on_client_request(at(now_us_), r);
    }
    return r.client;
  }

  // Requests a client accepted: t+1 = 2 replicas replied Ok.
  std::vector<ClientId> acknowledged() const {
    std::vector<ClientId> out;
    for (const auto& [client, from] : replies_) {
      if (from.size() >= 2) out.push_back(client);
    }
    return out;
  }

  void run_load(int puts) {
    for (int i = 0; i < puts; ++i) {
      put("k" + std::to_string(sessions_));
      for (int s = 0; s < 3; ++s)
        step();
    }
  }

  void crash_all() {
    for (uint32_t r = 0; r < kReplicas; ++r)
      up_[r] = false;
  }

  bool all_serving() const {
    return std::all_of(replicas_.begin(), replicas_.end(),
                       [](const auto& r) { return r->serving(); });
  }

  void run_until_serving(int steps_max) {
    for (int s = 0; s < steps_max && !all_serving(); ++s)
      step();
  }

  void expect_nothing_acknowledged_lost(const std::vector<ClientId>& acked) {
    for (uint32_t r = 0; r < kReplicas; ++r) {
      for (ClientId client : acked) {
        EXPECT_TRUE(replicas_[r]->service().already_executed_or_stale(client, Sequence{1}))
            << "r" << r << " lost the acknowledged put of client " << client.value;
      }
    }
  }

  void expect_alike() {
    for (int s = 0; s < 200; ++s)
      step();  // past every decision time
    for (uint32_t r = 1; r < kReplicas; ++r) {
      EXPECT_EQ(replicas_[r]->service().digest(), replicas_[0]->service().digest()) << "r" << r;
    }
  }

  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<Disk> disks_;
  std::vector<bool> up_;
  std::optional<uint32_t> cut_off_;  // hears and sends nothing
  std::optional<uint32_t> deaf_;     // sends, hears nothing
  std::function<bool(uint32_t from, uint32_t to, const ReplicaMessage&)> drop_;
  std::map<ClientId, std::set<uint32_t>> replies_;
  uint64_t now_us_ = 1'000'000;
  uint64_t steps_ = 0;
  uint32_t sessions_ = 0;
};

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
  crash_all();
  for (uint32_t r = 0; r < kReplicas; ++r)
    restart(r);
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
  crash_all();
  for (uint32_t r = 0; r < kReplicas; ++r)
    restart(r);
  for (int s = 0; s < 80; ++s)
    step();  // claims decided, recovery not yet complete
  ASSERT_FALSE(all_serving());
  crash_all();
  for (uint32_t r = 0; r < kReplicas; ++r)
    restart(r);
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
  crash_all();
  for (uint32_t r = 0; r < kReplicas; ++r)
    restart(r);
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
  expect_nothing_acknowledged_lost(acknowledged());
  expect_alike();
}

}  // namespace
}  // namespace lockstep
