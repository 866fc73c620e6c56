// The byzantine ordering protocol; core.h gives the outline and docs/DESIGN.md §11 the argument.
//
// Timing is all in this replica's own clock, `local_us_` (the wall clock made monotone). With
// D = Δ + ε and σ = slot_us (an origin stamps the start of the current slot, so it sends up to σ
// after τ), a value for instance (origin, τ) carrying m signatures is accepted inside
// [τ - m·ε, τ + σ + min(m, t+1)·D], and the instance is decided once the clock is past
// τ + σ + (t+1)·D. The bounds are what make agreement hold: if an honest replica accepts a value
// with m signatures at its local time L, it relays it with m+1 at once, and every honest peer
// gets it within Δ of real time, when its clock reads at most L + Δ + ε ≤ τ + σ + (m+1)·D and at
// least L - ε ≥ τ - (m+1)·ε: inside the peer's window for m+1. A value first accepted with t+1
// signatures carries an honest signer's, who relayed it to everyone earlier. So by decision time
// every honest replica holds the same accepted set for every instance (docs/DESIGN.md §11.4).
#include "protocol/byzantine/core.h"

#include <algorithm>
#include <utility>

#include "core/assert.h"
#include "crypto/signing.h"
#include "protocol/ownership.h"

namespace lockstep::byzantine {
namespace {

// Bounded memo sizes: the caches only save work, so forgetting old entries is always safe.
constexpr size_t kVerifiedRequestsMax = 1 << 17;
constexpr size_t kDecidedRequestsMax = 1 << 17;
// A recovery claim holds one certificate: t+1 signatures and two digests (durability.h).
constexpr size_t kClaimBytesMax = 64 * 1024;

uint64_t saturating_sub(uint64_t a, uint64_t b) {
  return a > b ? a - b : 0;
}

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

template <typename Key>
void remember(std::set<Key>& set, std::deque<Key>& order, const Key& key, size_t max) {
  if (!set.insert(key).second) return;
  order.push_back(key);
  if (order.size() > max) {
    set.erase(order.front());
    order.pop_front();
  }
}

size_t command_bytes(const std::vector<ClientRequest>& requests) {
  size_t bytes = 0;
  for (const ClientRequest& r : requests)
    bytes += r.command.size();
  return bytes;
}

}  // namespace

Core::Core(Options options) : options_(options) {
  if (options_.members.empty()) {
    for (uint32_t r = 0; r < options_.replica_count; ++r)
      options_.members.push_back(ReplicaId{r});
  }
  schedule_ = Schedule(options_.members);
  LOCKSTEP_ASSERT(options_.t >= 1, "the byzantine mode tolerates t >= 1 faults");
  LOCKSTEP_ASSERT(faults_tolerated(options_.members.size()) == options_.t,
                  "the byzantine mode runs 2t+1 (or 2t+2) members");
  for (ReplicaId r : options_.members)
    LOCKSTEP_ASSERT(r.value < options_.replica_count, "a member is a listed replica");
  LOCKSTEP_ASSERT(options_.self.value < options_.replica_count, "self must be a replica");
  LOCKSTEP_ASSERT(options_.signer != nullptr && options_.verifier != nullptr,
                  "the byzantine mode needs keys");
  LOCKSTEP_ASSERT(options_.verifier->replica_count() == options_.replica_count,
                  "one public key per replica");
  LOCKSTEP_ASSERT(options_.delta_us > 0, "Δ must be positive");
  LOCKSTEP_ASSERT(options_.slot_us > 0, "a slot must last at least 1 µs");
  LOCKSTEP_ASSERT(options_.certify_interval_us == 0 ||
                      (options_.checkpoint_interval_us != 0 &&
                       options_.checkpoint_interval_us % options_.certify_interval_us == 0),
                  "a durable replica certifies at an interval that divides the checkpoint one");
  std::sort(options_.recovery_excused.begin(), options_.recovery_excused.end());
  for (ReplicaId r : options_.recovery_excused)
    LOCKSTEP_ASSERT(r.value < options_.replica_count, "an excused replica is a replica");
  LOCKSTEP_ASSERT(
      std::adjacent_find(options_.recovery_excused.begin(), options_.recovery_excused.end()) ==
          options_.recovery_excused.end(),
      "each replica is excused once");
  if (options_.relay_timeout_us == 0) {
    options_.relay_timeout_us =
        2 * (options_.slot_us + (options_.t + 1) * (options_.delta_us + options_.epsilon_us));
  }
  state_served_us_.assign(options_.replica_count, 0);
  // A spare (listed, not a first member) has no state: it catches up once a change adds it.
  recovering_ = options_.join || !schedule_.at(0).contains(options_.self);
}

ReplicaId Core::owner_of(ClientId client) const {
  return rendezvous_owner(client, schedule_.at(local_us_).members);
}

uint64_t Core::decision_time_us(uint64_t timestamp_us) const {
  // t+1 rounds of the configuration governing τ; never earlier than the decision time of the
  // instance just before a configuration that lowered t, so decision times grow with τ and
  // instances decide in the order (docs/DESIGN.md §11.9).
  const auto own = [&](uint64_t tau, uint32_t t) {
    const uint64_t rounds = options_.planted.decide_early ? t : t + 1;
    return saturating_add(tau,
                          options_.slot_us + rounds * (options_.delta_us + options_.epsilon_us));
  };
  uint64_t decision = 0;
  for (const Configuration& c : schedule_.configurations()) {
    if (c.from_us > timestamp_us) break;
    if (c.from_us > 0)
      decision = std::max(decision, own(c.from_us - 1, schedule_.at(c.from_us - 1).t));
  }
  return std::max(decision, own(timestamp_us, schedule_.at(timestamp_us).t));
}

size_t Core::pending_entries() const {
  return in_instances_.size() + unproposed_.size() + backups_.size() + decided_.size();
}

// ---- inputs ---------------------------------------------------------------------------------

void Core::advance_clock(Now now) {
  // A wall clock stepped back must not reopen windows that already closed: decisions taken stay
  // taken (and the check against last_decided_ backs this up).
  local_us_ = std::max(local_us_, now.wall_us);
  // No time yet (a Replica asked for its output before any input): nothing to anchor on.
  if (local_us_ == 0) return;
  if (next_boundary_us_ == 0 && grid_us() != 0) {
    // The first boundary after start: every instance below it was open while this replica ran.
    next_boundary_us_ = (local_us_ / grid_us() + 1) * grid_us();
  }
  if (recovering_ && participation_start_us_ == 0) {
    // An instance stamped this late had its origin's first message sent after this replica was
    // up (clocks differ by at most ε), and every relay of it after that: it sees each one whole.
    participation_start_us_ =
        local_us_ + options_.slot_us + 2 * (options_.delta_us + options_.epsilon_us);
  }
}

void Core::on_client_request(Now now, const ClientRequest& request) {
  advance_clock(now);
  decide_due();
  if (request.command.size() > options_.proposal_bytes_max) {
    // Every replica must be able to carry it in a proposal that every receiver accepts; one the
    // receivers would reject as oversized would run at its proposer alone (found by review).
    ++rejections_.oversized;
    return;
  }
  // The replica layer has checked the client's signature (admits()); whatever reaches a decision
  // is checked again there, so a caller that skipped it cannot get anything executed.
  const RequestKey key{request.client, request.sequence};
  // Only a decided request is done with. One inside an undecided value is still queued or backed
  // up: a faulty replica may hold it in an equivocating instance after instance, forever (found
  // by review).
  if (decided_digests_.contains(key)) return;
  if (recovering_) {
    // It orders nothing before it has a state; a membership change may tell it it is a member.
    if (from_administrator(request)) learn_change_early(request);
    return;
  }
  // A replica that is not a member (a spare, one removed) orders nothing.
  if (!member_at(local_us_)) return;
  if (owner_of(request.client) == options_.self) {
    if (unproposed_keys_.contains(key)) return;
    if (unproposed_.size() >= options_.backups_max) {
      ++rejections_.overloaded;
      return;
    }
    unproposed_keys_.insert(key);
    unproposed_bytes_ += request.command.size();
    unproposed_.push_back(request);
    return;
  }
  // Not ours to order, but the owner may be faulty: keep it, and propose it ourselves if nobody
  // has got it decided by the relay timeout.
  if (backups_.contains(key)) return;
  if (backups_.size() >= options_.backups_max) {
    ++rejections_.overloaded;
    return;
  }
  const uint64_t due = saturating_add(local_us_, options_.relay_timeout_us);
  backups_.emplace(key, Backup{request, due});
  backup_order_.emplace_back(due, key);
}

void Core::on_message(Now now, ReplicaId /*from*/, const ReplicaMessage& message) {
  // The transport's `from` is not trusted here: the chain of signatures says who vouched for a
  // value, whichever connection it came in on, and a vote carries its signer's signature. (A
  // StateRequest is answered to its named sender; a forged one costs the donor one snapshot per
  // retry interval, and the snapshot is checked by digest at the other end.)
  advance_clock(now);
  decide_due();
  if (removed_) {
    // Out of the membership: it only serves the state it vouched for at the change, which the
    // new members may ask it for.
    if (const auto* request = std::get_if<StateRequest>(&message)) {
      if (request->sender.value < options_.replica_count) on_state_request(*request);
    }
    return;
  }
  if (const auto* proposal = std::get_if<SignedProposal>(&message)) {
    on_signed_proposal(*proposal);
  } else if (const auto* vote = std::get_if<CheckpointVote>(&message)) {
    on_checkpoint_vote(*vote);
  } else if (const auto* request = std::get_if<StateRequest>(&message)) {
    if (request->sender.value < options_.replica_count) on_state_request(*request);
  }
  // Other messages (another mode's) mean a misconfigured peer: ignored.
}

void Core::tick(Now now) {
  advance_clock(now);
  decide_due();
  propose_due_backups();
  request_state_if_due();
}

std::vector<OrderingCore::Send> Core::take_messages(Now now) {
  advance_clock(now);
  decide_due();
  propose();
  return std::exchange(outbox_, {});
}

std::vector<OrderedEntry> Core::take_executable() {
  return std::exchange(executable_, {});
}

// ---- Dolev–Strong ---------------------------------------------------------------------------

void Core::on_signed_proposal(const SignedProposal& message) {
  const Proposal& proposal = message.proposal;
  const uint64_t m = message.chain.size();
  if (m == 0 || !schedule_.at(proposal.timestamp_us).contains(proposal.origin)) {
    ++rejections_.bad_chain;
    return;
  }
  if (proposal.timestamp_us % options_.slot_us != 0) {
    ++rejections_.off_slot;
    return;
  }
  // Instances of a configuration it is not in are none of its business (a removed replica, a
  // spare before its change): only members decide them.
  if (!member_at(proposal.timestamp_us)) return;
  const InstanceKey key{proposal.timestamp_us, proposal.origin};
  const uint64_t d = options_.delta_us + options_.epsilon_us;
  const uint64_t rounds = std::min<uint64_t>(m, schedule_.at(proposal.timestamp_us).t + 1);
  const uint64_t earliest = saturating_sub(proposal.timestamp_us, m * options_.epsilon_us);
  const uint64_t latest = saturating_add(proposal.timestamp_us, options_.slot_us + rounds * d);
  if (local_us_ < earliest || local_us_ > latest || (last_decided_ && key <= *last_decided_)) {
    ++rejections_.outside_window;
    return;
  }
  if (proposal.requests.size() > options_.requests_per_proposal_max ||
      command_bytes(proposal.requests) > options_.proposal_bytes_max ||
      proposal.claim.size() > kClaimBytesMax) {
    ++rejections_.oversized;
    return;
  }
  const Digest digest = crypto::proposal_digest(proposal);
  auto existing = instances_.find(key);
  if (existing != instances_.end()) {
    const auto& values = existing->second.values;
    // Already held, or already two values: two are proof enough that the origin equivocated,
    // and relaying more would let a faulty origin make honest replicas do unbounded work.
    if (values.size() >= 2) return;
    if (std::any_of(values.begin(), values.end(),
                    [&](const Accepted& a) { return a.digest == digest; })) {
      return;
    }
  }
  if (!chain_valid(message, digest)) {
    ++rejections_.bad_chain;
    return;
  }
  accept(key, digest, message);
}

bool Core::chain_valid(const SignedProposal& message, const Digest& digest) {
  const auto& chain = message.chain;
  if (chain.front().signer != message.proposal.origin) return false;
  // Only the members of the configuration governing τ take part in its instance.
  const Configuration& configuration = schedule_.at(message.proposal.timestamp_us);
  std::vector<bool> seen(options_.replica_count, false);
  for (const Endorsement& e : chain) {
    if (!configuration.contains(e.signer) || seen[e.signer.value]) return false;
    seen[e.signer.value] = true;
  }
  // Every signature is checked, every time: a value already held never gets here (its copies
  // from other relayers return early), so a memo would only ever be consulted for a chain that
  // failed before, and must then not vouch for it (found by review: a memo keyed by signer and
  // digest let a garbage signature ride on an earlier valid one).
  const Bytes signed_bytes = crypto::endorsement_signing_bytes(digest);
  for (const Endorsement& e : chain) {
    if (!options_.verifier->verify_replica(e.signer, signed_bytes, e.signature)) return false;
  }
  return true;
}

void Core::accept(const InstanceKey& key, const Digest& digest, const SignedProposal& message) {
  Instance& instance = instances_[key];
  LOCKSTEP_ASSERT(instance.values.size() < 2, "at most two values per instance");
  for (const ClientRequest& r : message.proposal.requests) {
    ++in_instances_[RequestKey{r.client, r.sequence}];
  }
  SignedProposal relayed = message;
  const bool signed_by_self =
      std::any_of(relayed.chain.begin(), relayed.chain.end(),
                  [&](const Endorsement& e) { return e.signer == options_.self; });
  if (!signed_by_self && member_at(key.first) &&
      relayed.chain.size() < schedule_.at(key.first).t + 1) {
    relayed.chain.push_back(Endorsement{
        options_.self, options_.signer->sign(crypto::endorsement_signing_bytes(digest))});
    // Everyone who has not signed it yet; the signers hold it already.
    std::vector<bool> signed_it(options_.replica_count, false);
    for (const Endorsement& e : relayed.chain)
      signed_it[e.signer.value] = true;
    send_to_members(key.first, relayed, &signed_it);
  }
  instance.values.push_back(Accepted{digest, std::move(relayed)});
}

void Core::propose() {
  // One proposal per step, stamped with the clock only once it has moved past the previous
  // stamp: a timestamp is never ahead of this replica's own clock, which keeps honest proposals
  // inside every honest receiver's window even at the full skew ε.
  propose_claim_if_due();
  const uint64_t slot = local_us_ - local_us_ % options_.slot_us;
  if (unproposed_.empty() || slot <= last_proposal_us_) return;
  if (!member_at(slot)) {
    // Removed from the membership while holding requests: the members order them.
    unproposed_.clear();
    unproposed_keys_.clear();
    unproposed_bytes_ = 0;
    return;
  }
  Proposal proposal{options_.self, slot, {}, {}};
  size_t bytes = 0;
  size_t taken = 0;
  for (; taken < unproposed_.size(); ++taken) {
    ClientRequest& request = unproposed_[taken];
    if (proposal.requests.size() == options_.requests_per_proposal_max) break;
    if (!proposal.requests.empty() && bytes + request.command.size() > options_.proposal_bytes_max)
      break;
    const RequestKey key{request.client, request.sequence};
    unproposed_keys_.erase(key);
    unproposed_bytes_ -= request.command.size();
    // Decided meanwhile in someone else's proposal. (A request inside an undecided value is
    // still proposed: its origin may be faulty and equivocate on every instance it puts it in.)
    if (decided_digests_.contains(key)) continue;
    bytes += request.command.size();
    proposal.requests.push_back(std::move(request));
  }
  unproposed_.erase(unproposed_.begin(), unproposed_.begin() + static_cast<ptrdiff_t>(taken));
  if (proposal.requests.empty()) return;
  broadcast_proposal(std::move(proposal));
}

void Core::broadcast_proposal(Proposal proposal) {
  last_proposal_us_ = proposal.timestamp_us;
  const Digest digest = crypto::proposal_digest(proposal);
  const InstanceKey key{proposal.timestamp_us, options_.self};
  SignedProposal message{std::move(proposal), {}};
  message.chain.push_back(
      Endorsement{options_.self, options_.signer->sign(crypto::endorsement_signing_bytes(digest))});
  for (const ClientRequest& r : message.proposal.requests) {
    ++in_instances_[RequestKey{r.client, r.sequence}];
  }
  send_to_members(key.first, message);
  instances_[key].values.push_back(Accepted{digest, std::move(message)});
}

void Core::propose_due_backups() {
  if (!member_at(local_us_)) {
    backups_.clear();
    backup_order_.clear();
    return;
  }
  while (!backup_order_.empty() && backup_order_.front().first <= local_us_) {
    const RequestKey key = backup_order_.front().second;
    backup_order_.pop_front();
    auto it = backups_.find(key);
    if (it == backups_.end() || it->second.propose_at_us > local_us_) continue;  // gone or moved
    Backup& backup = it->second;
    backup.propose_at_us = saturating_add(local_us_, options_.relay_timeout_us);
    backup_order_.emplace_back(backup.propose_at_us, key);
    // Not decided within twice the time an honest owner needs: propose it ourselves, even if some
    // undecided value holds it (a faulty owner could equivocate on it forever). A copy decided
    // twice runs once: the session table answers the second as a duplicate.
    if (!unproposed_keys_.insert(key).second) continue;
    unproposed_bytes_ += backup.request.command.size();
    unproposed_.push_back(backup.request);
  }
}

void Core::decide_due() {
  if (removed_) return;  // takes part in nothing after the change that removed it
  for (;;) {
    // A boundary once every instance below it is decided (none can be accepted any more).
    if (grid_us() != 0 && next_boundary_us_ != 0 &&
        decision_time_us(next_boundary_us_ - 1) < local_us_ &&
        (instances_.empty() || instances_.begin()->first.first >= next_boundary_us_)) {
      if (next_boundary_us_ > loaded_boundary_us_) decided_.push_back(Boundary{next_boundary_us_});
      if (recovering_ && next_boundary_us_ % options_.checkpoint_interval_us == 0) {
        // A replica waiting for a state keeps the batches from the previous checkpoint boundary
        // on (votes for it are in by now) or from the oldest one vouched for, not everything
        // since its start: a recovery can wait for the operator for long (found by review).
        uint64_t from = next_boundary_us_ - options_.checkpoint_interval_us;
        if (!vouched_.empty()) from = std::min(from, vouched_.begin()->first);
        loadable_from_us_ = std::max(loadable_from_us_, from);
      }
      next_boundary_us_ += grid_us();
      continue;
    }
    if (instances_.empty()) break;
    auto it = instances_.begin();
    const InstanceKey key = it->first;
    if (decision_time_us(key.first) >= local_us_) break;
    Instance& instance = it->second;
    for (const Accepted& value : instance.values) {
      for (const ClientRequest& r : value.message.proposal.requests) {
        auto count = in_instances_.find(RequestKey{r.client, r.sequence});
        LOCKSTEP_ASSERT(count != in_instances_.end() && count->second > 0,
                        "every held request is counted");
        if (--count->second == 0) in_instances_.erase(count);
      }
    }
    const bool decided = instance.values.size() == 1 ||
                         (options_.planted.ignore_equivocation && !instance.values.empty());
    if (!decided) {
      ++rejections_.equivocations;
    } else if (!instance.values.front().message.proposal.claim.empty() &&
               on_claim_decided(key, instance.values.front().message.proposal)) {
      // A whole-cluster recovery completed at this claim: only what is decided after it runs.
    } else if (key.first >= loaded_boundary_us_) {
      Accepted& value = instance.values.front();
      adopt_decided_changes(key, value.message.proposal);
      decided_.push_back(DecidedBatch{key, std::move(value.message.proposal), value.digest});
    }
    instances_.erase(it);
    last_decided_ = key;
  }
  drain_decided();
}

void Core::execute_decided(const InstanceKey& key, Proposal& proposal) {
  LOCKSTEP_ASSERT(proposal.timestamp_us == key.first && proposal.origin == key.second,
                  "a batch runs under its own instance");
  uint64_t index = 0;
  for (ClientRequest& request : proposal.requests) {
    ++index;
    // A faulty origin can put anything in its proposal; every honest replica checks the same
    // signatures with the same keys and so skips the same requests.
    const std::optional<Digest> digest = checked_digest(request);
    if (!digest) continue;
    const RequestKey request_key{request.client, request.sequence};
    backups_.erase(request_key);
    auto [first, inserted] = decided_digests_.emplace(request_key, *digest);
    if (inserted) {
      decided_order_.push_back(request_key);
      if (decided_order_.size() > kDecidedRequestsMax) {
        decided_digests_.erase(decided_order_.front());
        decided_order_.pop_front();
      }
    } else if (first->second != *digest) {
      ++rejections_.client_equivocations;  // the session table answers it as a duplicate
    }
    executable_.push_back(
        OrderedEntry{index, Timestamp{key.first, key.second}, std::move(request)});
  }
}

std::optional<Digest> Core::checked_digest(const ClientRequest& request) {
  const Digest digest = crypto::request_digest(request);
  if (verified_requests_.contains(digest)) return digest;
  if (!options_.verifier->knows_client(principal_of(request.client))) {
    ++rejections_.unknown_client;
    return std::nullopt;
  }
  if (!crypto::verify_request(*options_.verifier, request)) {
    ++rejections_.bad_client_signature;
    return std::nullopt;
  }
  remember(verified_requests_, verified_order_, digest, kVerifiedRequestsMax);
  return digest;
}

void Core::drain_decided() {
  leave_order_if_diverged();  // found by a vote outside this loop (checkpoint_taken)
  while (!decided_.empty() && !boundary_due_ && !removed_) {
    auto& front = decided_.front();
    if (recovering_) {
      // Keep what it saw whole from the oldest boundary it could still load: the state it will
      // load is of a boundary at or after its start.
      const uint64_t at = std::holds_alternative<Boundary>(front)
                              ? std::get<Boundary>(front).boundary_us
                              : std::get<DecidedBatch>(front).key.first;
      // (A completed recovery fetching its target runs everything decided after it: all kept.)
      if (at >= (recovery_ ? participation_start_us_
                           : std::max(participation_start_us_, loadable_from_us_))) {
        return;
      }
      decided_.pop_front();
      continue;
    }
    if (auto* boundary = std::get_if<Boundary>(&front)) {
      at_position(boundary->boundary_us);
    } else {
      auto& batch = std::get<DecidedBatch>(front);
      record_executed(batch.proposal, batch.digest);
      execute_decided(batch.key, batch.proposal);
    }
    decided_.pop_front();
    if (divergence_due_) {
      leave_order_if_diverged();
      return;
    }
  }
}

// ---- invariants -----------------------------------------------------------------------------

void Core::check_invariants() const {
  std::map<RequestKey, uint32_t> counted;
  for (const auto& [key, instance] : instances_) {
    LOCKSTEP_ASSERT(!instance.values.empty() && instance.values.size() <= 2,
                    "an instance holds one or two values");
    LOCKSTEP_ASSERT(!last_decided_ || key > *last_decided_,
                    "no value is held for an instance already decided");
    LOCKSTEP_ASSERT(removed_ || decision_time_us(key.first) >= local_us_,
                    "an instance past its decision time is decided at once");
    for (const Accepted& value : instance.values) {
      LOCKSTEP_ASSERT(value.message.proposal.origin == key.second &&
                          value.message.proposal.timestamp_us == key.first,
                      "a value sits under its own instance");
      LOCKSTEP_ASSERT(
          !value.message.chain.empty() && value.message.chain.front().signer == key.second,
          "a chain starts with the origin");
      for (const ClientRequest& r : value.message.proposal.requests)
        ++counted[RequestKey{r.client, r.sequence}];
    }
    if (instance.values.size() == 2) {
      LOCKSTEP_ASSERT(instance.values[0].digest != instance.values[1].digest,
                      "two values of one instance differ");
    }
  }
  LOCKSTEP_ASSERT(counted == in_instances_, "in_instances_ counts exactly the held requests");
  LOCKSTEP_ASSERT(unproposed_.size() == unproposed_keys_.size(),
                  "unproposed requests are counted once");
  LOCKSTEP_ASSERT(backups_.size() <= options_.backups_max, "backups are bounded");
  LOCKSTEP_ASSERT(unproposed_.size() <= 2 * options_.backups_max,
                  "the proposal queue is bounded (owned requests plus due backups)");
  LOCKSTEP_ASSERT(backup_order_.size() >= backups_.size(), "every backup has a due time");
  LOCKSTEP_ASSERT(last_proposal_us_ <= local_us_, "no proposal is stamped ahead of the clock");
  LOCKSTEP_ASSERT(decided_order_.size() == decided_digests_.size(),
                  "the decided-request memo is consistent");
  LOCKSTEP_ASSERT(durable() || (since_base_.empty() && persist_.empty()),
                  "only a durable replica logs");
  for (size_t i = 0; i < since_base_.size(); ++i) {
    const Proposal& p = since_base_[i];
    LOCKSTEP_ASSERT(p.timestamp_us >= base_.vouch.position_us, "batches follow their base");
    const bool in_order =
        i == 0 || std::pair(since_base_[i - 1].timestamp_us, since_base_[i - 1].origin) <
                      std::pair(p.timestamp_us, p.origin);
    LOCKSTEP_ASSERT(in_order, "batches after the base are in the order");
  }
  LOCKSTEP_ASSERT(!recovery_ || (recovering_ && from_disk_),
                  "only a replica recovering from its disk completes a recovery by claims");
  LOCKSTEP_ASSERT(best_certificate_.position_us >= base_.vouch.position_us,
                  "the base is certified");
}

}  // namespace lockstep::byzantine
