// Adversarial review of failstop reconfiguration (docs/DESIGN.md §12): scenarios the lead's tests
// do not cover. The harness (failstop_fixture.h) is shared with failstop_reconfiguration_test.cc;
// these scenarios use its durable replicas (log records kept per replica, restart by recover()),
// crashes that also lose state transfers in flight, and its agreement check of halted replicas.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "failstop_fixture.h"

namespace lockstep::failstop {
namespace {

using namespace testing;  // NOLINT: the fixture's harness and helpers

// The harness with this file's workload: one request per step, from client 1 + sequence % clients.
class ReviewHarness : public FailstopHarness {
 public:
  using FailstopHarness::FailstopHarness;
  void load(uint64_t* sequence, int steps, uint64_t clients = 7) {
    for (int i = 0; i < steps; ++i) {
      ++*sequence;
      submit(1 + *sequence % clients, *sequence);
      step();
    }
  }
};

// The donor (the coordinator of the view that adds J) dies after every member installed the
// view and before it sent the state. The survivors must remove it and carry on; J is a member
// they wait for, so someone else has to give it the state (or J must be removed).
TEST(FailstopReconfigurationReview, TheDonorDiesBeforeSendingTheState) {
  ReviewHarness h(3, 2);
  uint64_t sequence = 0;
  h.load(&sequence, 10);
  ASSERT_EQ(h.admin(0, MembershipChange::kAdd, 2), "");
  h.run_until_member(1, 2);
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
  h.run_until_member(0, 3);
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
  h.run_until_member(1, 2);
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
