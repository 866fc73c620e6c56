// Failstop reconfiguration (docs/DESIGN.md §12) at the level of the cores: a replica joins by a
// view change and a state transfer, an operator removes one, a member that lost its state is
// removed and added back. Every member must execute the same sequence, and a joiner exactly the
// part of it that follows the state it loaded.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <set>

#include "protocol/failstop/core.h"

namespace lockstep::failstop {
namespace {

constexpr uint64_t kMs = 1'000'000;

using Key = std::pair<ClientId, Sequence>;

class ReconfigurationHarness {
 public:
  // `listed` replicas in the cluster file; the first `members` of them form view 0.
  ReconfigurationHarness(uint32_t listed, uint32_t members) : listed_(listed) {
    for (uint32_t r = 0; r < members; ++r)
      initial_members_.push_back(ReplicaId{r});
    executed_.resize(listed);
    loaded_at_.assign(listed, 0);
    for (uint32_t r = 0; r < listed; ++r)
      cores_.push_back(std::make_unique<Core>(options_for(r, /*join=*/false)));
  }

  Options options_for(uint32_t r, bool join) {
    Options options;
    options.self = ReplicaId{r};
    options.replica_count = listed_;
    options.incarnation = ++incarnations_;
    options.heartbeat_interval_ns = 5 * kMs;
    options.failure_timeout_ns = 100 * kMs;
    options.relay_timeout_ns = 20 * kMs;
    options.view_change_retry_ns = 20 * kMs;
    options.initial_members = initial_members_;
    options.join = join;
    return options;
  }

  Core& core(uint32_t r) { return *cores_[r]; }
  Now now() const { return Now{now_ns_, 1'000'000 + now_ns_ / 1000}; }

  void flush() {
    for (uint32_t r = 0; r < listed_; ++r) {
      if (!cores_[r] || paused_.contains(r)) continue;
      for (OrderedEntry& entry : cores_[r]->take_executable())
        executed_[r].push_back({entry.request.client, entry.request.sequence});
      for (auto& send : cores_[r]->take_messages(now())) {
        if (auto* transfer = std::get_if<StateTransfer>(&send.message)) {
          // What the Replica does: the state of this moment, and how far it had executed.
          transfer->protocol_state = cores_[r]->checkpoint_state();
          transfer->service_snapshot = to_bytes(std::to_string(executed_[r].size()));
        }
        queues_[{r, send.to.value}].push_back(std::move(send.message));
      }
      cores_[r]->check_invariants();
    }
  }
  // State transfers take this long to arrive (a large state on a slow link).
  void delay_transfers(uint64_t ns) { transfer_delay_ns_ = ns; }

  void deliver(uint32_t from, uint32_t to, ReplicaMessage message) {
    Core* core = cores_[to].get();
    if (core == nullptr) return;
    if (auto* transfer = std::get_if<StateTransfer>(&message)) {
      if (!core->awaits_state()) return;
      core->load_state(now(), *transfer);
      const std::string executed(transfer->service_snapshot.begin(),
                                 transfer->service_snapshot.end());
      loaded_at_[to] = std::stoull(executed);
      executed_[to].clear();
      ++loads_;
      return;
    }
    core->on_message(now(), ReplicaId{from}, message);
  }
  // A paused process: it takes no input (what is sent to it waits) and sends nothing.
  void pause(uint32_t r) { paused_.insert(r); }
  void resume(uint32_t r) { paused_.erase(r); }

