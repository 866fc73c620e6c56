// Durable failstop replicas (docs/DESIGN.md §10): every replica "persists" its records before its
// messages leave, crashes lose what was in flight, and a restart rebuilds the core from its
// checkpoint and records. The cluster must carry on in the same view, with every replica
// executing the same sequence.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <optional>

#include "protocol/failstop/core.h"

namespace lockstep::failstop {
namespace {

constexpr uint64_t kMs = 1'000'000;

ClientRequest request(uint64_t client, uint64_t sequence) {
  return ClientRequest{ClientId{client}, Sequence{sequence}, Sequence{1}, to_bytes("cmd"), {}};
}

struct Disk {
  std::optional<Bytes> checkpoint;                   // core checkpoint_state
  std::vector<OrderingCore::PersistRecord> records;  // after the checkpoint
};

std::vector<std::pair<ClientId, Sequence>> keys_of(const std::vector<OrderedEntry>& entries) {
  std::vector<std::pair<ClientId, Sequence>> out;
  for (const OrderedEntry& e : entries)
    out.emplace_back(e.request.client, e.request.sequence);
  return out;
}

class DurableHarness {
 public:
  explicit DurableHarness(uint32_t n) : n_(n) {
    disks_.resize(n);
    executed_.resize(n);
    for (uint32_t r = 0; r < n; ++r)
      cores_.push_back(std::make_unique<Core>(options_for(r)));
  }

  Options options_for(uint32_t r) {
    Options options;
    options.self = ReplicaId{r};
    options.replica_count = n_;
    options.incarnation = ++incarnations_;
    options.heartbeat_interval_ns = 5 * kMs;
    options.failure_timeout_ns = 100 * kMs;
    options.relay_timeout_ns = 20 * kMs;
    options.durable = true;
    return options;
  }

  Core& core(uint32_t r) { return *cores_[r]; }
  Now now() const { return Now{now_ns_, 1'000'000 + now_ns_ / 1000}; }

  // Records reach the disk before the step's messages reach the network.
  void flush() {
    for (uint32_t r = 0; r < n_; ++r) {
      if (!cores_[r]) continue;
      auto sends = cores_[r]->take_messages(now());
      for (auto& record : cores_[r]->take_persist())
        disks_[r].records.push_back(std::move(record));
      for (auto& send : sends)
        queues_[{r, send.to.value}].push_back(std::move(send.message));
      for (OrderedEntry& entry : cores_[r]->take_executable())
        executed_[r].push_back(entry);
      cores_[r]->check_invariants();
    }
  }
  void deliver(uint32_t from, uint32_t to) {
    auto& queue = queues_[{from, to}];
    while (!queue.empty()) {
      ReplicaMessage message = std::move(queue.front());
      queue.pop_front();
      if (cores_[to]) cores_[to]->on_message(now(), ReplicaId{from}, message);
    }
  }
  void deliver_all() {
    for (auto& [pair, queue] : queues_) {
      auto [from, to] = pair;
      while (!queue.empty()) {
        ReplicaMessage message = std::move(queue.front());
        queue.pop_front();
        if (cores_[to]) cores_[to]->on_message(now(), ReplicaId{from}, message);
      }
    }
  }
  void step() {
    now_ns_ += kMs;
    for (auto& core : cores_) {
      if (core) core->tick(now());
    }
    flush();
    deliver_all();
    flush();
  }
  void run_for(uint64_t ns) {
    for (uint64_t t = 0; t < ns; t += kMs)
      step();
  }
  void submit(uint64_t client, uint64_t sequence) {
    const ClientRequest r = request(client, sequence);
    for (auto& core : cores_) {
      if (core) core->on_client_request(now(), r);
    }
  }
  // The process dies: what it had not "sent" is gone, and so is what was in flight to and from
  // it (a TCP connection reset).
  void crash(uint32_t r) {
    cores_[r].reset();
    for (auto& [pair, queue] : queues_) {
      if (pair.first == r || pair.second == r) queue.clear();
    }
  }
  // A new process with a new incarnation rebuilds itself from its disk.
  void restart(uint32_t r) {
    cores_[r] = std::make_unique<Core>(options_for(r));
    const Disk& disk = disks_[r];
    cores_[r]->recover(
        disk.checkpoint ? std::span<const uint8_t>(*disk.checkpoint) : std::span<const uint8_t>(),
        disk.records);
    executed_[r].clear();  // it re-executes from its checkpoint
  }
  void wipe(uint32_t r) { disks_[r] = Disk{}; }
  void checkpoint(uint32_t r) {
    disks_[r].checkpoint = cores_[r]->checkpoint_state();
    disks_[r].records.clear();
    executed_[r].clear();  // what follows is executed after the checkpoint
  }
  const std::vector<OrderedEntry>& executed(uint32_t r) const { return executed_[r]; }

