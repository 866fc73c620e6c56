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
#include "protocol/byzantine/durability.h"

namespace lockstep::byzantine {

size_t Core::votes_held() const {
  size_t held = 0;
  for (const auto& [boundary, by_digest] : votes_) {
    for (const auto& [digest, signers] : by_digest)
      held += signers.size();
  }
  for (const auto& [position, at] : position_votes_)
    held += at.votes.size();
  return held;
}

std::optional<uint64_t> Core::take_checkpoint_boundary() {
  if (!boundary_due_ || boundary_handed_out_) return std::nullopt;
  boundary_handed_out_ = true;
  return boundary_due_;
}

void Core::checkpoint_taken(uint64_t boundary_us, Bytes snapshot) {
  LOCKSTEP_ASSERT(boundary_due_ == boundary_us && boundary_handed_out_,
                  "a snapshot is taken at the boundary handed out");
  // The membership schedule is part of the state the vote vouches for (docs/DESIGN.md §11.9).
  // (The changes ordered below the boundary: this replica may have decided later ones already.)
  const Schedule schedule = schedule_below(boundary_us);
  const Digest snapshot_digest = vouched_snapshot_digest(snapshot, schedule);
  checkpoint_ = Snapshot{boundary_us, order_hash_,
                         std::make_shared<const Bytes>(std::move(snapshot)), schedule.encode()};
  // The vote names the order's running hash and the snapshot's digest together: a replica that
  // loads the snapshot learns the hash it continues from (docs/DESIGN.md §11.8).
  vote(boundary_us, snapshot_digest);
  // Removed here: it executed everything before the change and vouched for the state there,
  // which is where the new members take over.
  if (member_at(boundary_us - 1) && !member_at(boundary_us)) removed_ = true;
  boundary_due_.reset();
  boundary_handed_out_ = false;
  drain_decided();
}

void Core::on_checkpoint_vote(const CheckpointVote& vote) {
  if (!recovering_) {
    // A durable replica certifies positions with them (durability.cc).
    if (durable()) on_position_vote(vote);
    return;
  }
  // A recovering replica keeps votes for boundaries it can use (at or after its start, not in the
  // future), so a faulty replica cannot make it hoard votes.
  if (options_.checkpoint_interval_us == 0) return;
  // The configuration that executed the order below the boundary vouches for the state there.
  if (vote.boundary_us != 0 && vote.boundary_us <= local_us_ &&
      vote.replica.value < options_.replica_count &&
      (!schedule_.at(vote.boundary_us - 1).contains(vote.replica) || !member_from_now_on())) {
    // A vote from a replica that is no member where it voted, as far as this one knows, or votes
    // reaching a replica that is a member of no configuration it knows: it missed a change
    // (started after the change was sent). It asks the voter for the changes (§11.9).
    probe_membership(vote);
    return;
  }
  if (vote.boundary_us == 0 || !schedule_.at(vote.boundary_us - 1).contains(vote.replica) ||
      vote.boundary_us % options_.checkpoint_interval_us != 0 ||
      vote.boundary_us < std::max(participation_start_us_, loadable_from_us_) ||
      !member_at(vote.boundary_us) || vote.boundary_us > local_us_) {
    return;
  }
  if (target_ && vote.boundary_us == target_->boundary_us && vote.digest == target_->digest &&
      std::find(target_->signers.begin(), target_->signers.end(), vote.replica) ==
          target_->signers.end() &&
      options_.verifier->verify_replica(
          vote.replica,
          crypto::checkpoint_vote_signing_bytes(vote.replica, vote.boundary_us, vote.digest),
          vote.signature)) {
    // One more replica that can serve the target: a signer may be gone (a replica removed at
    // that boundary halts once it has voted there).
    target_->signers.push_back(vote.replica);
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
  signers.emplace(vote.replica, vote.signature);
  if (signers.size() < catch_up_vouchers_needed(vote.boundary_us)) return;
  // t+1 signatures: at least one honest replica had this state at this boundary.
  Target target{vote.boundary_us, vote.digest, {}};
  Vouched vouched{vote.digest, {}};
  for (const auto& [replica, signature] : signers) {
    target.signers.push_back(replica);
    vouched.signatures.emplace_back(replica, signature);
  }
  target_ = std::move(target);
  vouched_[vote.boundary_us] = std::move(vouched);
  constexpr size_t kVouchedKept = 64;  // about a minute at the default interval
  if (vouched_.size() > kVouchedKept) vouched_.erase(vouched_.begin());
  votes_.erase(votes_.begin(), votes_.upper_bound(vote.boundary_us));
  state_requested_us_ = 0;
  request_state_if_due();
}

void Core::request_state_if_due() {
  if (probing_) probe_next_voter();
  if (!target_ && !recovery_) return;
  const uint64_t retry_us = 2 * (options_.delta_us + options_.epsilon_us);
  if (state_requested_us_ != 0 && local_us_ < state_requested_us_ + retry_us) return;
  state_requested_us_ = std::max<uint64_t>(local_us_, 1);
  // Every signer can serve it (until its next boundary); the first good answer wins.
  if (target_) {
    for (ReplicaId signer : target_->signers) {
      if (signer == options_.self) continue;
      outbox_.push_back(
          Send{signer, StateRequest{options_.self, ViewNumber{target_->boundary_us}, signer}});
    }
  }
  // A whole-cluster recovery's target: its honest signers have the batches below it.
  if (recovery_) {
    const uint64_t position = recovery_->target.position_us;
    for (const auto& [signer, signature] : recovery_->target.signatures) {
      if (signer == options_.self) continue;
      outbox_.push_back(Send{signer, StateRequest{options_.self, ViewNumber{position}, signer}});
    }
  }
}

void Core::on_state_request(const StateRequest& request) {
  const uint64_t position = request.view.value;
  if (recovering_ || request.donor != options_.self || position == 0) return;
  const bool latest_checkpoint = position == checkpoint_.position_us;
  // A replica that completed a whole-cluster recovery serves its target to those whose disks
  // lacked part of it, while its base is still below the target.
  const bool recovery_target = recovered_to_ && position == recovered_to_->position_us &&
                               base_.vouch.position_us <= position;
  if (!latest_checkpoint && !recovery_target) return;
  // A snapshot can be large, and the request's sender is not authenticated: at most one per
  // requester per position (a lost one waits for the next boundary).
  uint64_t& served = state_served_us_[request.sender.value];
  if (served == position) return;
  served = position;
  if (latest_checkpoint) {
    // The snapshot and the order's hash there; the joiner checks both against the t+1 votes.
    outbox_.push_back(Send{
        request.sender,
        StateTransfer{
            options_.self, request.view,
            encode_catch_up_state(
                encode_base_and_batches(Certificate{position, checkpoint_.order_hash, {}, {}}, {}),
                checkpoint_.schedule),
            *checkpoint_.bytes}});
  } else {
    outbox_.push_back(Send{request.sender, recovery_transfer(position)});
  }
}

void Core::load_state(Now now, const StateTransfer& transfer) {
  // An input like any other: instances past their decision time at the new clock are decided
  // before anything else (check_invariants holds it; found by the simulator, byzantine seed 6).
  advance_clock(now);
  decide_due();
  if (recovery_ && transfer.view.value == recovery_->target.position_us &&
      load_recovered_state(transfer)) {
    finish_recovery();
    drain_decided();
    return;
  }
  load_caught_up_state(transfer);
  drain_decided();
}

void Core::load_caught_up_state(const StateTransfer& transfer) {
  auto vouched = vouched_.find(transfer.view.value);
  if (vouched != vouched_.end() && vouched->first < loadable_from_us_) vouched = vouched_.end();
  std::optional<std::pair<Bytes, Bytes>> parts = decode_catch_up_state(transfer.protocol_state);
  std::optional<BaseAndBatches> state;
  std::optional<Schedule> loaded;
  if (parts) {
    state = decode_base_and_batches(parts->first);
    loaded = decode_schedule(parts->second, options_.members, *options_.verifier,
                             options_.replica_count);
  }
  const Digest snapshot_digest =
      loaded ? vouched_snapshot_digest(transfer.service_snapshot, *loaded) : Digest{};
  if (probing_ && (vouched == vouched_.end() || !target_) && state && loaded) {
    // Not vouched for: asked of one voter only for the membership changes it knows.
    learn_schedule_on_trust(*loaded);
    throw std::runtime_error("state transfer: not vouched for; asked for the membership only");
  }
  if (!target_ || vouched == vouched_.end() || !state || !loaded ||
      state->base.position_us != transfer.view.value || !state->batches.empty() ||
      crypto::position_digest(state->base.order_hash, snapshot_digest) != vouched->second.digest) {
    ++rejections_.bad_chain;
    throw std::runtime_error("state transfer: not the snapshot t+1 replicas signed");
  }
  // The schedule there, and the changes decided in the batches kept after it.
  Schedule own = std::move(schedule_);
  schedule_ = std::move(*loaded);
  change_ordered_at_us_.assign(schedule_.configurations().size() - 1, 0);
  for (const auto& kept : decided_) {
    const auto* batch = std::get_if<DecidedBatch>(&kept);
    if (batch != nullptr && batch->key.first >= vouched->first) {
      adopt_decided_changes(batch->key, batch->proposal);
    }
  }
  if (!schedule_agrees_from(own, vouched->first)) {
    // What it kept was decided under another membership than the honest one (it learned of a
    // change late, or was not yet a member): start over under the schedule it now knows.
    restart_catch_up();
    ++rejections_.schedule_restarts;
    throw std::runtime_error(
        "state transfer: the batches kept were decided under another membership; catching up "
        "again");
  }
  // Any boundary vouched for since its start: it kept every batch decided from its start on.
  const uint64_t boundary = vouched->first;
  auto snapshot = std::make_shared<const Bytes>(transfer.service_snapshot);
  const Certificate certificate{boundary, state->base.order_hash, snapshot_digest,
                                vouched->second.signatures};
  // A replica recovering from its disk that catches up from live replicas leaves its disk's
  // state behind: the loaded one is its new base.
  recovery_.reset();
  from_disk_ = false;
  claims_.clear();
  target_.reset();
  probing_ = false;
  probe_ = Probe{};
  votes_.clear();
  vouched_.clear();
  recovering_ = false;
  checkpoint_ =
      Snapshot{boundary, certificate.order_hash, snapshot, schedule_below(boundary).encode()};
  base_ = Base{certificate, snapshot};
  since_base_.clear();
  order_hash_ = certificate.order_hash;
  last_voted_hash_ = order_hash_;
  certified_us_ = std::max(certified_us_, boundary);
  if (boundary > best_certificate_.position_us) best_certificate_ = certificate;
  log_state_replaced(certificate);
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
}

}  // namespace lockstep::byzantine