  void step() {
    now_ns_ += kMs;
    for (uint32_t r = 0; r < listed_; ++r) {
      if (cores_[r] && !paused_.contains(r)) cores_[r]->tick(now());
    }
    flush();
    for (auto& [pair, queue] : queues_) {
      if (paused_.contains(pair.second) || paused_.contains(pair.first)) continue;
      while (!queue.empty()) {
        ReplicaMessage message = std::move(queue.front());
        queue.pop_front();
        if (std::holds_alternative<StateTransfer>(message) && transfer_delay_ns_ != 0) {
          in_transit_.push_back({now_ns_ + transfer_delay_ns_, pair, std::move(message)});
          continue;
        }
        deliver(pair.first, pair.second, std::move(message));
      }
    }
    for (auto it = in_transit_.begin(); it != in_transit_.end();) {
      if (it->arrival_ns > now_ns_) {
        ++it;
        continue;
      }
      deliver(it->route.first, it->route.second, std::move(it->message));
      it = in_transit_.erase(it);
    }
    flush();
  }
  void run_for(uint64_t ns) {
    for (uint64_t t = 0; t < ns; t += kMs)
      step();
  }
  void submit(uint64_t client, uint64_t sequence) {
    const ClientRequest r{ClientId{client}, Sequence{sequence}, Sequence{1}, to_bytes("c"), {}};
    for (auto& core : cores_) {
      if (core && core->serving()) core->on_client_request(now(), r);
    }
  }
  void load(uint64_t* sequence, int steps) {
    for (int i = 0; i < steps; ++i) {
      submit(1 + i % 7, ++*sequence);
      step();
    }
  }
  std::string admin(uint32_t at, MembershipChange change, uint32_t replica) {
    return cores_[at]->change_membership(now(), change, ReplicaId{replica});
  }
  void crash(uint32_t r) {
    cores_[r].reset();
    for (auto& [pair, queue] : queues_) {
      if (pair.first == r || pair.second == r) queue.clear();
    }
  }
  // A new process without state (a wiped disk), asking to join.
  void start_joiner(uint32_t r) {
    cores_[r] = std::make_unique<Core>(options_for(r, /*join=*/true));
    executed_[r].clear();
  }

  // Members execute the same sequence; a joiner, exactly the part after what it loaded.
  void expect_agreement(uint32_t reference, uint64_t total) {
    const std::vector<Key>& all = executed_[reference];
    EXPECT_EQ(all.size(), total);
    for (uint32_t r = 0; r < listed_; ++r) {
      if (!cores_[r] || !cores_[r]->serving()) continue;
      const size_t from = loaded_at_[r];
      ASSERT_LE(from + executed_[r].size(), all.size()) << "replica " << r;
      EXPECT_TRUE(std::equal(executed_[r].begin(), executed_[r].end(),
                             all.begin() + static_cast<ptrdiff_t>(from)))
          << "replica " << r << " diverges from replica " << reference;
      EXPECT_EQ(from + executed_[r].size(), all.size()) << "replica " << r << " is behind";
    }
  }
  int loads() const { return loads_; }