 private:
  uint32_t n_;
  uint64_t incarnations_ = 1000;
  std::vector<std::unique_ptr<Core>> cores_;
  std::vector<Disk> disks_;
  std::map<std::pair<uint32_t, uint32_t>, std::deque<ReplicaMessage>> queues_;
  std::vector<std::vector<OrderedEntry>> executed_;
  uint64_t now_ns_ = 10 * kMs;
};

TEST(FailstopDurability, AReplicaRestartedFromItsDiskCarriesOnInTheSameView) {
  DurableHarness h(3);
  uint64_t sequence = 0;
  for (int i = 0; i < 20; ++i) {
    h.submit(1 + i % 5, ++sequence);
    h.step();
  }
  // Crash with entries in flight, then come back well within the failure timeout.
  h.submit(2, ++sequence);
  h.flush();
  h.crash(1);
  h.run_for(10 * kMs);
  h.restart(1);
  for (int i = 0; i < 20; ++i) {
    h.submit(1 + i % 5, ++sequence);
    h.step();
  }
  h.run_for(50 * kMs);
  for (uint32_t r = 0; r < 3; ++r) {
    EXPECT_EQ(h.core(r).view(), ViewNumber{0}) << "replica " << r;
    EXPECT_FALSE(h.core(r).halted());
    EXPECT_EQ(h.core(r).pending_entries(), 0u) << "replica " << r;
  }
  EXPECT_EQ(h.executed(0).size(), sequence);
  EXPECT_EQ(keys_of(h.executed(1)), keys_of(h.executed(0)))
      << "the restarted replica re-executes the same sequence from the start";
  EXPECT_EQ(keys_of(h.executed(2)), keys_of(h.executed(0)));
}

TEST(FailstopDurability, UpdatesThatSkipWhatARecoveredReplicaLacksWaitForTheResend) {
  DurableHarness h(3);
  uint64_t sequence = 0;
  for (int i = 0; i < 10; ++i) {
    h.submit(1 + i % 5, ++sequence);
    h.step();
  }
  h.crash(1);
  for (int i = 0; i < 10; ++i) {  // the others go on ordering while replica 1 is down
    h.submit(1 + i % 5, ++sequence);
    h.step();
  }
  h.restart(1);
  h.submit(1, ++sequence);
  h.submit(2, ++sequence);
  h.flush();
  // The others' new entries reach replica 1 before its restart reaches them: a gap.
  h.deliver(0, 1);
  h.deliver(2, 1);
  EXPECT_FALSE(h.core(1).halted()) << "a recovered replica waits for the resend";
  h.run_for(50 * kMs);
  for (uint32_t r = 0; r < 3; ++r) {
    EXPECT_EQ(h.core(r).view(), ViewNumber{0}) << r;
    EXPECT_EQ(h.core(r).pending_entries(), 0u) << r;
  }
  EXPECT_FALSE(h.core(1).halted());
  EXPECT_EQ(keys_of(h.executed(1)), keys_of(h.executed(0)));
  EXPECT_EQ(h.executed(0).size(), sequence);
}

TEST(FailstopDurability, AWholeClusterCrashLosesNothingExecuted) {
  DurableHarness h(3);
  uint64_t sequence = 0;
  for (int i = 0; i < 30; ++i) {
    h.submit(1 + i % 7, ++sequence);
    h.step();
  }
  h.submit(3, ++sequence);
  h.flush();
  const auto before = keys_of(h.executed(0));
  for (uint32_t r = 0; r < 3; ++r)
    h.crash(r);
  h.run_for(5 * kMs);
  for (uint32_t r = 0; r < 3; ++r)
    h.restart(r);
  for (int i = 0; i < 10; ++i) {
    h.submit(1 + i % 7, ++sequence);
    h.step();
  }
  h.run_for(50 * kMs);
  const auto after = keys_of(h.executed(0));
  ASSERT_GE(after.size(), before.size());
  EXPECT_TRUE(std::equal(before.begin(), before.end(), after.begin()))
      << "what ran before the crash runs again first, in the same order";
  for (uint32_t r = 1; r < 3; ++r)
    EXPECT_EQ(keys_of(h.executed(r)), after);
  for (uint32_t r = 0; r < 3; ++r)
    EXPECT_EQ(h.core(r).view(), ViewNumber{0});
}

TEST(FailstopDurability, RecoveryFromACheckpointAndTheRecordsAfterIt) {
  DurableHarness h(3);
  uint64_t sequence = 0;
  for (int i = 0; i < 15; ++i) {
    h.submit(1 + i % 4, ++sequence);
    h.step();
  }
  h.run_for(50 * kMs);  // quiet: every replica has executed the same prefix
  h.checkpoint(2);
  h.checkpoint(0);  // reference: replica 0's executions after the same point
  for (int i = 0; i < 15; ++i) {
    h.submit(1 + i % 4, ++sequence);
    h.step();
  }
  h.crash(2);
  h.restart(2);
  h.run_for(50 * kMs);
  EXPECT_EQ(keys_of(h.executed(2)), keys_of(h.executed(0)))
      << "after the checkpoint, the recovered replica runs what the others ran";
  EXPECT_GT(h.executed(2).size(), 10u);
  EXPECT_EQ(h.core(2).pending_entries(), 0u);
}

TEST(FailstopDurability, AReplicaRemovedWhileDownNeverFormsAViewOfItsOwn) {
  DurableHarness h(3);
  uint64_t sequence = 0;
  for (int i = 0; i < 5; ++i) {
    h.submit(1 + i % 3, ++sequence);
    h.step();
  }
  h.crash(0);
  h.run_for(300 * kMs);  // the others remove it
  ASSERT_EQ(h.core(1).view(), ViewNumber{1});
  ASSERT_EQ(h.core(1).members().size(), 2u);
  h.submit(1, ++sequence);  // a write only the new view holds
  h.run_for(20 * kMs);
  h.crash(1);
  h.crash(2);
  h.restart(0);  // it recovers view 0 and does not know it was removed
  h.run_for(1000 * kMs);
  EXPECT_EQ(h.core(0).view(), ViewNumber{0}) << "it must wait for the members of its view";
  EXPECT_FALSE(h.core(0).halted());
  h.restart(1);
  h.restart(2);
  h.run_for(50 * kMs);
  EXPECT_TRUE(h.core(0).halted()) << "the members it waited for tell it that it was removed";
  EXPECT_EQ(h.core(1).view(), ViewNumber{1});
  EXPECT_FALSE(h.core(1).halted());
  // Restarted from the same disk once more (an operator, a supervisor), it does not recover the
  // old view to halt again: its disk says it halted, so it asks to be added back (§12).
  h.flush();
  h.crash(0);
  h.restart(0);
  EXPECT_FALSE(h.core(0).halted());
  EXPECT_TRUE(h.core(0).joining());
  h.run_for(50 * kMs);
  EXPECT_TRUE(h.core(0).joining()) << "it waits for a member's state";
  EXPECT_EQ(h.core(1).members().size(), 3u) << "the members admitted it";
}

TEST(FailstopDurability, AReplicaWhoseDiskWasWipedIsTreatedAsFailed) {
  DurableHarness h(3);
  uint64_t sequence = 0;
  for (int i = 0; i < 10; ++i) {
    h.submit(1 + i % 3, ++sequence);
    h.step();
  }
  h.crash(2);
  h.wipe(2);
  h.restart(2);
  h.run_for(300 * kMs);
  EXPECT_EQ(h.core(0).members().size(), 2u) << "its acknowledgements went backwards: removed";
  EXPECT_TRUE(h.core(2).halted());
  h.submit(1, ++sequence);
  h.run_for(20 * kMs);
  EXPECT_EQ(h.executed(0).size(), sequence) << "the others carry on without it";
}

TEST(FailstopDurability, ARestartedClockStartsAboveEverythingItSent) {
  DurableHarness h(2);
  h.submit(1, 1);
  h.run_for(20 * kMs);
  const uint64_t before = h.core(0).clock();
  h.crash(0);
  h.restart(0);
  EXPECT_GT(h.core(0).clock(), before);
}

TEST(FailstopDurability, AnOperatorsBarSurvivesARestartWithoutACheckpointAfterIt) {
  DurableHarness h(3);
  uint64_t sequence = 0;
  for (int i = 0; i < 5; ++i) {
    h.submit(1 + i % 3, ++sequence);
    h.step();
  }
  h.checkpoint(0);                 // before the removal: only the log can carry the bar
  for (uint32_t r : {0u, 1u, 2u})  // `lockstep admin` tells every listed replica
    EXPECT_EQ(h.core(r).change_membership(h.now(), MembershipChange::kRemove, ReplicaId{2}), "");
  h.run_for(100 * kMs);
  ASSERT_EQ(h.core(0).members(), (std::vector<ReplicaId>{ReplicaId{0}, ReplicaId{1}}));
  h.crash(0);
  h.restart(0);
  EXPECT_EQ(h.core(0).barred(), std::set<ReplicaId>{ReplicaId{2}})
      << "an operator-removed replica stays barred after a restart";
  h.run_for(20 * kMs);
  // The operator adds it back: that too survives a restart.
  EXPECT_EQ(h.core(0).change_membership(h.now(), MembershipChange::kAdd, ReplicaId{2}), "");
  h.run_for(10 * kMs);
  h.crash(0);
  h.restart(0);
  EXPECT_TRUE(h.core(0).barred().empty());
}

}  // namespace
}  // namespace lockstep::failstop
