// Adversarial review of the barred set's log record (kBars, docs/DESIGN.md §12.3): a restart from
// the log must rebuild the bars the member held live.
#include <gtest/gtest.h>

#include <set>

#include "failstop_fixture.h"

namespace lockstep::failstop {
namespace {

using namespace testing;  // NOLINT: the fixture's harness and helpers

// The operator's removal reaches replica 0 only (replica 1 was unreachable, say). Replica 1 does
// not bar replica 2, so when 2 asks again replica 1 admits it, and replica 0 installs that
// decision: live, it keeps 2 barred (bars change live only on an operator's word). Its log holds
// kBars{2}, then the view removing 2, then the view adding 2. Replaying that view lifts the bar
// (install(): `if (replaying_) barred_.erase(r)`, a rule from before kBars existed, when the log
// could not carry an operator's add). So the restart silently drops the operator's removal, the
// very thing kBars was added to keep: restarted, replica 0 would admit 2 again where it would not
// have before the restart.
TEST(BarsReview, ARestartFromTheLogKeepsTheBarsTheMemberHeldLive) {
  FailstopHarness h(3, 3, /*durable=*/true);
  uint64_t sequence = 0;
  for (int i = 0; i < 10; ++i) {
    ++sequence;
    h.submit(1 + sequence % 5, sequence);
    h.step();
  }
  ASSERT_EQ(h.admin(0, MembershipChange::kRemove, 2), "");
  h.run_for(400 * kMs);  // 2 halts on the proposal without reporting: removed after its timeout
  ASSERT_EQ(h.core(0).members(), ids({0, 1}));
  h.crash(2);
  h.start_joiner(2);  // asks again; replica 1 admits it
  h.run_until_member(0, 2);
  h.run_for(100 * kMs);
  ASSERT_EQ(h.core(0).members(), ids({0, 1, 2}));
  ASSERT_EQ(h.core(0).barred(), std::set<ReplicaId>{ReplicaId{2}})
      << "live, the operator's bar stays although another member re-added the replica";
  h.restart_durable(0);
  EXPECT_EQ(h.core(0).members(), ids({0, 1, 2}));
  EXPECT_EQ(h.core(0).barred(), std::set<ReplicaId>{ReplicaId{2}})
      << "the restart from the log lost the operator's bar";
}

}  // namespace
}  // namespace lockstep::failstop
