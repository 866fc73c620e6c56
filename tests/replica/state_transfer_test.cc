// State transfers between Replicas (docs/DESIGN.md §12, §11.7, §12.6): a failstop spare joining,
// a byzantine replica catching up, whole and in pieces, with slow, faulty and dead donors. Tests
// marked "found by review" failed before the fix they name.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../protocol/byzantine_fixture.h"
#include "apps/kv/kv_machine.h"
#include "replica/replica.h"

namespace lockstep {
namespace {

using byzantine::testing::at;
using byzantine::testing::ByzantineFixture;

constexpr uint64_t kCheckpointIntervalUs = 50'000;

Bytes put_command(const std::string& key, size_t value_bytes) {
  kv::Command command;
  command.op = kv::Op::kPut;
  command.key = key;
  command.value.assign(value_bytes, 'v');
  return kv::encode_command(command);
}

// Three byzantine Replicas (t = 1) on an instant network, as in byzantine_catch_up_test.cc;
// replica 2 restarts without its state. Replica 1 may be made faulty towards replica 2.
class ByzantineCatchUp : public ByzantineFixture {
 protected:
  std::unique_ptr<Replica> make(uint32_t self, bool join) const {
    byzantine::Options options = options_for(self);
    options.checkpoint_interval_us = kCheckpointIntervalUs;
    options.join = join;
    ReplicaLimits limits;
    limits.state_chunks.chunk_bytes = chunk_bytes_;
    return std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>(), limits);
  }

  void start() {
    for (uint32_t r = 0; r < 3; ++r)
      replicas_.push_back(make(r, false));
  }

  void deliver(uint32_t from, uint32_t to, ReplicaMessage message) {
    if (const auto* chunk = std::get_if<StateChunk>(&message); chunk != nullptr && to == 2) {
      first_pieces_to_joiner_ += chunk->offset == 0 ? 1 : 0;
    }
    if (faulty_ && from == 1 && to == 2) {
      // The faulty replica never serves the real snapshot: its own answer would replace the
      // transfer it is feeding the joiner.
      if (std::holds_alternative<StateChunk>(message) ||
          std::holds_alternative<StateTransfer>(message)) {
        return;
      }
    }
    if (faulty_ && from == 2 && to == 1) {
      if (const auto* ask = std::get_if<StateChunkRequest>(&message)) {
        // Every piece asked for, at once: one byte of a transfer it claims is 1 GiB long.
        ++faulty_pieces_;
        replicas_[2]->on_peer_message(at(now_us_), ReplicaId{1},
                                      StateChunk{ask->digest, ask->offset, kFakeTotal, {0x55}});
        return;
      }
    }
    replicas_[to]->on_peer_message(at(now_us_), ReplicaId{from}, std::move(message));
    if (faulty_ && to == 2 && !faulty_offered_ && replicas_[2]->core().awaits_state()) {
      // The moment the joiner has a target, before any honest answer can arrive: an offer of its
      // own (nobody asked replica 1 yet; the joiner takes a first piece from anyone).
      faulty_offered_ = true;
      replicas_[2]->on_peer_message(at(now_us_), ReplicaId{1},
                                    StateChunk{Digest{}, 0, kFakeTotal, {0x55}});
    }
  }

  void step() {
    now_us_ += 1'000;
    for (auto& replica : replicas_)
      replica->tick(at(now_us_));
    for (int round = 0; round < 4; ++round) {
      for (uint32_t r = 0; r < 3; ++r) {
        Replica::Output out = replicas_[r]->take_output();
        loaded_ |= r == 2 && out.loaded_state;
        for (auto& send : out.to_peers)
          deliver(r, send.to.value, std::move(send.message));
      }
    }
  }

  void put(const std::string& key, size_t value_bytes) {
    ClientRequest signed_request = request(1, ++sequence_, "");
    signed_request.command = put_command(key, value_bytes);
    crypto::sign_request(*client_signer_, signed_request);
    for (auto& replica : replicas_)
      replica->on_client_request(at(now_us_), signed_request);
  }

