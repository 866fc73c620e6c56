// Reconfiguration of the failstop protocol (docs/DESIGN.md §12): adding a replica by a view change
// and a state transfer, removing one on an operator's word, and the joiner's own side.
//
// Adding reuses the view change that removes failed replicas: the proposal grows instead of
// shrinking, the members that already belong report, the lowest of them decides. The new member
// then loads the state of a member that installed the decision (the decision's sender) and
// carries on from there; every member resends it their unexecuted entries once it speaks.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <variant>

#include "core/assert.h"
#include "core/wire.h"
#include "protocol/failstop/core.h"

namespace lockstep::failstop {

// ---- a member's side ------------------------------------------------------------------------

void Core::on_join_request(Now now, const JoinRequest& request) {
  const ReplicaId joiner = request.sender;
  if (is_member(joiner)) {
    // A member that asks to join has lost its state (a wiped disk, a restart with none): it is
    // removed first, and added when it asks again. Unless it has said nothing since it was added:
    // then the request may be one sent before it learnt, still in flight, and the decision (sent
    // again here) is the answer; if it did restart meanwhile, its silence gets it removed.
    const uint64_t known = peers_[joiner.value].incarnation;
    if (known != 0 && known != request.incarnation) {
      suspect(now, {joiner});
    } else if (last_new_view_ && now.monotonic_ns >= removed_notice_ns_[joiner.value] +
                                                         options_.heartbeat_interval_ns) {
      removed_notice_ns_[joiner.value] = now.monotonic_ns;
      outbox_.push_back(Send{joiner, *last_new_view_});
    }
    return;
  }
  if (contains_joining_or_barred(joiner)) return;
  admit(now, joiner);
}

bool Core::contains_joining_or_barred(ReplicaId replica) const {
  return joining_.count(replica) != 0 || barred_.count(replica) != 0;
}

void Core::persist_bars() {
  if (!options_.durable || replaying_) return;
  // In log order after the entries accepted so far, like every record.
  flush_entry_records();
  Bytes payload;
  Writer w(payload);
  w.varint(barred_.size());
  for (ReplicaId r : barred_)
    w.varint(r.value);
  persist_.push_back(PersistRecord{static_cast<uint8_t>(RecordType::kBars), std::move(payload)});
}

void Core::admit(Now now, ReplicaId joiner) {
  joining_.insert(joiner);
  target_view_ = ViewNumber{std::max(target_view_, view_).value + 1};
  broadcast_view_change(now);
}

void Core::on_state_request(Now now, const StateRequest& request) {
  if (request.donor != options_.self || request.view > view_) return;
  // The joiner asks every heartbeat; the state may be large, so it goes again only after a
  // retry interval (a lost one is resent; the channel is reliable while both are up).
  uint64_t& served = state_served_ns_[request.sender.value];
  if (served != 0 && now.monotonic_ns < served + options_.view_change_retry_ns) return;
  served = now.monotonic_ns;
  // The blobs are filled by the Replica at the end of this step, from one moment (the core's
  // checkpoint_state and the service snapshot, both after this step's executions).
  outbox_.push_back(Send{request.sender, StateTransfer{options_.self, view_, {}, {}}});
}

std::string Core::change_membership(Now now, MembershipChange change, ReplicaId replica) {
  if (halted_) return "this replica is halted (removed from the membership)";
  if (joining()) return "this replica is still joining; ask a member";
  if (replica.value >= options_.replica_count) {
    return "no replica " + std::to_string(replica.value) + " in the cluster file";
  }
  notice_own_pause(now);
  const std::string name = "replica " + std::to_string(replica.value);
  if (change == MembershipChange::kAdd) {
    if (is_member(replica)) return name + " is already a member";
    if (barred_.erase(replica) != 0) persist_bars();
    return "";  // it is added when it asks (runs with --join, or restarts after its removal)
  }
  if (!is_member(replica)) return name + " is not a member";
  const std::vector<ReplicaId> proposed = proposed_members();
  const bool last = std::none_of(proposed.begin(), proposed.end(),
                                 [&](ReplicaId r) { return r != replica && is_member(r); });
  if (last) return "cannot remove the last member";
  barred_.insert(replica);  // so that it is not added back when it asks
  persist_bars();
  if (replica == options_.self) {
    leaving_self_ = true;  // it reports its stream to the others, then halts on their decision
  } else if (suspected_.count(replica) == 0) {
    leaving_.insert(replica);
  }
  target_view_ = ViewNumber{std::max(target_view_, view_).value + 1};
  broadcast_view_change(now);
  return "";
}

// ---- the joiner's side ----------------------------------------------------------------------

void Core::joiner_on_message(Now now, const ReplicaMessage& message) {
  const auto* decision = std::get_if<NewView>(&message);
  if (decision == nullptr || decision->view <= state_view_) return;
  state_view_ = decision->view;
  if (std::binary_search(decision->members.begin(), decision->members.end(), options_.self)) {
    join_phase_ = JoinPhase::kAwaitingState;
    state_donor_ = decision->sender;
    donor_since_ns_ = now.monotonic_ns;
    members_ = decision->members;
    suspected_.clear();  // whatever it recovered from its disk is replaced by the state it loads
    joining_.clear();
    reports_.clear();
    state_request_sent_ns_ = 0;
    joiner_tick(now);
  } else if (join_phase_ == JoinPhase::kAwaitingState) {
    join_phase_ = JoinPhase::kAsking;  // removed again (it was too slow to load): ask again
    join_sent_ns_ = 0;
  }
}

void Core::joiner_tick(Now now) {
  if (join_phase_ == JoinPhase::kAsking) {
    if (join_sent_ns_ != 0 && now.monotonic_ns < join_sent_ns_ + options_.view_change_retry_ns) {
      return;
    }
    join_sent_ns_ = std::max<uint64_t>(now.monotonic_ns, 1);
    for (uint32_t id = 0; id < options_.replica_count; ++id) {
      if (id == options_.self.value) continue;
      outbox_.push_back(Send{ReplicaId{id}, JoinRequest{options_.self, options_.incarnation}});
    }
    return;
  }
  if (state_request_sent_ns_ != 0 &&
      now.monotonic_ns < state_request_sent_ns_ + options_.heartbeat_interval_ns) {
    return;
  }
  if (now.monotonic_ns >= donor_since_ns_ + options_.view_change_retry_ns) {
    // No state from this donor within a retry interval (it may have failed, and while this
    // replica keeps asking, the view change that would remove the donor cannot finish: this
    // replica is a member that must report): ask the next member. Any member that installed a
    // view adding this replica has a complete state (§12.2). Found by review.
    auto next = std::upper_bound(members_.begin(), members_.end(), state_donor_);
    for (size_t tried = 0; tried < members_.size(); ++tried, ++next) {
      if (next == members_.end()) next = members_.begin();
      if (*next != options_.self) break;
    }
    state_donor_ = *next;
    donor_since_ns_ = now.monotonic_ns;
  }
  // To every member, not only the donor: the request is also this replica's heartbeat while it
  // loads, so that the members do not time it out.
  state_request_sent_ns_ = std::max<uint64_t>(now.monotonic_ns, 1);
  for (ReplicaId r : members_) {
    if (r == options_.self) continue;
    outbox_.push_back(Send{r, StateRequest{options_.self, state_view_, state_donor_}});
  }
}

void Core::state_arriving(Now now, ReplicaId donor) {
  // Moving on to another donor is for one that failed; a large state in pieces takes longer than
  // the retry interval. Any member that installed the view is a good donor (§12.2): the one
  // sending becomes the one asked, so that the others do not build a copy as well.
  if (!awaits_state() || donor == options_.self || !is_member(donor)) return;
  state_donor_ = donor;
  donor_since_ns_ = now.monotonic_ns;
}

void Core::load_state(Now now, const StateTransfer& transfer) {
  LOCKSTEP_ASSERT(awaits_state(), "load_state only while waiting for a state");
  // Decoded into a fresh core first, so a malformed state leaves this one as it was.
  Options options = options_;
  options.initial_members.clear();
  options.join = false;
  Core loaded(options);
  loaded.replaying_ = true;
  loaded.load_checkpoint(transfer.protocol_state);
  loaded.replaying_ = false;
  if (!loaded.is_member(options_.self) || loaded.view_ < state_view_) {
    throw std::runtime_error("state transfer: the donor's state does not make this a member");
  }
  loaded.started_ = true;
  loaded.last_input_ns_ = now.monotonic_ns;
  // Above every timestamp in the state (its own old entries included) and every clock the donor
  // had sent; the next clock lease is persisted on the first send.
  loaded.clock_.observe(loaded.clock_ceiling_, now.wall_us);
  const Stream& own = loaded.streams_[options_.self.value];
  if (!own.unexecuted.empty()) loaded.clock_.observe(own.unexecuted.back().timestamp.clock, 0);
  loaded.clock_ceiling_ = 0;
  for (ReplicaId r : loaded.members_) {
    if (r == options_.self) continue;
    loaded.peers_[r.value].last_heard_ns = now.monotonic_ns;
    // What it hears of a stream connects only after the source resends, on this replica's first
    // update; until then updates that skip entries are ignored, not taken as failures.
    loaded.connected_[r.value] = false;
    loaded.joined_unheard_[r.value] = true;
  }
  loaded.acknowledgement_due_ = true;
  loaded.outbox_ = std::move(outbox_);
  *this = std::move(loaded);
}

}  // namespace lockstep::failstop
