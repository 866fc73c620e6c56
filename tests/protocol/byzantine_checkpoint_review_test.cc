// Adversarial review of byzantine checkpoints and catching up (docs/DESIGN.md §11.7): a
// recovering replica driven by hand, with honest votes and an honest snapshot delivered at the
// earliest local time the timing model allows.

#include "byzantine_fixture.h"

namespace lockstep::byzantine::testing {
namespace {

constexpr uint64_t kIntervalUs = 100'000;
constexpr uint64_t kStartUs = 1'000'000;     // the recovering replica's first input
constexpr uint64_t kBoundaryUs = 1'100'000;  // the first boundary after its participation start
constexpr uint64_t kDecisionUs = kSlotUs + 2 * kD;  // σ + (t+1)·D with t = 1

class CheckpointReview : public ByzantineFixture {
 protected:
  std::unique_ptr<Core> recovering_replica() const {
    Options o = options_for(2);
    o.checkpoint_interval_us = kIntervalUs;
    o.join = true;
    auto core = std::make_unique<Core>(o);
    core->tick(at(kStartUs));
    return core;
  }
  CheckpointVote vote(uint32_t signer, uint64_t boundary_us, const Digest& digest) const {
    CheckpointVote v{ReplicaId{signer}, boundary_us, digest, {}};
    v.signature = signers_[signer]->sign(
        crypto::checkpoint_vote_signing_bytes(ReplicaId{signer}, boundary_us, digest));
    return v;
  }
};

// An honest batch stamped just below the boundary b is in the snapshot of b. The recovering
// replica R gets the t+1 honest votes for b as early as the model allows: an honest replica H
// votes once its clock passes decision_time(b - 1); R's clock may read ε less then, and the
// network may be much faster than Δ. So R can hold the vouched snapshot, and load it, while its
// own clock is still below decision_time(b - 1): the batch is then still an undecided instance at
// R. load_state drops only what decided_ holds, so R decides the batch afterwards and executes it
// a second time on top of a snapshot that already contains it (and hands out boundary b again).
TEST_F(CheckpointReview, ALoadedReplicaNeverExecutesABatchBelowTheLoadedBoundary) {
  auto r = recovering_replica();
  const uint64_t tau = kBoundaryUs - kSlotUs;
  // The honest origin 0 proposes at τ; R receives it at once and accepts it (it relays).
  r->on_message(at(tau + 1'000), ReplicaId{0}, signed_by_origin(0, tau, {request(1, 1, "x")}));
  EXPECT_FALSE(r->take_messages(at(tau + 1'000)).empty()) << "R accepted and relays the value";

  // Honest replicas 0 and 1 executed "x" and vote for b. Their clocks passed
  // decision_time(b - 1) = b - 1 + kDecisionUs; R's reads up to ε less.
  const Bytes honest_snapshot = to_bytes("x;");
  const Digest order_hash{7};  // the running hash of the order below b, as the voters hold it
  const Digest digest = crypto::position_digest(order_hash, crypto::digest(honest_snapshot));
  const uint64_t votes_arrive = kBoundaryUs - 1 + kDecisionUs - kEpsilonUs + 500;
  r->on_message(at(votes_arrive), ReplicaId{0}, vote(0, kBoundaryUs, digest));
  r->on_message(at(votes_arrive), ReplicaId{1}, vote(1, kBoundaryUs, digest));
  ASSERT_TRUE(r->awaits_state()) << "t+1 votes for b: R asks for the snapshot";
  (void)r->take_messages(at(votes_arrive));

  // Replica 0 answers at once (a fast network): still before R decides τ.
  const uint64_t loaded_at = votes_arrive + 400;
  ASSERT_LT(loaded_at, tau + kDecisionUs) << "the scenario: R has not decided τ yet";
  r->load_state(
      at(loaded_at),
      StateTransfer{ReplicaId{0}, ViewNumber{kBoundaryUs},
                    encode_catch_up_state(
                        encode_base_and_batches(Certificate{kBoundaryUs, order_hash, {}, {}}, {}),
                        Schedule{}.encode()),
                    honest_snapshot});
  ASSERT_TRUE(r->serving());

  // Time passes; R decides τ and goes on.
  std::vector<OrderedEntry> executed;
  for (uint64_t now = loaded_at; now < loaded_at + 50'000; now += 1'000) {
    r->tick(at(now));
    for (OrderedEntry& e : r->take_executable())
      executed.push_back(std::move(e));
    while (auto boundary = r->take_checkpoint_boundary()) {
      ADD_FAILURE() << "boundary " << *boundary << " handed out again after loading it";
      r->checkpoint_taken(*boundary, honest_snapshot);
      for (OrderedEntry& e : r->take_executable())
        executed.push_back(std::move(e));
    }
  }
  for (const OrderedEntry& e : executed) {
    EXPECT_GE(e.timestamp.clock, kBoundaryUs)
        << "executed " << to_string(e.request.command) << " stamped " << e.timestamp.clock
        << ", below the boundary whose snapshot already contains it";
  }
}

// A faulty replica may sign any number of digests for one boundary. The recovering replica keeps
// every one of them (votes_[boundary][digest]) until it loads, so one faulty replica makes it hold
// memory in proportion to the faulty replica's bandwidth. An honest replica signs one digest per
// boundary: one vote per (replica, boundary) is all it needs to keep.
TEST_F(CheckpointReview, AFaultyReplicaCannotMakeARecoveringOneHoardVotes) {
  auto r = recovering_replica();
  const uint64_t now = kBoundaryUs + 1'000;
  r->tick(at(now));
  constexpr int kVotes = 5'000;
  std::vector<CheckpointVote> votes;
  votes.reserve(kVotes);
  for (int i = 0; i < kVotes; ++i) {
    Digest digest{};
    for (size_t byte = 0; byte < 4; ++byte)
      digest[byte] = static_cast<uint8_t>(i >> (8 * byte));
    votes.push_back(vote(0, kBoundaryUs, digest));
  }
  for (const CheckpointVote& v : votes)
    r->on_message(at(now), ReplicaId{0}, v);
  EXPECT_FALSE(r->awaits_state());
  EXPECT_EQ(r->votes_held(), 1u) << "votes kept of " << kVotes
                                 << " from one faulty replica for one boundary";
}

}  // namespace
}  // namespace lockstep::byzantine::testing
