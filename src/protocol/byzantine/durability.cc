// Durability of the byzantine mode (docs/DESIGN.md §11.8).
//
// Certified positions. At every multiple of certify_interval_us in the order's timestamps after
// which it executed something new (and at every checkpoint boundary), a replica signs the running
// hash of the order there, once its log holds the batches (the runtime syncs a step's records
// before sending its messages). t+1 matching signatures make a certificate: one signer at least
// is honest and has the batches on its disk. Replies to requests below a certified position go
// out only after the certificate is logged too, so every acknowledged write lies below a
// certificate that some honest replica holds durably. A certificate at a checkpoint boundary also
// names the snapshot's digest: it vouches for that snapshot, which becomes the base of the durable
// state (base + the batches executed after it), and the log before it can go.
//
// Recovery claims. A replica restarted from its disk serves nothing and proposes, every claim
// period, a claim {start of its participation, highest certificate it holds, round} through
// Dolev–Strong like any proposal, so every honest replica decides the same claims in the same
// order. Meanwhile it also catches up as a wiped replica would (checkpoints.cc) if the cluster is
// alive. After a whole-cluster crash nobody is alive: a recovery completes at the first decided
// claim x such that, among the claims decided in the window W before x, every replica (but those
// the operator ruled out) has one of the window's highest round, saying it started participating
// no later than x − W. Every honest replica so counted saw the whole window, so all of them
// evaluate the rule on the same decided claims and complete at the same x, with the same target:
// the highest certificate among the counted claims. Each rebuilds the order up to the target from
// its own disk when the running hash matches, or fetches a vouched base plus the batches after it
// from a signer of the target; then all execute the batches decided after x. Everything above the
// target is dropped: no reply there was released.
//
// Rounds. A replica that crashes during a recovery may have had its claim counted by a recovery
// that completed where its next life cannot see. So a life claims in a round above every round an
// earlier life logged (before sending), and a completion counts one round only: the next life's
// claims can never complete a recovery with replicas that already completed (they claim no
// more), and it catches up from them instead; if none completed, all adopt the higher round and
// complete together. A replica without its disk (--join) or ruled out never completes by claims.
#include <algorithm>
#include <map>
#include <stdexcept>

#include "core/assert.h"
#include "core/wire.h"
#include "crypto/signing.h"
#include "protocol/byzantine/core.h"

