#include "replica/replica.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "apps/kv/kv_machine.h"
#include "core/hlc.h"

namespace lockstep {
namespace {

constexpr ReplicaId kSelf{0};
constexpr ReplicaId kPeer{1};
constexpr uint64_t kStartWallUs = 1'000'000;

Bytes incr(const std::string& key) {
  kv::Command command;
  command.op = kv::Op::kIncr;
  command.key = key;
  command.delta = 1;
  return kv::encode_command(command);
}

// Replica 0 of a two-replica failstop cluster. Replica 1 is played by the test: entries of
// replica 0 execute only once replica 1's update says it holds them and its clock passed them,
// so until the test sends that update every ordered request stays pending.
class ReplicaTest : public ::testing::Test {
 protected:
  static ReplicaLimits pending_limit(size_t pending_requests_max) {
    ReplicaLimits limits;
    limits.pending_requests_max = pending_requests_max;
    return limits;
  }
  void make(ReplicaLimits limits) {
    failstop::Options options;
    options.self = kSelf;
    options.replica_count = 2;
    options.incarnation = 1000;
    replica_ = std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>(), limits);
  }

  Now now() const { return Now{wall_us_ * 1000, wall_us_}; }

  // The n-th client (from 1) whose owner is replica 0, so that replica 0 orders its requests.
  ClientId owned_client(int n) const {
    for (uint64_t id = 1;; ++id) {
      if (replica_->failstop_core()->owner_of(ClientId{id}) == kSelf && --n == 0) {
        return ClientId{id};
      }
    }
  }

  std::vector<ClientReply> request(ClientId client, uint64_t sequence) {
    replica_->on_client_request(
        now(), ClientRequest{client, Sequence{sequence}, Sequence{1}, incr("n"), {}});
    return replica_->take_output().to_clients;
  }

  // Replica 1 reports that it holds the first `held` entries of replica 0's stream and that its
  // clock is past everything replica 0 stamped so far.
  std::vector<ClientReply> peer_holds(uint64_t held) {
    ReplicaUpdate update;
    update.sender = kPeer;
    update.incarnation = 2000;
    update.clock = replica_->failstop_core()->clock() + 1;
    update.received = {held, 0};
    replica_->on_peer_message(now(), kPeer, update);
    return replica_->take_output().to_clients;
  }

  std::unique_ptr<Replica> replica_;
  uint64_t wall_us_ = kStartWallUs;
};

TEST_F(ReplicaTest, AtThePendingLimitNewRequestsAreAnsweredBusyAndNotQueued) {
  make(pending_limit(2));
  const ClientId alice = owned_client(1);
  const ClientId bob = owned_client(2);

  EXPECT_TRUE(request(alice, 1).empty());
  EXPECT_TRUE(request(alice, 2).empty());
  EXPECT_EQ(replica_->core().pending_entries(), 2u);

  std::vector<ClientReply> refused = request(bob, 1);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].client, bob);
  EXPECT_EQ(refused[0].sequence, Sequence{1});
  EXPECT_EQ(refused[0].status, ReplyStatus::kBusy);
  EXPECT_TRUE(refused[0].result.empty());
  EXPECT_EQ(replica_->core().pending_entries(), 2u);  // not passed to the core
  EXPECT_EQ(replica_->busy_replies(), 1u);

  // Once the pending entries execute there is room again.
  std::vector<ClientReply> replies = peer_holds(2);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(replies[0].status, ReplyStatus::kOk);
  EXPECT_EQ(replica_->core().pending_entries(), 0u);
  EXPECT_TRUE(request(bob, 1).empty());
  EXPECT_EQ(replica_->core().pending_entries(), 1u);
  ASSERT_EQ(peer_holds(3).size(), 1u);
  EXPECT_EQ(replica_->service().executed_count(), 3u);
}

TEST_F(ReplicaTest, RetriesOfExecutedRequestsAreAnsweredEvenAtTheLimit) {
  make(pending_limit(1));
  const ClientId alice = owned_client(1);
  request(alice, 1);
  ASSERT_EQ(peer_holds(1).size(), 1u);
  request(alice, 2);  // fills the one pending slot
  EXPECT_EQ(replica_->core().pending_entries(), 1u);

  std::vector<ClientReply> retry = request(alice, 1);
  ASSERT_EQ(retry.size(), 1u);
  EXPECT_EQ(retry[0].status, ReplyStatus::kOk);
  EXPECT_FALSE(retry[0].result.empty());
  EXPECT_EQ(replica_->busy_replies(), 0u);
}

TEST_F(ReplicaTest, DefaultLimitDoesNotRefuseOrdinaryLoad) {
  make(ReplicaLimits{});
  const ClientId alice = owned_client(1);
  for (uint64_t s = 1; s <= 1000; ++s) {
    EXPECT_TRUE(request(alice, s).empty()) << s;
  }
  EXPECT_EQ(replica_->busy_replies(), 0u);
  EXPECT_EQ(peer_holds(1000).size(), 1000u);
}

TEST_F(ReplicaTest, SessionsExpireOnTheOrderTimeOfTheEntries) {
  ReplicaLimits limits;
  limits.service.session_idle_expiry_us = 5'000;
  make(limits);
  const ClientId alice = owned_client(1);
  const ClientId bob = owned_client(2);

  request(alice, 1);
  ASSERT_EQ(peer_holds(1).size(), 1u);
  // The order time is the HLC timestamp's physical part: the wall time the request was stamped.
  const std::optional<uint64_t> stamped = replica_->service().last_activity_us(alice);
  ASSERT_TRUE(stamped.has_value());
  EXPECT_GE(*stamped, kStartWallUs);
  EXPECT_LT(*stamped, kStartWallUs + 10);

  wall_us_ += 5'000;  // exactly the expiry: Alice stays
  request(bob, 1);
  ASSERT_EQ(peer_holds(2).size(), 1u);
  EXPECT_TRUE(replica_->service().last_activity_us(alice).has_value());

  wall_us_ += 1'000;  // now past it
  request(bob, 2);
  ASSERT_EQ(peer_holds(3).size(), 1u);
  EXPECT_FALSE(replica_->service().last_activity_us(alice).has_value());
  EXPECT_EQ(replica_->service().session_count(), 1u);
}

TEST_F(ReplicaTest, OrderTimeOfAFailstopEntryIsThePhysicalPartOfItsClock) {
  make(ReplicaLimits{});
  OrderedEntry entry;
  entry.timestamp.clock = HybridClock::from_wall_us(123'456) + 77;  // + a logical counter
  EXPECT_EQ(replica_->order_time_us(entry), 123'456u);
}

}  // namespace
}  // namespace lockstep
