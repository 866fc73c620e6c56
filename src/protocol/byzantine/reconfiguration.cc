// Byzantine membership changes signed by an administrator (docs/DESIGN.md §11.9).
//
// A change is a request of the administrator's principal (crypto/membership.h), ordered like any
// other. Every replica applies it when its instance is decided, not when it executes: decision
// times are the same function of the order everywhere, while execution can wait for a checkpoint
// snapshot, and the margin a change must leave is counted from its decision. Validity depends
// only on the order (the change's timestamp τ_c and the schedule before it), so every honest
// replica keeps the same schedule; the outcome, accepted or refused with the reason, is the
// request's reply, recorded in the session table like any output.
#include <algorithm>

#include "core/assert.h"
#include "core/codec.h"
#include "core/wire.h"
#include "crypto/signing.h"
#include "protocol/byzantine/core.h"

namespace lockstep::byzantine {
namespace {

Bytes text(std::string s) {
  return Bytes(s.begin(), s.end());
}

}  // namespace

uint64_t Core::change_margin_us(uint64_t executed_us) const {
  // Every honest replica has decided the change by its local decision_time(τ_c). A value of an
  // instance at E is accepted no earlier than E - m·ε, m ≤ the listed replicas (distinct
  // signers): so E must be that far past the decision time, plus Δ of slack for the step.
  const uint64_t decided_after = decision_time_us(executed_us) - executed_us;
  return decided_after + options_.replica_count * options_.epsilon_us + options_.delta_us +
         options_.slot_us;
}

void Core::adopt_decided_changes(const InstanceKey& key, const Proposal& proposal) {
  uint64_t index = 0;
  for (const ClientRequest& request : proposal.requests) {
    ++index;
    if (!from_administrator(request) || !checked_digest(request)) continue;
    // A replica catching up neither executes nor trusts what it decided below where it may load
    // (it may not have seen those instances whole): the state it loads holds those changes. (A
    // faulty origin replaying the administrator's requests could grow the outputs otherwise.)
    if (recovering_ && key.first < std::max(participation_start_us_, loadable_from_us_)) continue;
    std::optional<std::string> refusal;
    std::optional<ConfigurationChange> change = decode_configuration_change(request.command);
    if (!change) {
      refusal = "not a membership change";
    } else if (durable()) {
      refusal = "membership changes are not built for durable byzantine clusters";
    } else {
      refusal = schedule_.validate(*change, key.first, options_.replica_count,
                                   change_margin_us(key.first), options_.checkpoint_interval_us);
    }
    // (A catching-up replica that learned the change early refuses it here as not the next
    // epoch; it executes nothing before it loads a state, and then decides again, below.)
    if (!refusal) {
      schedule_.adopt(*change, request);
      change_ordered_at_us_.push_back(key.first);
    }
    change_outputs_[ChangeKey{key.first, key.second, index}] =
        text(refusal ? "refused: " + *refusal : describe(*change));
  }
}

std::optional<Bytes> Core::take_system_output(const OrderedEntry& entry) {
  if (!from_administrator(entry.request)) return std::nullopt;
  const ChangeKey key{entry.timestamp.clock, entry.timestamp.source, entry.index};
  // Outputs of batches that never ran here (below a loaded state) are let go on the way.
  change_outputs_.erase(change_outputs_.begin(), change_outputs_.lower_bound(key));
  auto it = change_outputs_.find(key);
  if (it == change_outputs_.end()) {
    // Replayed from a disk (durable clusters refuse every change, so alike everywhere).
    return text("refused: membership changes are not built for durable byzantine clusters");
  }
  Bytes output = std::move(it->second);
  change_outputs_.erase(it);
  return output;
}

void Core::learn_change_early(const ClientRequest& request) {
  // A replica catching up (a new member started before the change was sent) cannot decide the
  // change: it is not a member before E, so no instance below E reaches it. The administrator
  // sends the change to every listed replica; its signature was checked on arrival (admits()).
  // Taken on trust until the state it loads says otherwise (schedule_agrees_from).
  std::optional<ConfigurationChange> change = decode_configuration_change(request.command);
  if (!change || durable() || !recovering_) return;
  if (schedule_.validate(*change, 0, options_.replica_count, 0, options_.checkpoint_interval_us)) {
    return;
  }
  schedule_.adopt(*change, request);
  change_ordered_at_us_.push_back(UINT64_MAX);
  ++changes_learned_early_;
  // Instances it ignored or judged under the old schedule are not whole: it starts over.
  restart_catch_up();
}

bool Core::schedule_agrees_from(const Schedule& own, uint64_t boundary_us) const {
  // The batches kept from the boundary on were decided under `own`: they are the honest
  // decisions only if it was the honest schedule from there on, and complete only if this
  // replica was a member there (instances reach members only).
  if (!schedule_.at(boundary_us).contains(options_.self)) return false;
  if (!(schedule_.at(boundary_us) == own.at(boundary_us))) return false;
  std::vector<Configuration> loaded_later;
  std::vector<Configuration> own_later;
  for (const Configuration& c : schedule_.configurations())
    if (c.from_us > boundary_us) loaded_later.push_back(c);
  for (const Configuration& c : own.configurations())
    if (c.from_us > boundary_us) own_later.push_back(c);
  return loaded_later == own_later;
}

void Core::probe_membership(const CheckpointVote& vote) {
  if (vote.replica == options_.self) return;
  // One boundary at a time: the newest one votes came for.
  if (vote.boundary_us > probe_.boundary_us) probe_ = Probe{vote.boundary_us, {}, 0, 0, false};
  if (vote.boundary_us != probe_.boundary_us || probe_.answered) return;
  auto& voters = probe_.voters;
  if (std::find(voters.begin(), voters.end(), vote.replica) == voters.end()) {
    voters.push_back(vote.replica);
  }
  probe_next_voter();
}

void Core::probe_next_voter() {
  // One voter at a time (each answer is a whole checkpoint), the next if no answer came within
  // a round trip and some: a donor may be busy sending another transfer to this slot.
  if (probe_.asked >= probe_.voters.size()) return;
  const uint64_t retry_us = 4 * (options_.delta_us + options_.epsilon_us);
  if (probe_.asked > 0 && probe_.asked_at_us != 0 && local_us_ < probe_.asked_at_us + retry_us) {
    return;
  }
  const ReplicaId voter = probe_.voters[probe_.asked++];
  probe_.asked_at_us = local_us_;
  probing_ = true;
  outbox_.push_back(
      Send{voter, StateRequest{options_.self, ViewNumber{probe_.boundary_us}, voter}});
}

void Core::learn_schedule_on_trust(const Schedule& offered) {
  // Only an extension of what it knows: the proofs' signatures were checked on decoding, and
  // the state it loads later vouches for the schedule or makes it start over. An answer that
  // teaches nothing (a stale or faulty voter) sends it to the next voter at once.
  const auto& own = schedule_.configurations();
  const auto& theirs = offered.configurations();
  if (theirs.size() <= own.size() || !std::equal(own.begin(), own.end(), theirs.begin())) {
    probe_.asked_at_us = 0;
    probe_next_voter();
    return;
  }
  probing_ = false;
  probe_.answered = true;
  changes_learned_early_ += theirs.size() - own.size();
  schedule_ = offered;
  change_ordered_at_us_.resize(schedule_.configurations().size() - 1, UINT64_MAX);
  restart_catch_up();
}

Schedule Core::schedule_below(uint64_t boundary_us) const {
  const auto ordered = static_cast<uint64_t>(
      std::count_if(change_ordered_at_us_.begin(), change_ordered_at_us_.end(),
                    [&](uint64_t at) { return at < boundary_us; }));
  return schedule_.truncated(ordered);
}

size_t Core::catch_up_vouchers_needed(uint64_t boundary_us) const {
  // t+1 of the configuration before the boundary, and never fewer than t+1 of the one before
  // that: a catching-up replica may hold the last change on trust only (the administrator signs
  // changes the order can refuse), and a change moves one replica in or out, so a wrong last
  // configuration holds no more faulty replicas than the one before it (DESIGN §11.9).
  const auto& all = schedule_.configurations();
  const Configuration& governing = schedule_.at(boundary_us - 1);
  uint32_t t = governing.t;
  if (governing.epoch > 0) t = std::max(t, all[governing.epoch - 1].t);
  return t + 1;
}

void Core::restart_catch_up() {
  decided_.clear();
  votes_.clear();
  vouched_.clear();
  target_.reset();
  change_outputs_.clear();
  state_requested_us_ = 0;
  loadable_from_us_ = 0;
  participation_start_us_ =
      local_us_ + options_.slot_us + 2 * (options_.delta_us + options_.epsilon_us);
}

void Core::send_to_members(uint64_t timestamp_us, const ReplicaMessage& message,
                           const std::vector<bool>* skip) {
  for (ReplicaId to : schedule_.at(timestamp_us).members) {
    if (to == options_.self || (skip != nullptr && (*skip)[to.value])) continue;
    outbox_.push_back(Send{to, message});
  }
}

Digest vouched_snapshot_digest(std::span<const uint8_t> snapshot, const Schedule& schedule) {
  const Digest service = crypto::digest(snapshot);
  // The first configuration is the cluster file's: nothing to vouch for.
  if (schedule.configurations().size() == 1) return service;
  Bytes both(service.begin(), service.end());
  const Digest proofs = schedule.digest();
  both.insert(both.end(), proofs.begin(), proofs.end());
  return crypto::digest(both);
}

Bytes encode_catch_up_state(const Bytes& base_and_batches, const Bytes& schedule) {
  Bytes out;
  Writer w(out);
  w.bytes(base_and_batches);
  w.bytes(schedule);
  return out;
}

std::optional<std::pair<Bytes, Bytes>> decode_catch_up_state(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  std::span<const uint8_t> base = r.bytes_view();
  std::span<const uint8_t> schedule = r.bytes_view();
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return std::pair{Bytes(base.begin(), base.end()), Bytes(schedule.begin(), schedule.end())};
}

}  // namespace lockstep::byzantine
