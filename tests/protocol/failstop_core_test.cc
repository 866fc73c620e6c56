// The failstop core driven by hand: scripted deliveries on FIFO channels and a fake clock, each
// test a short transcript of inputs and the outputs they must produce.
#include <gtest/gtest.h>

#include <deque>
#include <map>

#include "protocol/failstop/core.h"

namespace lockstep::failstop {
namespace {

constexpr uint64_t kMs = 1'000'000;

ClientRequest request(uint64_t client, uint64_t sequence) {
  return ClientRequest{ClientId{client}, Sequence{sequence}, Sequence{1}, to_bytes("cmd"), {}};
}

// n cores with one FIFO queue per ordered pair; nothing moves unless the test says so.
class Harness {
 public:
  explicit Harness(uint32_t n, uint64_t failure_timeout_ns = 100 * kMs) {
    for (uint32_t r = 0; r < n; ++r) {
      Options options;
      options.self = ReplicaId{r};
      options.replica_count = n;
      options.incarnation = 1000 + r;
      options.heartbeat_interval_ns = 5 * kMs;
      options.failure_timeout_ns = failure_timeout_ns;
      options.relay_timeout_ns = 20 * kMs;
      cores_.emplace_back(options);
    }
    executed_.resize(n);
  }

  Core& core(uint32_t r) { return cores_[r]; }
  Now now() const { return Now{now_ns_, 1'000'000 + now_ns_ / 1000}; }
  void advance(uint64_t ns) { now_ns_ += ns; }

  // Collects every core's output into the channel queues (crashed cores produce nothing).
  void flush() {
    for (uint32_t r = 0; r < cores_.size(); ++r) {
      if (crashed_.count(r)) continue;
      for (Core::Send& send : cores_[r].take_messages(now())) {
        queues_[{r, send.to.value}].push_back(std::move(send.message));
      }
      for (OrderedEntry& entry : cores_[r].take_executable())
        executed_[r].push_back(entry);
      cores_[r].check_invariants();
    }
  }
  // Delivers everything queued from `from` to `to`, in order.
  void deliver(uint32_t from, uint32_t to) {
    auto& queue = queues_[{from, to}];
    while (!queue.empty()) {
      ReplicaMessage message = std::move(queue.front());
      queue.pop_front();
      if (!crashed_.count(to)) cores_[to].on_message(now(), ReplicaId{from}, message);
    }
  }
  size_t queued(uint32_t from, uint32_t to) { return queues_[{from, to}].size(); }
  void drop(uint32_t from, uint32_t to) { queues_[{from, to}].clear(); }
  // Delivers everything, flushing between rounds, until the network is quiet.
  void settle(int rounds = 6) {
    for (int i = 0; i < rounds; ++i) {
      flush();
      for (uint32_t a = 0; a < cores_.size(); ++a) {
        for (uint32_t b = 0; b < cores_.size(); ++b) {
          if (a != b) deliver(a, b);
        }
      }
    }
    flush();
  }
  void tick_all() {
    for (uint32_t r = 0; r < cores_.size(); ++r) {
      if (!crashed_.count(r)) cores_[r].tick(now());
    }
  }
  // Time passes in 1 ms steps with ticks and full delivery.
  void run_for(uint64_t ns) {
    for (uint64_t t = 0; t < ns; t += kMs) {
      advance(kMs);
      tick_all();
      settle(1);
    }
  }
  void crash(uint32_t r) { crashed_.insert(r); }
  void revive(uint32_t r) { crashed_.erase(r); }  // a pause, seen from outside, ends
  const std::vector<OrderedEntry>& executed(uint32_t r) const { return executed_[r]; }

