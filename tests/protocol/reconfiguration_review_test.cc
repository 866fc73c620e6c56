// Adversarial review of failstop reconfiguration (docs/DESIGN.md §12): scenarios the lead's tests
// do not cover. The harness is the one of failstop_reconfiguration_test.cc, extended with durable
// replicas (log records kept per replica, restart by recover()), crashes that also lose state
// transfers in flight, and an agreement check that includes halted replicas.
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

class ReviewHarness {
 public:
  // `listed` replicas in the cluster file; the first `members` of them form view 0.
  ReviewHarness(uint32_t listed, uint32_t members, bool durable = false)
      : listed_(listed), durable_(durable) {
    for (uint32_t r = 0; r < members; ++r)
      initial_members_.push_back(ReplicaId{r});
    executed_.resize(listed);
    loaded_at_.assign(listed, 0);
    records_.resize(listed);
    checkpoints_.resize(listed);
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
    options.durable = durable_;
    return options;
  }

  Core& core(uint32_t r) { return *cores_[r]; }
  Now now() const { return Now{now_ns_, 1'000'000 + now_ns_ / 1000}; }

  void flush() {
    for (uint32_t r = 0; r < listed_; ++r) {
      if (!cores_[r]) continue;
      for (OrderedEntry& entry : cores_[r]->take_executable())
        executed_[r].push_back({entry.request.client, entry.request.sequence});
      for (auto& send : cores_[r]->take_messages(now())) {
        if (auto* transfer = std::get_if<StateTransfer>(&send.message)) {
          transfer->protocol_state = cores_[r]->checkpoint_state();
          transfer->service_snapshot = to_bytes(std::to_string(executed_[r].size()));
        }
        queues_[{r, send.to.value}].push_back(std::move(send.message));
      }
      // What a durable runtime does: the step's records go to the log (before its messages
      // leave, which in this harness is the same instant).
      for (auto& record : cores_[r]->take_persist())
        records_[r].push_back(std::move(record));
      cores_[r]->check_invariants();
    }
  }
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
      // A durable joiner checkpoints the loaded state before anything else (Output::loaded_state).
      checkpoints_[to] = core->checkpoint_state();
      records_[to].clear();
      ++loads_;
      return;
    }
    core->on_message(now(), ReplicaId{from}, message);
  }
  void step() {
    now_ns_ += kMs;
    for (auto& core : cores_) {
      if (core) core->tick(now());
    }
    flush();
    for (auto& [pair, queue] : queues_) {
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
  // One request per step, from clients 1..clients in turn.
  void load(uint64_t* sequence, int steps, uint64_t clients = 7) {
    for (int i = 0; i < steps; ++i) {
      ++*sequence;
      submit(1 + *sequence % clients, *sequence);
      step();
    }
  }
  std::string admin(uint32_t at, MembershipChange change, uint32_t replica) {
    return cores_[at]->change_membership(now(), change, ReplicaId{replica});
  }
  // The process dies: whatever was queued to or from it is lost, state transfers included.
  void crash(uint32_t r) {
    cores_[r].reset();
    for (auto& [pair, queue] : queues_) {
      if (pair.first == r || pair.second == r) queue.clear();
    }
    std::erase_if(in_transit_,
                  [&](const InTransit& t) { return t.route.first == r || t.route.second == r; });
  }
  // A new process without state, asking to join.
  void start_joiner(uint32_t r) {
    cores_[r] = std::make_unique<Core>(options_for(r, /*join=*/true));
    executed_[r].clear();
    loaded_at_[r] = 0;
  }
  // Crash and restart from the disk (durable): its checkpoint, if any, and its log after it.
  void restart_durable(uint32_t r) {
    crash(r);
    cores_[r] = std::make_unique<Core>(options_for(r, /*join=*/false));
    cores_[r]->recover(checkpoints_[r], records_[r]);
    // Recovery re-executes everything after the checkpoint: count from there.
    executed_[r].clear();
    if (checkpoints_[r].empty()) loaded_at_[r] = 0;
  }

  // Every replica, halted ones included, executed a stretch of one sequence: the reference's.
  void expect_agreement(uint32_t reference, uint64_t total, bool include_halted = false) {
    const std::vector<Key>& all = executed_[reference];
    EXPECT_EQ(all.size(), total);
    for (uint32_t r = 0; r < listed_; ++r) {
      if (!cores_[r]) continue;
      if (!cores_[r]->serving() && !(include_halted && cores_[r]->halted())) continue;
      const size_t from = loaded_at_[r];
      const size_t common = std::min(executed_[r].size(), all.size() - std::min(from, all.size()));
      EXPECT_TRUE(std::equal(executed_[r].begin(),
                             executed_[r].begin() + static_cast<ptrdiff_t>(common),
                             all.begin() + static_cast<ptrdiff_t>(from)))
          << "replica " << r << " diverges from replica " << reference;
      EXPECT_LE(from + executed_[r].size(), all.size()) << "replica " << r << " is ahead";
      if (cores_[r]->serving()) {
        EXPECT_EQ(from + executed_[r].size(), all.size()) << "replica " << r << " is behind";
      }
    }
  }
  int loads() const { return loads_; }
  // The requests replica r ran, each once, where it first came in its order (what its session
  // table makes of a request ordered twice); for replicas that started from scratch.
  std::vector<Key> effective(uint32_t r) const {
    std::vector<Key> out;
    std::set<Key> seen;
    for (const Key& key : executed_[r]) {
      if (seen.insert(key).second) out.push_back(key);
    }
    return out;
  }

 private:
  uint32_t listed_;
  bool durable_;
  std::vector<ReplicaId> initial_members_;
  uint64_t incarnations_ = 1000;
  std::vector<std::unique_ptr<Core>> cores_;
  std::map<std::pair<uint32_t, uint32_t>, std::deque<ReplicaMessage>> queues_;
  std::vector<std::vector<Key>> executed_;
  std::vector<size_t> loaded_at_;
  std::vector<std::vector<OrderingCore::PersistRecord>> records_;
  std::vector<Bytes> checkpoints_;
  int loads_ = 0;
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

// Runs until `member` has installed the view that adds `joiner` (at most 200 steps).
void until_member(ReviewHarness& h, uint32_t member, uint32_t joiner) {
  for (int i = 0; i < 200 && !h.core(member).is_member(ReplicaId{joiner}); ++i)
    h.step();
}

// The donor (the coordinator of the view that adds J) dies after every member installed the
// view and before it sent the state. The survivors must remove it and carry on; J is a member
// they wait for, so someone else has to give it the state (or J must be removed).
TEST(FailstopReconfigurationReview, TheDonorDiesBeforeSendingTheState) {
  ReviewHarness h(3, 2);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  ASSERT_EQ(h.admin(0, MembershipChange::kAdd, 2), "");
  until_member(h, 1, 2);
  ASSERT_TRUE(h.core(1).is_member(ReplicaId{2}));
  ASSERT_TRUE(h.core(2).awaits_state()) << "J learnt the view and asks the donor, replica 0";
  h.crash(0);
  h.load(&sequence, 10);
  h.run_for(1000 * kMs);
  EXPECT_FALSE(h.core(1).is_member(ReplicaId{0})) << "the dead donor is never removed";
  EXPECT_EQ(h.core(1).pending_entries(), 0u) << "replica 1 executes nothing, forever";
  EXPECT_FALSE(h.core(2).awaits_state()) << "J asks the dead donor, and only it, forever";
  EXPECT_TRUE(h.core(1).serving());
  h.expect_agreement(1, sequence);
}

// A durable member reports for the view that adds J, then restarts (from its disk) before the
// decision reaches it: the decision queued for the old process is lost with it. Nobody tells the
// restarted member about the view; it stays in the old membership, executes without J's
// acknowledgements, ignores J, and J's failure detector eventually removes it although it is
// healthy, after it has executed entries in an order the others do not follow.
TEST(FailstopReconfigurationReview, ADurableMemberRestartedAcrossTheDecisionLearnsIt) {
  ReviewHarness h(4, 3, /*durable=*/true);
  uint64_t sequence = 0;
  h.load(&sequence, 20);
  ASSERT_EQ(h.admin(0, MembershipChange::kAdd, 3), "");
  until_member(h, 0, 3);
  ASSERT_TRUE(h.core(0).is_member(ReplicaId{3}));
  ASSERT_FALSE(h.core(2).is_member(ReplicaId{3})) << "the decision is still on its way to 2";
  h.restart_durable(2);  // back at once: a short restart keeps it a member (§10.3)
  h.load(&sequence, 100, /*clients=*/16);  // some of them owned by the new member
  h.run_for(300 * kMs);
  EXPECT_FALSE(h.core(2).halted()) << "a healthy member was removed";
  for (uint32_t r = 0; r < 4; ++r) {
    EXPECT_EQ(h.core(r).members(), ids({0, 1, 2, 3})) << "replica " << r;
  }
  // What the session tables run (a request ordered twice runs once, where it comes first): every
  // replica that started from scratch, halted ones included, runs a prefix of one sequence.
  const std::vector<Key> reference = h.effective(0);
  EXPECT_EQ(reference.size(), sequence);
  for (uint32_t r = 1; r < 3; ++r) {
    const std::vector<Key> mine = h.effective(r);
    ASSERT_LE(mine.size(), reference.size()) << "replica " << r;
    const auto mismatch = std::mismatch(mine.begin(), mine.end(), reference.begin());
    EXPECT_TRUE(mismatch.first == mine.end())
        << "replica " << r << " runs client " << mismatch.first->first.value << " request "
        << mismatch.first->second.value << " at position " << (mismatch.first - mine.begin())
        << " where replica 0 runs client " << mismatch.second->first.value << " request "
        << mismatch.second->second.value;
  }
}

// Regression (passes): two spares added by one operator command each, at once, while load runs;
// both load, then both order and are awaited.
TEST(FailstopReconfigurationReview, TwoJoinersAtOnce) {
  ReviewHarness h(4, 2);
  h.delay_transfers(7 * kMs);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  ASSERT_EQ(h.admin(0, MembershipChange::kAdd, 2), "");
  ASSERT_EQ(h.admin(1, MembershipChange::kAdd, 3), "");
  h.load(&sequence, 60);
  h.run_for(100 * kMs);
  for (uint32_t r = 0; r < 4; ++r) {
    EXPECT_EQ(h.core(r).members(), ids({0, 1, 2, 3})) << "replica " << r;
    EXPECT_TRUE(h.core(r).serving()) << "replica " << r;
    EXPECT_EQ(h.core(r).pending_entries(), 0u) << "replica " << r;
  }
  h.expect_agreement(0, sequence);
}

// Regression (passes): the joiner's process dies while the state is in flight and a new one
// (another incarnation, no state) asks again; the members answer with the decision and it loads.
TEST(FailstopReconfigurationReview, AJoinerRestartedWhileLoadingLoadsAgain) {
  ReviewHarness h(3, 2);
  h.delay_transfers(30 * kMs);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  ASSERT_EQ(h.admin(0, MembershipChange::kAdd, 2), "");
  until_member(h, 1, 2);
  h.step();
  h.step();
  ASSERT_TRUE(h.core(2).awaits_state());
  h.crash(2);
  h.start_joiner(2);
  h.load(&sequence, 40);
  h.run_for(150 * kMs);
  ASSERT_TRUE(h.core(2).serving());
  EXPECT_EQ(h.core(0).members(), ids({0, 1, 2}));
  for (uint32_t r = 0; r < 3; ++r)
    EXPECT_EQ(h.core(r).pending_entries(), 0u) << "replica " << r;
  h.expect_agreement(0, sequence);
}

// Regression (passes): a durable member restarts while the join is only proposed (before its
// report), then the join completes and everyone agrees.
TEST(FailstopReconfigurationReview, ADurableMemberRestartedDuringTheProposalCatchesUp) {
  ReviewHarness h(4, 3, /*durable=*/true);
  uint64_t sequence = 0;
  h.load(&sequence, 20);
  ASSERT_EQ(h.admin(0, MembershipChange::kAdd, 3), "");
  h.restart_durable(2);  // the ViewChange to it is lost; 0 retries
  h.load(&sequence, 60);
  h.run_for(150 * kMs);
  for (uint32_t r = 0; r < 4; ++r) {
    EXPECT_EQ(h.core(r).members(), ids({0, 1, 2, 3})) << "replica " << r;
    EXPECT_EQ(h.core(r).pending_entries(), 0u) << "replica " << r;
  }
  h.expect_agreement(0, sequence);
}

// Regression (passes): the operator removes the would-be coordinator (replica 0, at every member)
// while the addition of J is being proposed; the next lowest member decides and J loads.
TEST(FailstopReconfigurationReview, TheOperatorRemovesTheCoordinatorDuringAJoin) {
  ReviewHarness h(4, 3);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  ASSERT_EQ(h.admin(1, MembershipChange::kAdd, 3), "");
  for (uint32_t r = 0; r < 3; ++r)
    ASSERT_EQ(h.admin(r, MembershipChange::kRemove, 0), "");
  h.load(&sequence, 40);
  h.run_for(150 * kMs);
  EXPECT_TRUE(h.core(0).halted());
  for (uint32_t r = 1; r < 4; ++r) {
    EXPECT_EQ(h.core(r).members(), ids({1, 2, 3})) << "replica " << r;
    EXPECT_EQ(h.core(r).pending_entries(), 0u) << "replica " << r;
  }
  h.expect_agreement(1, sequence);
}

}  // namespace
}  // namespace lockstep::failstop