 private:
  uint32_t listed_;
  std::vector<ReplicaId> initial_members_;
  uint64_t incarnations_ = 1000;
  std::vector<std::unique_ptr<Core>> cores_;
  std::map<std::pair<uint32_t, uint32_t>, std::deque<ReplicaMessage>> queues_;
  std::vector<std::vector<Key>> executed_;
  std::vector<size_t> loaded_at_;
  int loads_ = 0;
  std::set<uint32_t> paused_;
  uint64_t now_ns_ = 10 * kMs;
  uint64_t transfer_delay_ns_ = 0;
  struct InTransit {
    uint64_t arrival_ns;
    std::pair<uint32_t, uint32_t> route;
    ReplicaMessage message;
  };
  std::vector<InTransit> in_transit_;
};

std::vector<ReplicaId> ids(std::initializer_list<uint32_t> values) {
  std::vector<ReplicaId> out;
  for (uint32_t v : values)
    out.push_back(ReplicaId{v});
  return out;
}

TEST(FailstopReconfiguration, ASpareIsBarredUntilAnOperatorAddsIt) {
  ReconfigurationHarness h(4, 3);
  EXPECT_TRUE(h.core(3).joining());
  EXPECT_FALSE(h.core(3).serving());
  uint64_t sequence = 0;
  h.load(&sequence, 30);
  h.run_for(100 * kMs);
  EXPECT_EQ(h.core(0).members(), ids({0, 1, 2})) << "a listed spare is not added on its own";
  EXPECT_TRUE(h.core(3).joining());

  EXPECT_EQ(h.admin(0, MembershipChange::kAdd, 3), "");
  h.load(&sequence, 30);
  h.run_for(100 * kMs);
  for (uint32_t r = 0; r < 4; ++r) {
    EXPECT_EQ(h.core(r).members(), ids({0, 1, 2, 3})) << "replica " << r;
    EXPECT_TRUE(h.core(r).serving()) << "replica " << r;
  }
  EXPECT_EQ(h.loads(), 1);
  h.load(&sequence, 30);
  h.run_for(50 * kMs);
  h.expect_agreement(0, sequence);
}

TEST(FailstopReconfiguration, TheNewMemberOrdersRequestsAndItsAcknowledgementsAreAwaited) {
  ReconfigurationHarness h(2, 1);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  EXPECT_EQ(h.admin(0, MembershipChange::kAdd, 1), "");
  h.run_for(100 * kMs);
  ASSERT_TRUE(h.core(1).serving());
  // Some clients are now owned by replica 1: their requests go through its stream.
  h.load(&sequence, 40);
  h.run_for(50 * kMs);
  EXPECT_GT(h.core(1).executed_entries(), 0u);
  int owned_by_new_member = 0;
  for (uint64_t client = 1; client <= 7; ++client)
    owned_by_new_member += h.core(0).owner_of(ClientId{client}) == ReplicaId{1};
  EXPECT_GT(owned_by_new_member, 0);
  h.expect_agreement(0, sequence);
}

TEST(FailstopReconfiguration, AnOperatorRemovesAMemberWhichHalts) {
  ReconfigurationHarness h(3, 3);
  uint64_t sequence = 0;
  h.load(&sequence, 20);
  for (uint32_t r = 0; r < 3; ++r)
    EXPECT_EQ(h.admin(r, MembershipChange::kRemove, 2), "");
  h.load(&sequence, 20);
  h.run_for(50 * kMs);
  EXPECT_TRUE(h.core(2).halted());
  EXPECT_EQ(h.core(0).members(), ids({0, 1}));
  EXPECT_EQ(h.core(1).members(), ids({0, 1}));
  h.expect_agreement(0, sequence);
  EXPECT_EQ(h.admin(0, MembershipChange::kRemove, 2), "replica 2 is not a member");
  EXPECT_EQ(h.admin(0, MembershipChange::kAdd, 7), "no replica 7 in the cluster file");
}

TEST(FailstopReconfiguration, TheLastMemberCannotBeRemoved) {
  ReconfigurationHarness h(2, 2);
  EXPECT_EQ(h.admin(0, MembershipChange::kRemove, 1), "");
  EXPECT_EQ(h.admin(1, MembershipChange::kRemove, 1), "");  // `lockstep admin` asks every member
  h.run_for(50 * kMs);
  ASSERT_EQ(h.core(0).members(), ids({0}));
  EXPECT_EQ(h.admin(0, MembershipChange::kRemove, 0), "cannot remove the last member");
  EXPECT_EQ(h.admin(0, MembershipChange::kAdd, 0), "replica 0 is already a member");
}

TEST(FailstopReconfiguration, AnOutOfDateReplicaCannotRemoveTheOthersOnAnOperatorsWord) {
  // Replica 2 is paused long enough to be removed. On waking, the first thing it handles is an
  // operator's request to remove the two others: it must not form a view of its own.
  ReconfigurationHarness h(3, 3);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  h.pause(2);
  h.load(&sequence, 10);
  h.run_for(200 * kMs);
  ASSERT_EQ(h.core(0).members(), ids({0, 1}));
  h.resume(2);
  EXPECT_EQ(h.admin(2, MembershipChange::kRemove, 0), "");
  EXPECT_EQ(h.admin(2, MembershipChange::kRemove, 1), "");
  h.run_for(50 * kMs);
  EXPECT_TRUE(h.core(2).halted()) << "it learns it was removed instead";
  EXPECT_EQ(h.core(2).members(), ids({0, 1, 2}));
  EXPECT_EQ(h.core(0).members(), ids({0, 1}));
  h.load(&sequence, 10);
  h.run_for(50 * kMs);
  h.expect_agreement(0, sequence);
}

TEST(FailstopReconfiguration, AReplicaRemovedByAnOperatorIsNotAddedBackWhenItAsks) {
  ReconfigurationHarness h(3, 3);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  for (uint32_t r = 0; r < 3; ++r)
    h.admin(r, MembershipChange::kRemove, 2);
  h.run_for(50 * kMs);
  h.start_joiner(2);
  h.run_for(200 * kMs);
  EXPECT_EQ(h.core(0).members(), ids({0, 1}));
  EXPECT_TRUE(h.core(2).joining());
  h.admin(0, MembershipChange::kAdd, 2);
  h.load(&sequence, 10);
  h.run_for(100 * kMs);
  EXPECT_EQ(h.core(0).members(), ids({0, 1, 2}));
  EXPECT_TRUE(h.core(2).serving());
  h.load(&sequence, 10);
  h.run_for(50 * kMs);
  h.expect_agreement(0, sequence);
}

TEST(FailstopReconfiguration, AMemberThatLostItsStateIsRemovedThenAddedBack) {
  ReconfigurationHarness h(3, 3);
  uint64_t sequence = 0;
  h.load(&sequence, 20);
  h.crash(1);
  h.start_joiner(1);  // back at once, wiped, well before the failure timeout
  h.load(&sequence, 20);
  h.run_for(150 * kMs);
  EXPECT_TRUE(h.core(1).serving());
  EXPECT_EQ(h.core(0).members(), ids({0, 1, 2}));
  EXPECT_GE(h.core(0).view(), ViewNumber{2}) << "removed (one view), then added (another)";
  h.load(&sequence, 20);
  h.run_for(50 * kMs);
  h.expect_agreement(0, sequence);
}

TEST(FailstopReconfiguration, AJoinerThatDiesWhileLoadingIsRemovedAndTheRestCarryOn) {
  ReconfigurationHarness h(3, 2);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  h.admin(0, MembershipChange::kAdd, 2);
  // Run until the view that adds it is installed, then kill it before it loads.
  for (int i = 0; i < 200 && !h.core(0).is_member(ReplicaId{2}); ++i)
    h.step();
  ASSERT_TRUE(h.core(0).is_member(ReplicaId{2}));
  h.crash(2);
  h.load(&sequence, 10);
  h.run_for(300 * kMs);
  EXPECT_EQ(h.core(0).members(), ids({0, 1}));
  EXPECT_EQ(h.core(0).pending_entries(), 0u) << "execution resumed after its removal";
  h.expect_agreement(0, sequence);
}

TEST(FailstopReconfiguration, EntriesOrderedWhileTheJoinerLoadsReachIt) {
  // Members broadcast to the new member from the moment they install the view, while it still
  // ignores everything but its state: they resend their unexecuted entries once it speaks.
  ReconfigurationHarness h(3, 2);
  h.delay_transfers(15 * kMs);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  h.admin(0, MembershipChange::kAdd, 2);
  h.load(&sequence, 60);
  h.run_for(50 * kMs);
  ASSERT_TRUE(h.core(2).serving());
  for (uint32_t r = 0; r < 3; ++r)
    EXPECT_EQ(h.core(r).pending_entries(), 0u) << "replica " << r;
  h.expect_agreement(0, sequence);
}

}  // namespace
}  // namespace lockstep::failstop