 private:
  std::vector<Core> cores_;
  std::map<std::pair<uint32_t, uint32_t>, std::deque<ReplicaMessage>> queues_;
  std::vector<std::vector<OrderedEntry>> executed_;
  std::set<uint32_t> crashed_;
  uint64_t now_ns_ = 10 * kMs;
};

uint32_t owner(Harness& h, uint64_t client) {
  return h.core(0).owner_of(ClientId{client}).value;
}

TEST(FailstopCore, EntryWaitsForStabilityAndUniformReceipt) {
  Harness h(3);
  const uint64_t client = 7;
  const uint32_t o = owner(h, client);
  const uint32_t a = (o + 1) % 3, b = (o + 2) % 3;
  h.core(o).on_client_request(h.now(), request(client, 1));
  h.flush();
  EXPECT_TRUE(h.executed(o).empty()) << "the owner alone must not execute";
  // Only `a` receives the entry; `b` hears nothing yet, so nobody may execute.
  h.deliver(o, a);
  h.flush();
  h.deliver(a, o);
  h.flush();
  EXPECT_TRUE(h.executed(o).empty()) << "b neither acknowledged it nor passed its timestamp";
  EXPECT_TRUE(h.executed(a).empty());
  // Once everyone has the entry and has answered, all execute it.
  h.settle();
  for (uint32_t r : {o, a, b}) {
    ASSERT_EQ(h.executed(r).size(), 1u) << "replica " << r;
    EXPECT_EQ(h.executed(r)[0].request, request(client, 1));
  }
}

TEST(FailstopCore, HeartbeatsMakeIdleReplicasPassStability) {
  Harness h(2);
  const uint32_t o = owner(h, 1);
  h.core(o).on_client_request(h.now(), request(1, 1));
  h.settle();
  EXPECT_EQ(h.executed(o).size(), 1u);
  EXPECT_EQ(h.executed(1 - o).size(), 1u);
  // With no traffic, heartbeats still flow (null requests carrying the clock).
  h.flush();
  h.drop(0, 1);
  h.drop(1, 0);
  h.advance(6 * kMs);
  h.flush();
  EXPECT_EQ(h.queued(0, 1), 1u);
  EXPECT_EQ(h.queued(1, 0), 1u);
}

TEST(FailstopCore, AllReplicasExecuteInTimestampOrder) {
  Harness h(3);
  for (uint64_t c = 1; c <= 12; ++c) {
    for (uint32_t r = 0; r < 3; ++r)
      h.core(r).on_client_request(h.now(), request(c, 1));
    h.advance(kMs / 3);
    if (c % 4 == 0) h.settle(1);
  }
  h.settle();
  ASSERT_EQ(h.executed(0).size(), 12u);
  for (uint32_t r = 1; r < 3; ++r)
    EXPECT_EQ(h.executed(r), h.executed(0));
  for (size_t i = 1; i < h.executed(0).size(); ++i) {
    EXPECT_LT(h.executed(0)[i - 1].timestamp, h.executed(0)[i].timestamp);
  }
}

TEST(FailstopCore, RequestSentOnlyToANonOwnerIsRelayedAndExecuted) {
  // The client crashes in the middle of its broadcast: only one non-owner got the request.
  Harness h(3);
  const uint64_t client = 11;
  const uint32_t o = owner(h, client);
  const uint32_t holder = (o + 1) % 3;
  h.core(holder).on_client_request(h.now(), request(client, 1));
  h.run_for(10 * kMs);
  EXPECT_TRUE(h.executed(o).empty()) << "not relayed before the relay timeout";
  h.run_for(30 * kMs);
  for (uint32_t r = 0; r < 3; ++r) {
    ASSERT_EQ(h.executed(r).size(), 1u) << "replica " << r;
    EXPECT_EQ(h.executed(r)[0].request.client, ClientId{client});
  }
}

TEST(FailstopCore, CrashedReplicaIsRemovedAndItsEntriesHeldBySomeoneSurvive) {
  Harness h(3);
  const uint64_t client = 5;
  const uint32_t o = owner(h, client);
  const uint32_t a = (o + 1) % 3, b = (o + 2) % 3;
  h.run_for(5 * kMs);
  // The owner orders a request, reaches only `a`, and crashes.
  h.core(o).on_client_request(h.now(), request(client, 1));
  h.flush();
  h.deliver(o, a);
  h.drop(o, b);
  h.crash(o);
  h.run_for(200 * kMs);
  for (uint32_t r : {a, b}) {
    EXPECT_FALSE(h.core(r).is_member(ReplicaId{o})) << "replica " << r;
    EXPECT_EQ(h.core(r).view(), ViewNumber{1});
    ASSERT_EQ(h.executed(r).size(), 1u) << "the entry a held was relayed to b: replica " << r;
    EXPECT_EQ(h.executed(r)[0].request, request(client, 1));
  }
  // The survivors keep serving: a new request of any client executes on both.
  h.core(a).on_client_request(h.now(), request(99, 1));
  h.core(b).on_client_request(h.now(), request(99, 1));
  h.run_for(5 * kMs);
  EXPECT_EQ(h.executed(a).size(), 2u);
  EXPECT_EQ(h.executed(a), h.executed(b));
}

TEST(FailstopCore, EntryHeldByNoSurvivorIsDroppedAndReorderedFromBackup) {
  Harness h(3);
  const uint64_t client = 5;
  const uint32_t o = owner(h, client);
  const uint32_t a = (o + 1) % 3, b = (o + 2) % 3;
  h.run_for(5 * kMs);
  // The client reached every replica, but the owner's ordering reached nobody.
  for (uint32_t r = 0; r < 3; ++r)
    h.core(r).on_client_request(h.now(), request(client, 1));
  h.flush();
  h.drop(o, a);
  h.drop(o, b);
  h.crash(o);
  h.run_for(200 * kMs);
  for (uint32_t r : {a, b}) {
    ASSERT_EQ(h.executed(r).size(), 1u) << "a survivor re-orders it from its copy: " << r;
    EXPECT_NE(h.executed(r)[0].timestamp.source, ReplicaId{o});
  }
  EXPECT_EQ(h.executed(a), h.executed(b));
}

TEST(FailstopCore, RemovedReplicaHaltsWhenItHearsOfIt) {
  Harness h(3, 50 * kMs);
  h.run_for(5 * kMs);
  h.crash(2);  // silent long enough to be removed (a long pause)...
  h.run_for(100 * kMs);
  ASSERT_FALSE(h.core(0).is_member(ReplicaId{2}));
  EXPECT_FALSE(h.core(2).halted());
  h.revive(2);
  // ...then it speaks again: the others answer with the decision, and it halts.
  Harness& cluster = h;
  cluster.core(0).on_message(
      h.now(), ReplicaId{2},
      ReplicaUpdate{ReplicaId{2}, 1002, false, ViewNumber{0}, 1, {}, {0, 0, 0}});
  h.flush();
  h.deliver(0, 2);
  EXPECT_TRUE(h.core(2).halted());
}

TEST(FailstopCore, RestartedPeerWithNewIncarnationIsTreatedAsFailed) {
  Harness h(3);
  h.run_for(5 * kMs);
  h.core(0).on_message(
      h.now(), ReplicaId{1},
      ReplicaUpdate{
          ReplicaId{1}, 4242, false, ViewNumber{0}, h.core(1).clock() + 100, {}, {0, 0, 0}});
  h.flush();
  h.crash(1);
  h.run_for(20 * kMs);
  EXPECT_FALSE(h.core(0).is_member(ReplicaId{1}));
  EXPECT_FALSE(h.core(2).is_member(ReplicaId{1}));
}

// A replica process that restarted (no disk in this mode) must find out that it is the one that
// lost its state, and halt, rather than suspect the healthy peers or count their
// acknowledgements of its old stream.
TEST(FailstopCore, RestartedReplicaHaltsWhenAPeerHoldsMoreOfItsStream) {
  Harness h(3);
  Options options;
  options.self = ReplicaId{1};
  options.replica_count = 3;
  options.incarnation = 777;  // the new process
  Core restarted(options);
  restarted.on_message(
      h.now(), ReplicaId{0},
      ReplicaUpdate{ReplicaId{0}, 1000, false, ViewNumber{0}, 5000, {}, {0, 100, 0}});
  EXPECT_TRUE(restarted.halted());
}

TEST(FailstopCore, RestartedReplicaHaltsOnAStreamItNeverSawStart) {
  Harness h(3);
  Options options;
  options.self = ReplicaId{1};
  options.replica_count = 3;
  options.incarnation = 777;
  Core restarted(options);
  OrderedEntry entry{500, Timestamp{4000, ReplicaId{0}}, request(1, 1)};
  restarted.on_message(
      h.now(), ReplicaId{0},
      ReplicaUpdate{ReplicaId{0}, 1000, false, ViewNumber{0}, 5000, {entry}, {500, 0, 0}});
  EXPECT_TRUE(restarted.halted());
  EXPECT_TRUE(restarted.take_messages(h.now()).empty()) << "it must not propose any view";
}

TEST(FailstopCore, SingleSurvivorKeepsServing) {
  Harness h(3);
  h.run_for(5 * kMs);
  h.crash(1);
  h.crash(2);
  h.run_for(200 * kMs);
  EXPECT_EQ(h.core(0).members(), std::vector<ReplicaId>{ReplicaId{0}});
  h.core(0).on_client_request(h.now(), request(3, 1));
  h.run_for(2 * kMs);
  EXPECT_EQ(h.executed(0).size(), 1u);
}

TEST(FailstopCore, OwnPauseDoesNotMakeEveryoneLookFailed) {
  Harness h(3);
  h.run_for(5 * kMs);
  h.advance(500 * kMs);  // this whole process froze; nobody ticked
  h.core(0).tick(h.now());
  h.flush();
  EXPECT_EQ(h.core(0).members().size(), 3u);
}

TEST(FailstopCore, PlantedExecuteBeforeStableExecutesAlone) {
  Harness h(3);
  Options options;
  options.self = ReplicaId{0};
  options.replica_count = 3;
  options.planted.execute_before_stable = true;
  Core core(options);
  ClientId client{1};
  while (core.owner_of(client) != ReplicaId{0})
    client = ClientId{client.value + 1};
  core.on_client_request(Now{1, 1}, ClientRequest{client, Sequence{1}, Sequence{1}, {}, {}});
  EXPECT_EQ(core.take_executable().size(), 1u);
}

}  // namespace
}  // namespace lockstep::failstop