  // Fills the service, restarts replica 2 without state, and runs with load for `puts` more
  // requests (5 ms apart) or until it has loaded.
  void restart_and_run(int puts) {
    start();
    for (int i = 0; i < 40; ++i) {
      put("k" + std::to_string(i), 100);
      for (int s = 0; s < 5; ++s)
        step();
    }
    replicas_[2] = make(2, true);
    for (int i = 40; i < 40 + puts && !loaded_; ++i) {
      put("k" + std::to_string(i % 60), 100);
      for (int s = 0; s < 5; ++s)
        step();
    }
  }

  static constexpr uint64_t kFakeTotal = uint64_t{1} << 30;
  size_t chunk_bytes_ = 256;
  bool faulty_ = false;
  bool faulty_offered_ = false;
  uint64_t faulty_pieces_ = 0;
  uint64_t first_pieces_to_joiner_ = 0;  // transfers started (or restarted) towards replica 2
  std::vector<std::unique_ptr<Replica>> replicas_;
  uint64_t now_us_ = 1'000'000;
  uint64_t sequence_ = 0;
  bool loaded_ = false;
};

TEST_F(ByzantineCatchUp, ARestartedReplicaLoadsASnapshotSentInPiecesAndExecutesAlike) {
  restart_and_run(/*puts=*/360);
  ASSERT_TRUE(loaded_) << "no snapshot loaded";
  EXPECT_TRUE(replicas_[2]->serving());
  EXPECT_GT(first_pieces_to_joiner_, 0u) << "a snapshot of several KiB in pieces of 256 bytes";
  EXPECT_EQ(replicas_[2]->rejected_state_transfers(), 0u);
  for (int i = 0; i < 20; ++i) {
    put("after" + std::to_string(i), 50);
    for (int s = 0; s < 5; ++s)
      step();
  }
  for (int s = 0; s < 200; ++s)
    step();  // past every decision time
  EXPECT_EQ(replicas_[2]->service().digest(), replicas_[0]->service().digest());
  EXPECT_EQ(replicas_[1]->service().digest(), replicas_[0]->service().digest());
  EXPECT_EQ(replicas_[2]->service().executed_count(), replicas_[0]->service().executed_count());
}

// Found by review: a snapshot that takes longer than one checkpoint interval to send. At each new
// boundary the joiner asks for the newer one; the transfer under way must go on (the donor keeps
// it) and still be loadable (the core accepts any boundary vouched for since its start), or a
// large snapshot never arrives.
TEST_F(ByzantineCatchUp, ASnapshotSlowerThanTheCheckpointIntervalIsEventuallyLoaded) {
  chunk_bytes_ = 16;  // ~5 KiB of snapshot in 16-byte pieces: several intervals of 50 ms
  restart_and_run(/*puts=*/400);  // 2 s: 40 checkpoint intervals
  EXPECT_TRUE(loaded_) << "the transfer restarts at every boundary and never completes: "
                       << first_pieces_to_joiner_ << " first pieces sent to the joiner, "
                       << replicas_[2]->rejected_state_transfers() << " transfers refused";
  EXPECT_TRUE(replicas_[2]->serving());
}

// Control for the test above: the same run with pieces large enough to finish within an
// interval loads (so the failure above is the interval, not the harness).
TEST_F(ByzantineCatchUp, ControlASnapshotFasterThanTheIntervalLoads) {
  chunk_bytes_ = 1024;
  restart_and_run(/*puts=*/400);
  EXPECT_TRUE(loaded_);
}

// Found by review: one faulty replica (t = 1) offers a "snapshot" the moment the joiner has a
// target, unasked, and answers every request at once with one byte of a transfer it claims is
// 1 GiB. The joiner takes whole pieces only and assembles each donor's transfer on its own, so the
// honest donor's goes on and is loaded (§11.7: up to t faulty replicas cannot stop a catch-up).
TEST_F(ByzantineCatchUp, AFaultyReplicaFeedingOneByteAtATimeDoesNotHoldUpCatchUpForever) {
  faulty_ = true;
  restart_and_run(/*puts=*/400);  // 2 s
  EXPECT_TRUE(faulty_offered_);
  EXPECT_TRUE(loaded_) << "the joiner took " << faulty_pieces_
                       << " one-byte pieces from the faulty replica and never the honest offer";
  EXPECT_LT(replicas_[2]->state_bytes_arriving(), 1u << 20);
}

// ---- failstop --------------------------------------------------------------------------------

// A KvMachine that counts its snapshots.
class CountingKv : public StateMachine {
 public:
  explicit CountingKv(uint64_t* snapshots) : snapshots_(snapshots) {}
  Bytes apply(std::span<const uint8_t> command) override { return inner_.apply(command); }
  Bytes snapshot() const override {
    ++*snapshots_;
    return inner_.snapshot();
  }
  void restore(std::span<const uint8_t> snapshot) override { inner_.restore(snapshot); }

