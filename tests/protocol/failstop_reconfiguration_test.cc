// Failstop reconfiguration (docs/DESIGN.md §12) at the level of the cores: a replica joins by a
// view change and a state transfer, an operator removes one, a member that lost its state is
// removed and added back. Every member must execute the same sequence, and a joiner exactly the
// part of it that follows the state it loaded.
#include <gtest/gtest.h>

#include "failstop_fixture.h"

namespace lockstep::failstop {
namespace {

using namespace testing;  // NOLINT: the fixture's harness and helpers

// The harness with this file's workload: each call sends from clients 1..7 in turn, starting
// again at client 1 (the scenarios below were written with it).
class ReconfigurationHarness : public FailstopHarness {
 public:
  using FailstopHarness::FailstopHarness;
  void load(uint64_t* sequence, int steps) {
    for (int i = 0; i < steps; ++i) {
      submit(1 + i % 7, ++*sequence);
      step();
    }
  }
};

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
  h.run_until_member(0, 2);
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
