// Three byzantine Replicas (t = 1) on an instant network; one restarts without its state and
// catches up (docs/DESIGN.md §11.7) with the checkpoint's snapshot sent in pieces.
#include <gtest/gtest.h>

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

class ByzantineCatchUpTest : public ByzantineFixture {
 protected:
  std::unique_ptr<Replica> make(uint32_t self, bool join) const {
    byzantine::Options options = options_for(self);
    options.checkpoint_interval_us = kCheckpointIntervalUs;
    options.join = join;
    ReplicaLimits limits;
    limits.state_chunks.chunk_bytes = 256;  // a small snapshot still goes in many pieces
    return std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>(), limits);
  }

  void start() {
    for (uint32_t r = 0; r < 3; ++r)
      replicas_.push_back(make(r, false));
  }

  void step() {
    now_us_ += 1'000;
    for (auto& replica : replicas_)
      replica->tick(at(now_us_));
    for (int round = 0; round < 4; ++round) {
      for (uint32_t r = 0; r < 3; ++r) {
        Replica::Output out = replicas_[r]->take_output();
        loaded_ |= r == 2 && out.loaded_state;
        for (auto& send : out.to_peers) {
          chunks_ += std::holds_alternative<StateChunk>(send.message) ? 1 : 0;
          replicas_[send.to.value]->on_peer_message(at(now_us_), ReplicaId{r},
                                                    std::move(send.message));
        }
      }
    }
  }

  void put(const std::string& key, size_t value_bytes) {
    kv::Command command;
    command.op = kv::Op::kPut;
    command.key = key;
    command.value.assign(value_bytes, 'v');
    ClientRequest signed_request = request(1, ++sequence_, "");
    signed_request.command = kv::encode_command(command);
    crypto::sign_request(*client_signer_, signed_request);
    for (auto& replica : replicas_)
      replica->on_client_request(at(now_us_), signed_request);
  }

  std::vector<std::unique_ptr<Replica>> replicas_;
  uint64_t now_us_ = 1'000'000;
  uint64_t sequence_ = 0;
  bool loaded_ = false;
  uint64_t chunks_ = 0;
};

TEST_F(ByzantineCatchUpTest, ARestartedReplicaLoadsASnapshotSentInPiecesAndExecutesAlike) {
  start();
  for (int i = 0; i < 40; ++i) {
    put("k" + std::to_string(i), 100);
    for (int s = 0; s < 5; ++s)
      step();
  }
  replicas_[2] = make(2, true);  // restarted without its state
  for (int i = 40; i < 400 && !loaded_; ++i) {
    put("k" + std::to_string(i % 60), 100);
    for (int s = 0; s < 5; ++s)
      step();
  }
  ASSERT_TRUE(loaded_) << "no snapshot loaded";
  EXPECT_TRUE(replicas_[2]->serving());
  EXPECT_GT(chunks_, 20u) << "a snapshot of several KiB in pieces of 256 bytes";
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

}  // namespace
}  // namespace lockstep
