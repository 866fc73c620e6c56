// Byzantine checkpoints and catching up (docs/DESIGN.md §11.7).
//
// Every honest replica executes the same decided batches in the same order, so its state after
// every instance below a boundary (a multiple of checkpoint_interval_us) is the same: each one
// signs the digest of its snapshot there and sends it to all. A replica that restarts without its
// state takes part in every instance from shortly after its start, executes nothing, and waits
// for a boundary at or after that point for which t+1 replicas signed one digest: at least one of
// them is honest, so that is the honest state. It fetches the snapshot from those replicas, checks
// its digest, loads it, and executes the batches it kept from the boundary on.
#include <algorithm>
#include <stdexcept>

#include "core/assert.h"
#include "crypto/signing.h"
#include "protocol/byzantine/core.h"

namespace lockstep::byzantine {

size_t Core::votes_held() const {
  size_t held = 0;
  for (const auto& [boundary, by_digest] : votes_) {
    for (const auto& [digest, signers] : by_digest)
      held += signers.size();
  }
  return held;
}

std::optional<uint64_t> Core::take_checkpoint_boundary() {
  if (!boundary_due_ || boundary_handed_out_) return std::nullopt;
  boundary_handed_out_ = true;
  return boundary_due_;
}

void Core::checkpoint_taken(uint64_t boundary_us, std::span<const uint8_t> snapshot) {
  LOCKSTEP_ASSERT(boundary_due_ == boundary_us && boundary_handed_out_,
                  "a snapshot is taken at the boundary handed out");
  const Digest digest = crypto::digest(snapshot);
  CheckpointVote vote{options_.self, boundary_us, digest, {}};
  vote.signature = options_.signer->sign(
      crypto::checkpoint_vote_signing_bytes(options_.self, boundary_us, digest));
  for (ReplicaId r : members_) {
    if (r != options_.self) outbox_.push_back(Send{r, vote});
  }
  checkpoint_us_ = boundary_us;
  boundary_due_.reset();
  boundary_handed_out_ = false;
  drain_decided();
}

void Core::on_checkpoint_vote(const CheckpointVote& vote) {
  // Only a recovering replica needs votes. It keeps those for boundaries it can use (at or after
  // its start, not in the future), so a faulty replica cannot make it hoard votes.
  if (!recovering_ || options_.checkpoint_interval_us == 0) return;
  if (vote.replica.value >= options_.replica_count ||
      vote.boundary_us % options_.checkpoint_interval_us != 0 ||
      vote.boundary_us < participation_start_us_ || vote.boundary_us > local_us_) {
    return;
  }
  if (target_ && vote.boundary_us <= target_->boundary_us) return;
  auto& by_digest = votes_[vote.boundary_us];
  for (const auto& [digest, signers] : by_digest) {
    // An honest replica signs one digest per boundary: a second vote is kept by no one.
    if (signers.contains(vote.replica)) return;
  }
  const Bytes signed_bytes =
      crypto::checkpoint_vote_signing_bytes(vote.replica, vote.boundary_us, vote.digest);
  if (!options_.verifier->verify_replica(vote.replica, signed_bytes, vote.signature)) {
    ++rejections_.bad_chain;
    return;
  }
  auto& signers = by_digest[vote.digest];
  signers.insert(vote.replica);
  if (signers.size() < options_.t + 1) return;
  // t+1 signatures: at least one honest replica had this state at this boundary.
  target_ =
      Target{vote.boundary_us, vote.digest, std::vector<ReplicaId>(signers.begin(), signers.end())};
  vouched_[vote.boundary_us] = vote.digest;
  constexpr size_t kVouchedKept = 64;  // about a minute at the default interval
  if (vouched_.size() > kVouchedKept) vouched_.erase(vouched_.begin());
  votes_.erase(votes_.begin(), votes_.upper_bound(vote.boundary_us));
  state_requested_us_ = 0;
  request_state_if_due();
}

void Core::request_state_if_due() {
  if (!target_) return;
  const uint64_t retry_us = 2 * (options_.delta_us + options_.epsilon_us);
  if (state_requested_us_ != 0 && local_us_ < state_requested_us_ + retry_us) return;
  state_requested_us_ = std::max<uint64_t>(local_us_, 1);
  // Every signer can serve it (until its next boundary); the first good answer wins.
  for (ReplicaId signer : target_->signers) {
    if (signer == options_.self) continue;
    outbox_.push_back(
        Send{signer, StateRequest{options_.self, ViewNumber{target_->boundary_us}, signer}});
  }
}

void Core::on_state_request(const StateRequest& request) {
  if (recovering_ || request.donor != options_.self || request.view.value != checkpoint_us_ ||
      checkpoint_us_ == 0) {
    return;
  }
  // A snapshot can be large, and the request's sender is not authenticated: at most one per
  // requester per boundary (a lost one waits for the next boundary).
  uint64_t& served = state_served_us_[request.sender.value];
  if (served == checkpoint_us_) return;
  served = checkpoint_us_;
  // The Replica fills in the snapshot it kept for this boundary.
  outbox_.push_back(Send{request.sender, StateTransfer{options_.self, request.view, {}, {}}});
}

void Core::load_state(Now now, const StateTransfer& transfer) {
  // An input like any other: instances past their decision time at the new clock are decided
  // before anything else (check_invariants holds it; found by the simulator, byzantine seed 6).
  advance_clock(now);
  decide_due();
  auto vouched = vouched_.find(transfer.view.value);
  if (!target_ || vouched == vouched_.end() ||
      crypto::digest(transfer.service_snapshot) != vouched->second) {
    ++rejections_.bad_chain;
    throw std::runtime_error("state transfer: not the snapshot t+1 replicas signed");
  }
  // Any boundary vouched for since its start: it kept every batch decided from its start on.
  const uint64_t boundary = vouched->first;
  target_.reset();
  votes_.clear();
  vouched_.clear();
  recovering_ = false;
  checkpoint_us_ = boundary;
  // Votes can outrun this replica's clock by ε, and the network can be faster than Δ: instances
  // below the boundary may still be undecided here. Their decisions are in the snapshot; they
  // must not run again on top of it (found by review).
  loaded_boundary_us_ = boundary;
  // What it kept from its start on: batches below the boundary are in the snapshot, and so is
  // the boundary itself.
  while (!decided_.empty()) {
    const auto& front = decided_.front();
    const bool covered = std::holds_alternative<Boundary>(front)
                             ? std::get<Boundary>(front).boundary_us <= boundary
                             : std::get<DecidedBatch>(front).key.first < boundary;
    if (!covered) break;
    decided_.pop_front();
  }
  drain_decided();
}

}  // namespace lockstep::byzantine