 private:
  uint64_t* snapshots_;
  kv::KvMachine inner_;
};

// Two listed failstop replicas, as JoinTest in replica_test.cc: 0 the member, 1 the spare.
class FailstopJoin : public ::testing::Test {
 protected:
  void make(const ReplicaLimits& limits) {
    replicas_.clear();
    for (uint32_t r = 0; r < 2; ++r) {
      failstop::Options options;
      options.self = ReplicaId{r};
      options.replica_count = 2;
      options.incarnation = 3000 + r;
      options.initial_members = {ReplicaId{0}};
      replicas_.push_back(
          std::make_unique<Replica>(options, std::make_unique<CountingKv>(&snapshots_[r]), limits));
    }
  }
  Now now() const { return Now{wall_us_ * 1000, wall_us_}; }
  void run(int steps) {
    for (int i = 0; i < steps; ++i) {
      wall_us_ += 1000;
      for (auto& replica : replicas_)
        replica->tick(now());
      for (uint32_t r = 0; r < 2; ++r) {
        Replica::Output out = replicas_[r]->take_output();
        loaded_ |= out.loaded_state;
        for (auto& send : out.to_peers) {
          if (const auto* chunk = std::get_if<StateChunk>(&send.message)) {
            ++chunks_;
            largest_chunk_ = std::max(largest_chunk_, chunk->data.size());
          }
          whole_transfers_ += std::holds_alternative<StateTransfer>(send.message) ? 1 : 0;
          replicas_[send.to.value]->on_peer_message(now(), ReplicaId{r}, std::move(send.message));
        }
      }
    }
  }
  void put(uint64_t sequence, size_t value_bytes) {
    replicas_[0]->on_client_request(
        now(), ClientRequest{ClientId{1},
                             Sequence{sequence},
                             Sequence{1},
                             put_command("k" + std::to_string(sequence), value_bytes),
                             {}});
    run(2);
  }
  // The operator adds the spare; runs until it has loaded (at most `steps_max` ms). Returns how
  // long that took, in µs.
  uint64_t add_the_spare_until_loaded(int steps_max) {
    const AdminReply reply =
        replicas_[0]->on_admin(now(), AdminRequest{1, MembershipChange::kAdd, ReplicaId{1}});
    EXPECT_TRUE(reply.accepted) << reply.detail;
    const uint64_t added_at_us = wall_us_;
    for (int step = 0; step < steps_max && !loaded_; step += 10)
      run(10);
    return wall_us_ - added_at_us;
  }
  // The joiner serves, and executes what follows as the member does.
  void check_the_joiner_serves_alike() {
    ASSERT_TRUE(loaded_);
    ASSERT_TRUE(replicas_[1]->serving());
    for (uint64_t s = 1000; s < 1010; ++s)
      put(s, 100);
    run(50);
    EXPECT_EQ(replicas_[1]->service().digest(), replicas_[0]->service().digest());
    EXPECT_EQ(replicas_[1]->core().members().size(), 2u);
    EXPECT_EQ(replicas_[0]->state_transfers_sending(), 0u) << "the donor let go of the state";
  }
  void add_the_spare_and_check_it_serves_alike() {
    add_the_spare_until_loaded(400);
    check_the_joiner_serves_alike();
  }
  std::vector<std::unique_ptr<Replica>> replicas_;
  uint64_t snapshots_[2] = {0, 0};
  uint64_t wall_us_ = 1'000'000;
  bool loaded_ = false;
  uint64_t chunks_ = 0;
  uint64_t whole_transfers_ = 0;
  size_t largest_chunk_ = 0;
};

TEST_F(FailstopJoin, ASpareAddedByAnOperatorLoadsTheMembersStateAndServes) {
  make(ReplicaLimits{});
  for (uint64_t s = 1; s <= 20; ++s)
    put(s, 100);
  add_the_spare_and_check_it_serves_alike();
  EXPECT_EQ(chunks_, 0u) << "a small state goes in one message";
  EXPECT_GE(whole_transfers_, 1u);
}

TEST_F(FailstopJoin, AStateLargerThanAFrameArrivesInPieces) {
  make(ReplicaLimits{});
  for (uint64_t s = 1; s <= 18; ++s)
    put(s, 1 << 20);  // 18 MiB of values: more than one frame (kFrameBytesMax) holds
  add_the_spare_and_check_it_serves_alike();
  EXPECT_GE(chunks_, 18u);
  EXPECT_LE(largest_chunk_, ReplicaLimits{}.state_chunks.chunk_bytes);
  EXPECT_EQ(whole_transfers_, 0u);
  EXPECT_EQ(replicas_[1]->last_loaded_transfer()->donor, ReplicaId{0});
  EXPECT_GT(replicas_[1]->last_loaded_transfer()->service_snapshot_bytes, size_t{18} << 20);
}

TEST_F(FailstopJoin, ATransferSlowerThanTheRetryIntervalStillCompletes) {
  // Pieces of 64 bytes, one per millisecond step: the transfer takes far longer than the
  // joiner's retry interval (view_change_retry_ns, 200 ms). The donor's core answers the joiner's
  // repeated StateRequests once per interval; starting the transfer over each time would never
  // finish it.
  ReplicaLimits limits;
  limits.state_chunks.chunk_bytes = 64;
  make(limits);
  for (uint64_t s = 1; s <= 120; ++s)
    put(s, 200);
  const uint64_t took_us = add_the_spare_until_loaded(3000);
  EXPECT_GT(took_us, 300'000u) << "the transfer outlasted the retry interval";
  EXPECT_GT(chunks_, 200u);
  check_the_joiner_serves_alike();
}

// Found by review: while a transfer in pieces is under way, the donor's core answers the joiner's
// StateRequests once per retry interval (200 ms); the Replica must drop those answers before it
// serializes the whole state again (a full copy and a long step every 200 ms).
TEST_F(FailstopJoin, TheDonorSerializesTheStateOncePerTransferNotOncePerRetry) {
  ReplicaLimits limits;
  limits.state_chunks.chunk_bytes = 32;
  make(limits);
  for (uint64_t s = 1; s <= 240; ++s)
    put(s, 200);
  const uint64_t before = snapshots_[0];
  const uint64_t took_us = add_the_spare_until_loaded(5000);
  ASSERT_TRUE(loaded_);
  ASSERT_GT(took_us, 1'500'000u) << "the transfer lasts several retry intervals";
  EXPECT_LE(snapshots_[0] - before, 2u)
      << "snapshots of the whole service taken by the donor during one transfer of "
      << took_us / 1000 << " ms (" << chunks_ << " pieces)";
}

// Three listed failstop replicas: 0 and 1 members, 2 a spare that joins. Timeouts as a cluster
// file makes them (config.cc: view_change_retry = failure_timeout / 2).
class FailstopDeadDonor : public ::testing::Test {
 protected:
  void make(uint64_t failure_timeout_ns) {
    ReplicaLimits limits;
    limits.state_chunks.chunk_bytes = 64;
    for (uint32_t r = 0; r < 3; ++r) {
      failstop::Options options;
      options.self = ReplicaId{r};
      options.replica_count = 3;
      options.incarnation = 4000 + r;
      options.initial_members = {ReplicaId{0}, ReplicaId{1}};
      options.failure_timeout_ns = failure_timeout_ns;
      options.view_change_retry_ns = failure_timeout_ns / 2;
      replicas_.push_back(
          std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>(), limits));
    }
  }
  Now now() const { return Now{wall_us_ * 1000, wall_us_}; }
  void run(int steps) {
    for (int i = 0; i < steps; ++i) {
      wall_us_ += 1000;
      for (uint32_t r = 0; r < 3; ++r) {
        if (!dead_[r]) replicas_[r]->tick(now());
      }
      for (uint32_t r = 0; r < 3; ++r) {
        if (dead_[r]) continue;
        Replica::Output out = replicas_[r]->take_output();
        loaded_ |= r == 2 && out.loaded_state;
        for (auto& send : out.to_peers) {
          if (dead_[send.to.value]) continue;
          if (std::holds_alternative<StateChunk>(send.message) && send.to.value == 2) {
            ++pieces_from_[r];
          }
          replicas_[send.to.value]->on_peer_message(now(), ReplicaId{r}, std::move(send.message));
        }
      }
    }
  }
  // Fills the service, adds replica 2, and kills replica 0 (the decision's sender, the donor)
  // once it has sent 20 pieces; then runs for 20 s.
  void kill_the_donor_mid_transfer() {
    for (uint64_t s = 1; s <= 120; ++s) {
      kv::Command command;
      command.op = kv::Op::kPut;
      command.key = "k" + std::to_string(s);
      command.value.assign(200, 'v');
      const ClientRequest request{
          ClientId{1}, Sequence{s}, Sequence{1}, kv::encode_command(command), {}};
      replicas_[0]->on_client_request(now(), request);
      replicas_[1]->on_client_request(now(), request);
      run(2);
    }
    run(100);
    for (uint32_t r = 0; r < 2; ++r) {
      const AdminReply reply =
          replicas_[r]->on_admin(now(), AdminRequest{1, MembershipChange::kAdd, ReplicaId{2}});
      ASSERT_TRUE(reply.accepted) << reply.detail;
    }
    for (int i = 0; i < 2000 && pieces_from_[0] < 20; ++i)
      run(1);
    ASSERT_GE(pieces_from_[0], 20u) << "replica 0 sends the state in pieces";
    ASSERT_FALSE(loaded_);
    dead_[0] = true;
    run(20'000);
  }
  std::vector<std::unique_ptr<Replica>> replicas_;
  bool dead_[3] = {false, false, false};
  uint64_t pieces_from_[3] = {0, 0, 0};
  uint64_t wall_us_ = 1'000'000;
  bool loaded_ = false;
};

// Found by review: the donor dies mid-transfer. Re-asking it must not count as progress
// (OrderingCore::state_arriving), or with a retry interval above the stall time (any
// failure_timeout over 1 s) the joiner never moves on to another member, and the view change that
// would remove the dead donor waits for the joiner's report: the cluster would stop for good.
TEST_F(FailstopDeadDonor, ADonorThatDiesMidTransferIsAbandonedForAnotherMember) {
  make(/*failure_timeout_ns=*/2'000'000'000);
  kill_the_donor_mid_transfer();
  EXPECT_TRUE(loaded_) << "the joiner asked the dead donor for 20 s; pieces from replica 1: "
                       << pieces_from_[1];
  EXPECT_TRUE(replicas_[2]->serving());
  EXPECT_FALSE(replicas_[1]->core().members().front() == ReplicaId{0})
      << "the dead donor is never removed";
}

// Control: with a retry interval below stall_ns (failure_timeout 400 ms, retry 200 ms) the core
// moves on between two re-asks, and the same run loads from replica 1.
TEST_F(FailstopDeadDonor, ControlWithAShortRetryIntervalTheJoinerMovesOn) {
  make(/*failure_timeout_ns=*/400'000'000);
  kill_the_donor_mid_transfer();
  EXPECT_TRUE(loaded_);
  EXPECT_GT(pieces_from_[1], 0u);
  EXPECT_FALSE(replicas_[1]->core().members().front() == ReplicaId{0});
}

}  // namespace
}  // namespace lockstep