namespace lockstep::byzantine {
namespace {

// Positions whose votes a replica keeps while they are not certified: a faulty replica can vote
// on any position, and certification can stall while another replica is down.
constexpr size_t kPositionsHeldMax = 4096;
// Claims count within this many claim periods before a decided claim.
constexpr uint64_t kClaimWindowPeriods = 4;
// Rounds go up by one per life that crashed during a recovery, and a replica adopts at most one
// round more per decided claim: no replica reaches this.
constexpr uint64_t kClaimRoundMax = uint64_t{1} << 62;

uint64_t timestamp_of(const Proposal& p) {
  return p.timestamp_us;
}

}  // namespace

// ---- the durable state ----------------------------------------------------------------------

void Core::set_genesis_snapshot(Bytes snapshot) {
  genesis_.snapshot = std::make_shared<const Bytes>(std::move(snapshot));
  genesis_.vouch = Certificate{0, {}, crypto::digest(*genesis_.snapshot), {}};
  base_ = genesis_;
}

void Core::set_recovered_base_snapshot(Bytes snapshot) {
  base_.snapshot = std::make_shared<const Bytes>(std::move(snapshot));
}

Bytes Core::checkpoint_state() const {
  return encode_durable_state(
      DurableState{{base_.vouch, since_base_}, best_certificate_, logged_round_});
}

void Core::recover(std::span<const uint8_t> checkpoint_state,
                   const std::vector<PersistRecord>& records) {
  if (!durable()) {
    if (checkpoint_state.empty() && records.empty()) return;
    throw std::runtime_error(
        "byzantine recovery: this replica is not durable (no certify "
        "interval) but its disk holds state");
  }
  if (!checkpoint_state.empty()) {
    std::optional<DurableState> state = decode_durable_state(checkpoint_state);
    if (!state) throw std::runtime_error("byzantine recovery: undecodable checkpoint state");
    base_.vouch = state->base_and_batches.base;
    if (crypto::digest(*base_.snapshot) != base_.vouch.snapshot_digest) {
      throw std::runtime_error("byzantine recovery: the checkpoint's snapshot is not its base's");
    }
    since_base_ = std::move(state->base_and_batches.batches);
    best_certificate_ = state->best;
    logged_round_ = state->claimed_round;
    if (logged_round_ && *logged_round_ > kClaimRoundMax) {
      throw std::runtime_error("byzantine recovery: a checkpoint with a claim beyond any round");
    }
  }
  for (const PersistRecord& record : records) {
    switch (record.type) {
      case kBatchRecord: {
        std::optional<Proposal> batch = decode_proposal(record.payload);
        if (!batch) throw std::runtime_error("byzantine recovery: undecodable batch record");
        const InstanceKey key{batch->timestamp_us, batch->origin};
        // A checkpoint written when a state was loaded can already hold a step's batches.
        if (!since_base_.empty() &&
            key <= InstanceKey{since_base_.back().timestamp_us, since_base_.back().origin}) {
          continue;
        }
        since_base_.push_back(std::move(*batch));
        break;
      }
      case kCertificateRecord: {
        std::optional<Certificate> c = decode_certificate(record.payload);
        if (!c) throw std::runtime_error("byzantine recovery: undecodable certificate record");
        if (c->position_us > best_certificate_.position_us) best_certificate_ = std::move(*c);
        break;
      }
      case kClaimedRecord: {
        Reader reader(record.payload);
        const uint64_t round = reader.varint();
        if (!reader.ok() || !reader.at_end()) {
          throw std::runtime_error("byzantine recovery: undecodable claim record");
        }
        if (round > kClaimRoundMax) {
          throw std::runtime_error("byzantine recovery: a claim record beyond any round");
        }
        logged_round_ = std::max(logged_round_.value_or(0), round);
        break;
      }
      default:
        throw std::runtime_error("byzantine recovery: unknown record type " +
                                 std::to_string(record.type));
    }
  }
  std::erase_if(since_base_,
                [&](const Proposal& p) { return p.timestamp_us < base_.vouch.position_us; });
  order_hash_ = base_.vouch.order_hash;
  claim_round_ = logged_round_ ? *logged_round_ + 1 : 0;
  from_disk_ = true;
  recovering_ = true;
}

void Core::record_executed(const Proposal& proposal, const Digest& digest) {
  order_hash_ = crypto::extend_order_hash(order_hash_, digest);
  if (!durable()) return;
  persist_.push_back(PersistRecord{kBatchRecord, encode_proposal(proposal)});
  since_base_.push_back(proposal);
}

void Core::execute_decided_replayed(Proposal proposal) {
  // Already in the log (or in the state it came with): executed again, not recorded again.
  order_hash_ = crypto::extend_order_hash(order_hash_, crypto::proposal_digest(proposal));
  const InstanceKey key{proposal.timestamp_us, proposal.origin};
  execute_decided(key, proposal);
}

// ---- certified positions --------------------------------------------------------------------

void Core::at_position(uint64_t position_us) {
  if (position_us % options_.checkpoint_interval_us == 0) {
    // A checkpoint boundary: the Replica snapshots the service first (checkpoint_taken votes).
    boundary_due_ = position_us;
    boundary_handed_out_ = false;
    return;
  }
  if (durable() && order_hash_ != last_voted_hash_) vote(position_us, Digest{});
}

void Core::vote(uint64_t position_us, const Digest& snapshot_digest) {
  const Digest digest = crypto::position_digest(order_hash_, snapshot_digest);
  const Signature signature = options_.signer->sign(
      crypto::checkpoint_vote_signing_bytes(options_.self, position_us, digest));
  last_voted_hash_ = order_hash_;
  const CheckpointVote message{options_.self, position_us, digest, signature};
  // To the configuration that executed the order below the position, and to every member of a
  // configuration adopted to follow it: a replica to be added catches up from these votes, and
  // one started late learns from them that it is wanted (it then asks a voter for the changes).
  std::vector<bool> sent(options_.replica_count, false);
  sent[options_.self.value] = true;
  for (const Configuration& c : schedule_.configurations()) {
    if (c.epoch < schedule_.at(position_us - 1).epoch) continue;
    for (ReplicaId r : c.members) {
      if (sent[r.value]) continue;
      sent[r.value] = true;
      outbox_.push_back(Send{r, message});
    }
  }
  if (!durable()) return;
  PositionVotes& at = position_votes_[position_us];
  at.own = Certificate{position_us, order_hash_, snapshot_digest, {{options_.self, signature}}};
  for (const auto& [replica, other] : at.votes) {
    if (other.digest != digest) ++rejections_.votes_against;
  }
  bound_position_votes();
  try_certify(position_us);
}

void Core::on_position_vote(const CheckpointVote& vote) {
  if (vote.replica.value >= options_.replica_count || vote.replica == options_.self) return;
  // A vote is sent once the sender's clock is past the position's decision time, when this
  // replica's clock reads at least that minus ε.
  if (vote.boundary_us % options_.certify_interval_us != 0 || vote.boundary_us <= certified_us_ ||
      vote.boundary_us > local_us_ + options_.epsilon_us + options_.slot_us) {
    return;
  }
  PositionVotes& at = position_votes_[vote.boundary_us];
  if (at.votes.contains(vote.replica)) return;  // one vote per replica and position
  // Checked before it takes the signer's place: a faulty replica cannot sign in another's name,
  // but it could send a garbage vote under that name ahead of the real one (found by review).
  const Bytes signed_bytes =
      crypto::checkpoint_vote_signing_bytes(vote.replica, vote.boundary_us, vote.digest);
  if (!options_.verifier->verify_replica(vote.replica, signed_bytes, vote.signature)) {
    ++rejections_.bad_chain;
    return;
  }
  at.votes.emplace(vote.replica, PositionVote{vote.digest, vote.signature});
  if (at.own &&
      vote.digest != crypto::position_digest(at.own->order_hash, at.own->snapshot_digest)) {
    ++rejections_.votes_against;
  }
  bound_position_votes();
  try_certify(vote.boundary_us);
  leave_order_if_diverged();
}

void Core::try_certify(uint64_t position_us) {
  auto it = position_votes_.find(position_us);
  if (it == position_votes_.end() || !it->second.own) return;
  Certificate certificate = *it->second.own;
  const Digest digest =
      crypto::position_digest(certificate.order_hash, certificate.snapshot_digest);
  // The configuration that executed the order below the position vouches for it.
  const Configuration& signers = schedule_.at(position_us - 1);
  const uint32_t t = signers.t;
  std::map<Digest, uint32_t> others;
  for (const auto& [replica, vote] : it->second.votes) {
    if (!signers.contains(replica)) continue;
    if (vote.digest != digest && ++others[vote.digest] == t + 1) {
      // t+1 signatures, one at least honest, on another order than the one this replica ran.
      catch_up_after_divergence();
      return;
    }
    if (vote.digest == digest && certificate.signatures.size() < t + 1) {
      certificate.signatures.emplace_back(replica, vote.signature);
    }
  }
  if (certificate.signatures.size() < t + 1) return;
  position_votes_.erase(position_votes_.begin(), std::next(it));
  certified_us_ = std::max(certified_us_, position_us);
  if (position_us == checkpoint_.position_us) {
    // The snapshot is vouched for: the new base; the log before it is not needed any more.
    base_ = Base{certificate, checkpoint_.bytes};
    std::erase_if(since_base_, [&](const Proposal& p) { return timestamp_of(p) < position_us; });
  }
  if (position_us > best_certificate_.position_us) {
    persist_.push_back(PersistRecord{kCertificateRecord, encode_certificate(certificate)});
    best_certificate_ = std::move(certificate);
  }
}

void Core::bound_position_votes() {
  if (position_votes_.size() > kPositionsHeldMax) position_votes_.erase(position_votes_.begin());
}

void Core::log_state_replaced(const Certificate& certificate) {
  // The step that replaces the state always logs something, so that the runtime can checkpoint
  // the new state after the step's records even when its last checkpoint sits at the log's end
  // (a restart right after one; simulator seeds 2614 and 2818).
  if (durable()) {
    persist_.push_back(PersistRecord{kCertificateRecord, encode_certificate(certificate)});
  }
}

bool Core::excused(ReplicaId replica) const {
  return std::binary_search(options_.recovery_excused.begin(), options_.recovery_excused.end(),
                            replica);
}

void Core::catch_up_after_divergence() {
  // Found while draining decided_ (a vote at a boundary): applied once that step is done.
  divergence_due_ = true;
}

void Core::leave_order_if_diverged() {
  // It is one of the t now, and must not answer anyone from its state: it goes back to catching
  // up as a replica restarted without its state does (§11.7), and loads a vouched checkpoint.
  // Its disk keeps what it executed; a later recovery from it checks every batch against a
  // certificate's running hash (rebuild_to), so nothing it ran after leaving the order is used.
  if (!std::exchange(divergence_due_, false)) return;
  ++rejections_.diverged;
  diverged_ = true;
  recovering_ = true;
  participation_start_us_ = 0;  // set again at the next input, from this moment
  loadable_from_us_ = 0;
  decided_.clear();
  boundary_due_.reset();
  boundary_handed_out_ = false;
  position_votes_.clear();
  target_.reset();
  votes_.clear();
  vouched_.clear();
}

bool Core::certificate_valid(const Certificate& certificate) const {
  if (certificate.position_us == 0) {
    return certificate.signatures.empty() && certificate.order_hash == Digest{};
  }
  if (options_.certify_interval_us == 0 ||
      certificate.position_us % options_.certify_interval_us != 0 ||
      certificate.signatures.size() < schedule_.at(certificate.position_us - 1).t + 1) {
    return false;
  }
  const Digest digest =
      crypto::position_digest(certificate.order_hash, certificate.snapshot_digest);
  const Configuration& signers = schedule_.at(certificate.position_us - 1);
  std::vector<bool> seen(options_.replica_count, false);
  for (const auto& [replica, signature] : certificate.signatures) {
    if (!signers.contains(replica) || seen[replica.value]) return false;
    seen[replica.value] = true;
    const Bytes signed_bytes =
        crypto::checkpoint_vote_signing_bytes(replica, certificate.position_us, digest);
    if (!options_.verifier->verify_replica(replica, signed_bytes, signature)) return false;
  }
  return true;
}

// ---- recovery claims ------------------------------------------------------------------------

void Core::propose_claim_if_due() {
  if (!durable() || !recovering_ || recovery_ || participation_start_us_ == 0 ||
      local_us_ < next_claim_us_) {
    return;
  }
  const uint64_t slot = local_us_ - local_us_ % options_.slot_us;
  if (slot <= last_proposal_us_) return;
  if (!logged_round_ || *logged_round_ < claim_round_) {
    // Logged before the claim leaves (the runtime syncs a step's records before its messages):
    // a later life of this replica must claim in a higher round.
    logged_round_ = claim_round_;
    Bytes payload;
    Writer(payload).varint(claim_round_);
    persist_.push_back(PersistRecord{kClaimedRecord, std::move(payload)});
  }
  next_claim_us_ = local_us_ + claim_period_us();
  broadcast_proposal(Proposal{options_.self,
                              slot,
                              {},
                              encode_claim(Claim{participation_start_us_, best_certificate_,
                                                 options_.recovery_excused, claim_round_})});
}

bool Core::on_claim_decided(const InstanceKey& key, const Proposal& proposal) {
  if (!durable() || !recovering_ || recovery_ || key.first < participation_start_us_) return false;
  std::optional<Claim> claim = decode_claim(proposal.claim);
  // A claim every honest replica finds invalid alike is no claim (its origin is faulty). A round
  // beyond any a replica could reach honestly is one: adopted and logged, it would make the next
  // life's round wrap around (found by review).
  if (!claim || claim->round > kClaimRoundMax || !certificate_valid(claim->certificate)) {
    return false;
  }
  // A claim under another ruling than this replica's is not counted (operators must give every
  // replica the same one; honest replicas then count alike).
  if (claim->excused != options_.recovery_excused || excused(key.second)) return false;
  // One round up at a time: a faulty replica that raises the round at every claim it gets decided
  // holds the recovery up (until ruled out), but cannot make a round wrap around.
  if (claim->round > claim_round_) ++claim_round_;
  claims_.push_back(
      DecidedClaim{key.first, key.second, claim->start_us, claim->round, claim->certificate});
  const uint64_t window = kClaimWindowPeriods * claim_period_us();
  if (key.first <= window) return false;
  const uint64_t window_start = key.first - window;  // the window is (window_start, key]
  while (!claims_.empty() && claims_.front().timestamp_us <= window_start)
    claims_.pop_front();
  // A replica without its disk, or ruled out, may not have seen the window whole: it catches up.
  if (!from_disk_ || excused(options_.self) || window_start < participation_start_us_) {
    return false;
  }
  uint64_t round = 0;
  for (const DecidedClaim& c : claims_)
    round = std::max(round, c.round);
  std::optional<Certificate> target;
  for (ReplicaId r : schedule_.latest().members) {
    if (excused(r)) continue;  // ruled out by the operator
    const Certificate* best = nullptr;
    for (const DecidedClaim& c : claims_) {
      if (c.origin != r || c.round != round || c.start_us > window_start) continue;
      if (best == nullptr || c.certificate.position_us > best->position_us) best = &c.certificate;
    }
    if (best == nullptr) return false;  // not every replica has claimed yet
    if (!target || best->position_us > target->position_us) target = *best;
  }
  if (!target) return false;  // every replica ruled out: nothing to recover from
  complete_recovery(key, *target);
  return true;
}

void Core::complete_recovery(const InstanceKey& at, const Certificate& target) {
  // Everything decided so far lies below `at`: dropped. The batches after it run on the target.
  claims_.clear();
  decided_.clear();
  if (rebuild_to(target)) {
    recovered_to_ = target;
    finish_recovery();
    state_replaced_ = true;
    return;
  }
  // Its disk lacks part of the target (it lagged when it crashed): a signer of the target has it.
  recovery_ = Recovery{at, target};
  state_requested_us_ = 0;
  request_state_if_due();
}

bool Core::rebuild_to(const Certificate& target) {
  if (base_.vouch.position_us > target.position_us) return false;
  Digest hash = base_.vouch.order_hash;
  size_t below = 0;
  for (const Proposal& p : since_base_) {
    if (p.timestamp_us >= target.position_us) break;
    hash = crypto::extend_order_hash(hash, crypto::proposal_digest(p));
    ++below;
  }
  if (hash != target.order_hash) return false;
  since_base_.resize(below);
  order_hash_ = base_.vouch.order_hash;
  for (const Proposal& p : since_base_)
    execute_decided_replayed(p);
  LOCKSTEP_ASSERT(order_hash_ == target.order_hash, "a rebuilt order reaches its target's hash");
  return true;
}

void Core::finish_recovery() {
  const Certificate target = recovered_to_ ? *recovered_to_ : Certificate{};
  recovery_.reset();
  from_disk_ = false;
  recovering_ = false;
  target_.reset();
  votes_.clear();
  vouched_.clear();
  position_votes_.clear();
  claims_.clear();
  certified_us_ = std::max(certified_us_, target.position_us);
  if (target.position_us > best_certificate_.position_us) best_certificate_ = target;
  log_state_replaced(target);
  last_voted_hash_ = order_hash_;
  ++recoveries_completed_;
}

StateTransfer Core::recovery_transfer(uint64_t target_us) const {
  std::vector<Proposal> batches;
  for (const Proposal& p : since_base_) {
    if (p.timestamp_us >= target_us) break;
    batches.push_back(p);
  }
  return StateTransfer{options_.self, ViewNumber{target_us},
                       encode_base_and_batches(base_.vouch, batches), *base_.snapshot};
}

bool Core::load_recovered_state(const StateTransfer& transfer) {
  const Certificate& target = recovery_->target;
  std::optional<BaseAndBatches> state = decode_base_and_batches(transfer.protocol_state);
  if (!state || state->base.position_us > target.position_us) return false;
  Certificate base = std::move(state->base);
  base.snapshot_digest = crypto::digest(transfer.service_snapshot);
  if (base.position_us == 0) {
    if (base.snapshot_digest != genesis_.vouch.snapshot_digest || base.order_hash != Digest{}) {
      return false;
    }
    base.signatures.clear();
  } else if (base.position_us % options_.checkpoint_interval_us != 0 || !certificate_valid(base)) {
    return false;
  }
  Digest hash = base.order_hash;
  std::optional<InstanceKey> previous;
  for (const Proposal& p : state->batches) {
    const InstanceKey key{p.timestamp_us, p.origin};
    if (key.first < base.position_us || key.first >= target.position_us ||
        (previous && key <= *previous)) {
      return false;
    }
    previous = key;
    hash = crypto::extend_order_hash(hash, crypto::proposal_digest(p));
  }
  if (hash != target.order_hash) return false;
  // The Replica restored the service from this snapshot before calling load_state.
  base_ = Base{std::move(base), std::make_shared<const Bytes>(transfer.service_snapshot)};
  since_base_ = state->batches;
  order_hash_ = base_.vouch.order_hash;
  for (Proposal& p : state->batches)
    execute_decided_replayed(std::move(p));
  recovered_to_ = target;
  return true;
}

}  // namespace lockstep::byzantine
