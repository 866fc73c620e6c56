#include "protocol/failstop/core.h"

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <utility>

#include "core/assert.h"
#include "core/codec.h"
#include "core/wire.h"
#include "protocol/ownership.h"

namespace lockstep::failstop {
namespace {

template <typename Set>
bool contains(const Set& set, const typename Set::key_type& key) {
  return set.find(key) != set.end();
}

}  // namespace

Core::Core(Options options) : options_(options) {
  LOCKSTEP_ASSERT(options_.replica_count > 0, "a cluster has at least one replica");
  LOCKSTEP_ASSERT(options_.self.value < options_.replica_count, "self must be a replica");
  LOCKSTEP_ASSERT(options_.failure_timeout_ns > 2 * options_.heartbeat_interval_ns,
                  "failure timeout must exceed two heartbeat intervals");
  if (options_.initial_members.empty()) {
    for (uint32_t r = 0; r < options_.replica_count; ++r)
      members_.push_back(ReplicaId{r});
  } else {
    members_ = options_.initial_members;
    LOCKSTEP_ASSERT(std::is_sorted(members_.begin(), members_.end()) &&
                        std::adjacent_find(members_.begin(), members_.end()) == members_.end() &&
                        members_.back().value < options_.replica_count,
                    "initial members are distinct listed replicas, ascending");
    for (uint32_t r = 0; r < options_.replica_count; ++r) {
      if (!is_member(ReplicaId{r})) barred_.insert(ReplicaId{r});
    }
  }
  streams_.resize(options_.replica_count);
  peers_.resize(options_.replica_count);
  for (PeerState& peer : peers_)
    peer.acked.assign(options_.replica_count, 0);
  removed_notice_ns_.assign(options_.replica_count, 0);
  unpersisted_entries_.resize(options_.replica_count);
  resend_own_stream_.assign(options_.replica_count, false);
  connected_.assign(options_.replica_count, true);
  joined_unheard_.assign(options_.replica_count, false);
  state_served_ns_.assign(options_.replica_count, 0);
  if (options_.join || !is_member(options_.self)) join_phase_ = JoinPhase::kAsking;
}

bool Core::is_member(ReplicaId r) const {
  return std::binary_search(members_.begin(), members_.end(), r);
}

// Rendezvous hashing: the member with the highest hash of (client, member) owns the client, so
// a view change moves only the removed replicas' clients, not nearly all of them (as `hash mod
// |members|` would), which keeps re-ordering from backups to the clients that need it.
ReplicaId Core::owner_of(ClientId client) const {
  return rendezvous_owner(client, members_);
}

// ---- inputs ---------------------------------------------------------------------------------

void Core::notice_own_pause(Now now) {
  // If this process itself stopped running (a long GC pause, SIGSTOP, a VM freeze), every peer
  // looks silent when it resumes. Suspecting them all would let this replica form a view of its
  // own; instead give them a fresh timeout, during which their messages (or the news that this
  // replica was removed) arrive.
  if (!started_) {
    started_ = true;
    for (PeerState& peer : peers_)
      peer.last_heard_ns = now.monotonic_ns;
    if (recovered_from_us_) {
      // Down for longer than the failure timeout (by this machine's wall clock, from the last
      // clock lease it persisted, which is at most a lease before its last message): the others
      // may have removed it meanwhile, so it waits for all of them (see tick).
      const uint64_t down_us =
          now.wall_us > *recovered_from_us_ ? now.wall_us - *recovered_from_us_ : 0;
      awaiting_peers_ = members_.size() > 1 && down_us * 1000 >= options_.failure_timeout_ns / 2;
    }
  } else if (now.monotonic_ns > last_input_ns_ + options_.failure_timeout_ns / 2) {
    for (PeerState& peer : peers_)
      peer.last_heard_ns = now.monotonic_ns;
  }
  last_input_ns_ = std::max(last_input_ns_, now.monotonic_ns);
}

void Core::on_client_request(Now now, const ClientRequest& request) {
  // A replica leaving on an operator's word orders nothing more: every report of its stream,
  // its own included, must carry the same stream, or two concurrent decisions could cut it at
  // different points (found by the simulator). Its clients' requests go to their next owner.
  if (halted_ || joining() || leaving_self_) return;
  notice_own_pause(now);
  const RequestKey key{request.client, request.sequence};
  if (contains(ordered_, key)) return;  // already in some stream: it will execute
  if (owner_of(request.client) == options_.self) {
    backups_.erase(key);
    order(now, request);
    return;
  }
  if (contains(backups_, key) || backups_.size() >= options_.backups_max) return;
  backups_.emplace(key, Backup{request, now.monotonic_ns + options_.relay_timeout_ns});
}

void Core::on_message(Now now, ReplicaId from, const ReplicaMessage& message) {
  if (halted_) return;
  notice_own_pause(now);
  if (from.value >= options_.replica_count || from == options_.self) return;
  if (joining()) {
    joiner_on_message(now, message);
    return;
  }
  if (const auto* join = std::get_if<JoinRequest>(&message)) {
    // Not a sign of life for the failure detector: a member that lost its state asks this way.
    if (join->sender == from) on_join_request(now, *join);
    return;
  }
  if (!is_member(from)) {
    // A replica removed from the membership is still talking: tell it, so it halts. Rate-limited
    // because a removed replica may send a burst before the news arrives.
    if (last_new_view_ &&
        now.monotonic_ns >= removed_notice_ns_[from.value] + options_.heartbeat_interval_ns) {
      removed_notice_ns_[from.value] = now.monotonic_ns;
      outbox_.push_back(Send{from, *last_new_view_});
    }
    return;
  }
  // Once suspected, a replica is treated as crashed: what this replica reported of its stream in
  // the view change must stay the last word on what it holds. If it is in fact alive (paused, or
  // its messages were delayed past the timeout), tell it it is being removed, so it halts instead
  // of timing out on everyone and forming a view of its own.
  if ((contains(suspected_, from) || contains(leaving_, from)) &&
      std::holds_alternative<NewView>(message)) {
    // A decision it coordinated before this replica gave up on it (it had this replica's report)
    // is still the decision every other member installs. Ignoring it would leave this replica a
    // view behind, and a later decision of its own could then cut a member added by that view
    // (found by the simulator: the added member halted).
    on_new_view(now, std::get<NewView>(message));
    return;
  }
  if (contains(suspected_, from)) {
    auto own_report = reports_.find(options_.self);
    if (own_report != reports_.end() &&
        now.monotonic_ns >= removed_notice_ns_[from.value] + options_.heartbeat_interval_ns) {
      removed_notice_ns_[from.value] = now.monotonic_ns;
      outbox_.push_back(Send{from, own_report->second});
    }
    return;
  }
  peers_[from.value].last_heard_ns = now.monotonic_ns;
  if (contains(leaving_, from) && !std::holds_alternative<ViewChange>(message)) {
    // Like a suspect, a replica being removed must not grow its stream here after this replica
    // reported it: only its own report is taken (found by the simulator).
    return;
  }
  std::visit(
      [&](const auto& m) {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, ReplicaUpdate>) {
          if (m.sender == from) on_update(now, m);
        } else if constexpr (std::is_same_v<M, ForwardRequest>) {
          on_forward(now, m);
        } else if constexpr (std::is_same_v<M, ViewChange>) {
          if (m.sender == from) on_view_change(now, m);
        } else if constexpr (std::is_same_v<M, NewView>) {
          on_new_view(now, m);
        } else if constexpr (std::is_same_v<M, StateRequest>) {
          if (m.sender == from) on_state_request(now, m);
        }
        // Other modes' messages (SignedProposal) mean a misconfigured peer, and a StateTransfer
        // is for a joiner (the Replica hands it over): ignored.
      },
      message);
}

void Core::on_update(Now now, const ReplicaUpdate& update) {
  const ReplicaId from = update.sender;
  PeerState& peer = peers_[from.value];
  if (update.received.size() != options_.replica_count) return;  // not from this cluster
  const bool first_from_peer = peer.incarnation == 0;
  if (first_from_peer) {
    peer.incarnation = update.incarnation;
    const bool lacks_own_entries =
        update.received[options_.self.value] < streams_[options_.self.value].received;
    if (joined_unheard_[from.value] || lacks_own_entries) {
      // The first update since one of the two loaded a state or was added, or one that lacks
      // entries this replica sent: what it sent before the peer listened may be lost (to a
      // process of the peer's that this replica never heard from, so no new incarnation tells
      // it the peer restarted; found by the simulator, seed 3787), so it resends its
      // unexecuted entries (§10.3, §12). The peer skips what it holds.
      joined_unheard_[from.value] = false;
      resend_own_stream_[from.value] = true;
    }
  } else if (peer.incarnation != update.incarnation) {
    if (!options_.durable || !update.durable) {
      // The peer restarted and lost its state: it is a failed replica.
      suspect(now, {from});
      return;
    }
    // The peer restarted from its disk, where everything it ever acknowledged was synced: it
    // carries on as the same member. Whatever was in flight to it may be lost, so resend this
    // replica's unexecuted entries (it skips what it holds); its clock restarts above its
    // persisted ceiling, so heard_clock stays monotone (§10).
    for (size_t r = 0; r < update.received.size(); ++r) {
      if (update.received[r] < peer.acked[r]) {
        // It acknowledged more before: its disk lost state (wiped, or not synced). Failed.
        suspect(now, {from});
        return;
      }
    }
    peer.incarnation = update.incarnation;
    resend_own_stream_[from.value] = true;
  }
  if (update.view < view_ && last_new_view_ &&
      now.monotonic_ns >= removed_notice_ns_[from.value] + options_.heartbeat_interval_ns) {
    // The peer missed a decision this replica installed (it was in flight when the peer
    // restarted from its disk, say): hand it over, ahead of anything sent after this on the
    // FIFO channel (found by review).
    removed_notice_ns_[from.value] = now.monotonic_ns;
    outbox_.push_back(Send{from, *last_new_view_});
  }
  // This process restarted and lost its state if a peer holds more of this replica's stream
  // than this replica does, or if the first thing it hears from a peer continues a stream it
  // never saw the start of. Then it is the failed one: halt, never suspect the healthy peer, and
  // never count the peer's acknowledgements of the old stream as acknowledgements of the new.
  if (update.received[options_.self.value] > streams_[options_.self.value].received) {
    halt();
    return;
  }
  Stream& stream = streams_[from.value];
  const bool gap = !update.entries.empty() && update.entries.front().index > stream.received + 1;
  if (gap) {
    // This replica recovered from its disk and the peer has not yet rewound to what it holds:
    // ignore the update whole. The peer resends from here once it sees the restart.
    if (!connected_[from.value]) return;
    if (first_from_peer) {
      halt();
      return;
    }
  }
  for (const OrderedEntry& entry : update.entries) {
    if (entry.index <= stream.received) continue;  // already held (resent after a reconnect)
    if (entry.index != stream.received + 1 || entry.timestamp.source != from ||
        entry.timestamp.clock >= update.clock) {
      // FIFO channels make gaps impossible unless the peer lost its state; treat it as failed.
      suspect(now, {from});
      return;
    }
    accept_entry(from, entry);
    acknowledgement_due_ = true;
  }
  // Acknowledgements and clocks given in a view this replica has not installed are not taken: an
  // added member's acknowledgement may be needed there, and the decision is on its way (above).
  // A member that restarted across a decision would otherwise execute without the new member.
  if (update.view > view_) return;
  for (size_t r = 0; r < update.received.size(); ++r) {
    peer.acked[r] = std::max(peer.acked[r], update.received[r]);
  }
  // The clock says "nothing more below it will come from the sender": true only once this replica
  // holds every entry the sender had stamped when it sent the update. Not yet after a recovery
  // (entries in flight were lost; the sender's resend brings them), nor in the first chunks of an
  // update split by entries_per_message_max (the last chunk completes it).
  if (stream.received < update.received[from.value]) return;
  // Connected once an update is current with what this replica holds of the sender's stream. An
  // older one (sent to this replica's previous process, or before the state it loaded was
  // taken, and delivered late) proves nothing about the entries in flight after it; a gap after
  // it must still wait for the sender's resend (found by the simulator, seed 4701).
  if (stream.received == update.received[from.value]) connected_[from.value] = true;
  end_awaiting_peers_if_all_heard(now);
  LOCKSTEP_ASSERT(update.clock >= peer.heard_clock || peer.heard_clock == 0,
                  "FIFO channel delivered a lower clock from the same replica");
  peer.heard_clock = std::max(peer.heard_clock, update.clock);
  clock_.observe(update.clock, now.wall_us);
}

void Core::end_awaiting_peers_if_all_heard(Now now) {
  if (!awaiting_peers_) return;
  for (ReplicaId r : members_) {
    if (r != options_.self && !connected_[r.value]) return;
  }
  awaiting_peers_ = false;
  for (PeerState& peer : peers_)
    peer.last_heard_ns = now.monotonic_ns;  // a fresh timeout from here
}

void Core::on_forward(Now now, const ForwardRequest& forward) {
  on_client_request(now, forward.request);
}

void Core::tick(Now now) {
  if (halted_) return;
  notice_own_pause(now);
  if (joining()) {
    joiner_tick(now);
    return;
  }

  std::set<ReplicaId> silent;
  for (ReplicaId r : members_) {
    // A replica recovered from its disk after a long downtime suspects no one until it has heard
    // from every member of its recovered view: it may have been removed while it was down, by
    // members that are down now, and acting on its stale membership (a view of its own) would
    // lose their later writes. Waiting is safe; a member that never comes back needs an operator
    // (§10.3). After a short downtime the others cannot have removed it, and it carries on.
    if (awaiting_peers_) break;
    if (r == options_.self || contains(suspected_, r)) continue;
    if (now.monotonic_ns > peers_[r.value].last_heard_ns + options_.failure_timeout_ns) {
      silent.insert(r);
    }
  }
  if (!silent.empty()) suspect(now, silent);

  // Agreement when a client crashed in the middle of its broadcast (Schneider §3.1): a request
  // held here but not seen ordered is relayed to its owner.
  for (auto& [key, backup] : backups_) {
    if (backup.next_forward_ns > now.monotonic_ns) continue;
    backup.next_forward_ns = now.monotonic_ns + options_.relay_timeout_ns;
    const ReplicaId owner = owner_of(key.first);
    if (owner != options_.self && !options_.planted.skip_relay) {
      outbox_.push_back(Send{owner, ForwardRequest{options_.self, backup.request}});
    }
  }

  if (target_view_ > view_ &&
      now.monotonic_ns >= view_change_sent_ns_ + options_.view_change_retry_ns) {
    broadcast_view_change(now);
  }
}

// ---- ordering -------------------------------------------------------------------------------

void Core::order(Now now, const ClientRequest& request) {
  Stream& own = streams_[options_.self.value];
  OrderedEntry entry{own.received + 1, Timestamp{clock_.tick(now.wall_us), options_.self}, request};
  accept_entry(options_.self, entry);
  unsent_.push_back(std::move(entry));
}

void Core::accept_entry(ReplicaId source, const OrderedEntry& entry) {
  Stream& stream = streams_[source.value];
  LOCKSTEP_ASSERT(entry.index == stream.received + 1, "streams are contiguous");
  LOCKSTEP_ASSERT(stream.unexecuted.empty() || stream.unexecuted.back().timestamp < entry.timestamp,
                  "timestamps increase along a stream");
  stream.received = entry.index;
  stream.unexecuted.push_back(entry);
  // This replica's clock stays above every entry it holds, so that nothing it stamps later can
  // go below an entry it may already have executed. Entries relayed by a view change's cut (or a
  // loaded state) come without their sender's clock; a replica alone in its view executes them
  // at once (found by the simulator: an operator removed the other two).
  clock_.observe(entry.timestamp.clock, 0);
  if (options_.durable && !replaying_) unpersisted_entries_[source.value].push_back(entry);
  const bool inserted = pending_.emplace(entry.timestamp, source).second;
  LOCKSTEP_ASSERT(inserted, "timestamps are unique");
  const RequestKey key{entry.request.client, entry.request.sequence};
  ++ordered_[key];
  backups_.erase(key);
}

bool Core::stable_and_held_by_all(const OrderedEntry& entry) const {
  const ReplicaId source = entry.timestamp.source;
  if (options_.planted.skip_relay && !is_member(source)) return true;
  for (ReplicaId r : members_) {
    if (r == options_.self) continue;  // this replica holds it, and its clock passed it
    const PeerState& peer = peers_[r.value];
    // Stability (Schneider §3.2.1, test II): everything r sends later carries a clock above
    // heard_clock, and r's channel is FIFO, so nothing at or below entry.timestamp can still
    // come from r.
    if (peer.heard_clock < entry.timestamp.clock) return false;
    // Uniform agreement: r holds the entry too, so it survives this replica's crash.
    if (peer.acked[source.value] < entry.index) return false;
  }
  return true;
}

void Core::collect_executable() {
  // Between proposing to add a replica and installing the view that does, nothing executes: then
  // every entry executed without the new member's acknowledgement was held by every member when
  // the view was decided, so any member's state after installing it covers them all (§12).
  if (target_view_ > view_ && !joining_.empty()) return;
  while (!pending_.empty()) {
    const auto [timestamp, source] = *pending_.begin();
    Stream& stream = streams_[source.value];
    LOCKSTEP_ASSERT(!stream.unexecuted.empty(), "a pending entry is in its stream");
    const OrderedEntry& entry = stream.unexecuted.front();
    LOCKSTEP_ASSERT(entry.timestamp == timestamp, "a stream executes in index order");
    if (!options_.planted.execute_before_stable && !stable_and_held_by_all(entry)) return;
    const RequestKey key{entry.request.client, entry.request.sequence};
    auto ordered = ordered_.find(key);
    LOCKSTEP_ASSERT(ordered != ordered_.end(), "a pending entry is counted in ordered_");
    if (--ordered->second == 0) ordered_.erase(ordered);
    executable_.push_back(std::move(stream.unexecuted.front()));
    stream.unexecuted.pop_front();
    ++stream.executed;
    pending_.erase(pending_.begin());
    ++executed_total_;
  }
}

std::vector<OrderedEntry> Core::take_executable() {
  if (!halted_) collect_executable();
  return std::exchange(executable_, {});
}

std::vector<uint64_t> Core::received_vector() const {
  std::vector<uint64_t> received(options_.replica_count);
  for (size_t r = 0; r < streams_.size(); ++r)
    received[r] = streams_[r].received;
  return received;
}

void Core::broadcast(ReplicaMessage message) {
  // Copies for all destinations but the last, which takes the message itself: on the request
  // path each update carries a batch of entries, and one copy fewer per batch is worth having.
  std::optional<ReplicaId> previous;
  for (ReplicaId r : members_) {
    if (r == options_.self || contains(suspected_, r) || contains(skip_broadcast_to_, r)) continue;
    if (previous) outbox_.push_back(Send{*previous, message});
    previous = r;
  }
  if (previous) outbox_.push_back(Send{*previous, std::move(message)});
}

std::vector<Core::Send> Core::take_messages(Now now) {
  if (halted_) {
    outbox_.clear();
    return {};
  }
  if (joining()) return std::exchange(outbox_, {});
  const bool heartbeat_due =
      now.monotonic_ns >= last_broadcast_ns_ + options_.heartbeat_interval_ns;
  const bool resend_due = std::find(resend_own_stream_.begin(), resend_own_stream_.end(), true) !=
                          resend_own_stream_.end();
  if (!unsent_.empty() || acknowledgement_due_ || heartbeat_due || resend_due) {
    // One clock value for the whole batch: greater than every entry in it, and (FIFO) than
    // everything sent before, so receivers may treat it as this replica's stability frontier.
    const uint64_t clock = clock_.tick(now.wall_us);
    if (options_.durable && clock > clock_ceiling_) {
      // Persisted (the runtime syncs this step's records before sending its messages) before any
      // clock above the old ceiling leaves: a restart resumes above every clock ever sent.
      flush_entry_records();
      clock_ceiling_ = clock + HybridClock::from_wall_us(options_.clock_lease_us);
      Bytes payload;
      Writer(payload).varint(clock_ceiling_);
      persist_.push_back(
          PersistRecord{static_cast<uint8_t>(RecordType::kClockLease), std::move(payload)});
    }
    std::vector<uint64_t> received = received_vector();
    if (resend_due) {
      // Peers that may have lost what was in flight get every unexecuted own entry (a superset
      // of unsent_), in their own updates; the rest get the broadcast below.
      const Stream& own = streams_[options_.self.value];
      for (ReplicaId r : members_) {
        if (r == options_.self || !resend_own_stream_[r.value]) continue;
        resend_own_stream_[r.value] = false;
        if (contains(suspected_, r)) continue;
        size_t next = 0;
        do {
          const size_t end =
              std::min(own.unexecuted.size(), next + options_.entries_per_message_max);
          ReplicaUpdate update{
              options_.self, options_.incarnation, options_.durable, view_, clock, {}, received};
          update.entries.assign(own.unexecuted.begin() + static_cast<ptrdiff_t>(next),
                                own.unexecuted.begin() + static_cast<ptrdiff_t>(end));
          outbox_.push_back(Send{r, std::move(update)});
          next = end;
        } while (next < own.unexecuted.size());
        skip_broadcast_to_.insert(r);
      }
    }
    size_t next = 0;
    do {
      size_t end = next;
      size_t bytes = 0;
      while (end < unsent_.size() && end - next < options_.entries_per_message_max &&
             (end == next || bytes + unsent_[end].request.command.size() <=
                                 options_.entry_bytes_per_message_max)) {
        bytes += unsent_[end].request.command.size();
        ++end;
      }
      ReplicaUpdate update{options_.self, options_.incarnation, options_.durable, view_, clock, {},
                           received};
      update.entries.assign(std::make_move_iterator(unsent_.begin() + next),
                            std::make_move_iterator(unsent_.begin() + end));
      next = end;
      broadcast(std::move(update));
    } while (next < unsent_.size());
    unsent_.clear();
    skip_broadcast_to_.clear();
    acknowledgement_due_ = false;
    last_broadcast_ns_ = now.monotonic_ns;
  }
  return std::exchange(outbox_, {});
}

// ---- view change ----------------------------------------------------------------------------
//
// Replicas suspected of having crashed are removed by agreeing on a new view (membership). Every
// replica that suspects someone broadcasts a ViewChange with the membership it proposes and what
// it holds of the suspects' streams; the coordinator (the lowest id proposed) waits for a report
// from every proposed member with the same view number and membership, fixes each suspect's cut
// at the furthest any member got, and broadcasts the NewView with the entries some lack.
// Suspicions only grow and view numbers only rise, so competing proposals converge on the union.

std::vector<ReplicaId> Core::proposed_members() const {
  std::vector<ReplicaId> proposed;
  for (ReplicaId r : members_) {
    if (contains(suspected_, r) || contains(leaving_, r)) continue;
    if (r == options_.self && leaving_self_) continue;
    proposed.push_back(r);
  }
  proposed.insert(proposed.end(), joining_.begin(), joining_.end());
  std::sort(proposed.begin(), proposed.end());
  return proposed;
}

// The members of a proposal that report and coordinate: those already members here. Replicas
// being added have no state to report; they learn the decision and load a member's state.
std::vector<ReplicaId> Core::reporters(const std::vector<ReplicaId>& proposed) const {
  std::vector<ReplicaId> out;
  for (ReplicaId r : proposed) {
    if (is_member(r)) out.push_back(r);
  }
  return out;
}

void Core::suspect(Now now, const std::set<ReplicaId>& replicas) {
  bool grew = false;
  for (ReplicaId r : replicas) {
    if (r == options_.self || !is_member(r)) continue;
    grew |= suspected_.insert(r).second;
    grew |= leaving_.erase(r) != 0;  // silent after all: no report to wait for
  }
  if (!grew) return;
  target_view_ = ViewNumber{std::max(target_view_, view_).value + 1};
  broadcast_view_change(now);
}

void Core::broadcast_view_change(Now now) {
  LOCKSTEP_ASSERT(target_view_ > view_, "a view change is under way");
  ViewChange change{options_.self, target_view_, proposed_members(), {}};
  // A tail for every replica outside the proposal, including ones removed in earlier views: a
  // reporter may have missed the NewView that removed them, and the coordinator may have too.
  // Replicas being added get one as well: their old stream (if they were members once) is cut
  // alike everywhere before they start a new stretch of it.
  for (uint32_t id = 0; id < options_.replica_count; ++id) {
    const ReplicaId r{id};
    if (std::binary_search(change.members.begin(), change.members.end(), r) && is_member(r)) {
      continue;
    }
    const Stream& stream = streams_[r.value];
    change.tails.push_back(
        StreamTail{r, stream.received,
                   std::vector<OrderedEntry>(stream.unexecuted.begin(), stream.unexecuted.end())});
  }
  view_change_sent_ns_ = now.monotonic_ns;
  reports_[options_.self] = change;
  broadcast(change);
  // The suspects get it too: one that is alive learns at once that it is being removed, and halts
  // (the ViewChange excludes it), before its own timeout could make it suspect everyone else.
  for (ReplicaId r : suspected_)
    outbox_.push_back(Send{r, change});
  try_install_as_coordinator(now);
}

void Core::on_view_change(Now now, const ViewChange& change) {
  if (change.view <= view_) {
    // The sender missed a view this replica installed: hand it the decision. (A proposal that
    // excludes this replica but is no newer than its view was not decided: it may have been
    // sent to this replica's previous process, before it was removed and added again; found by
    // the simulator.)
    if (last_new_view_ && last_new_view_->view >= change.view) {
      outbox_.push_back(Send{change.sender, *last_new_view_});
    }
    return;
  }
  if (!std::binary_search(change.members.begin(), change.members.end(), options_.self) &&
      !leaving_self_) {
    // The others hold this replica failed. In the failstop model that is the truth; serving on
    // would split the service, so stop (a later reintegration brings it back with fresh state).
    // (One that an operator asked to leave reports first, and halts on the decision.)
    halt();
    return;
  }
  std::set<ReplicaId> theirs;
  for (ReplicaId r : members_) {
    if (r == options_.self || contains(leaving_, r)) continue;
    if (!std::binary_search(change.members.begin(), change.members.end(), r)) theirs.insert(r);
  }
  bool changed = false;
  bool grew = false;
  for (ReplicaId r : theirs)
    grew |= suspected_.insert(r).second;
  for (ReplicaId r : change.members) {
    if (!is_member(r)) grew |= joining_.insert(r).second;  // the sender proposes to add it
  }
  const bool same_proposal = proposed_members() == change.members;
  if (change.view > target_view_) {
    target_view_ = change.view;
    changed = true;
  }
  if (grew) changed = true;
  if (!same_proposal && change.view >= target_view_ && grew) {
    // This replica suspects more than the proposal for change.view: propose a fresh number, so
    // one number never names two memberships from this replica.
    target_view_ = ViewNumber{change.view.value + 1};
  }
  reports_[change.sender] = change;
  if (changed) {
    broadcast_view_change(now);
  } else {
    try_install_as_coordinator(now);
  }
}

void Core::try_install_as_coordinator(Now now) {
  if (target_view_ <= view_) return;
  const std::vector<ReplicaId> proposed = proposed_members();
  const std::vector<ReplicaId> reporting = reporters(proposed);
  if (reporting.empty() || reporting.front() != options_.self) return;
  std::vector<ReplicaId> required = reporting;  // and those leaving on an operator's word
  required.insert(required.end(), leaving_.begin(), leaving_.end());
  for (ReplicaId r : required) {
    auto report = reports_.find(r);
    if (report == reports_.end() || report->second.view != target_view_ ||
        report->second.members != proposed) {
      return;
    }
  }
  NewView decision{options_.self, target_view_, proposed, {}};
  for (uint32_t id = 0; id < options_.replica_count; ++id) {
    const ReplicaId removed{id};  // or being added: its stream so far is cut the same way
    if (std::binary_search(reporting.begin(), reporting.end(), removed)) continue;
    // The cut is the furthest any surviving member got. Every entry anyone executed was held by
    // every member (uniform agreement), so it is at or below every report, hence below the cut.
    const StreamTail* furthest = nullptr;
    uint64_t least_received = UINT64_MAX;
    for (ReplicaId r : required) {
      for (const StreamTail& tail : reports_.at(r).tails) {
        if (tail.source != removed) continue;
        least_received = std::min(least_received, tail.received);
        if (!furthest || tail.received > furthest->received) furthest = &tail;
      }
    }
    LOCKSTEP_ASSERT(furthest != nullptr, "the coordinator's own report covers every non-member");
    StreamTail cut{removed, furthest->received, {}};
    for (const OrderedEntry& entry : furthest->entries) {
      if (entry.index > least_received) cut.entries.push_back(entry);
    }
    decision.cuts.push_back(std::move(cut));
  }
  // Send before installing: installing may start the next view change, whose messages must not
  // overtake this decision on the FIFO channels.
  broadcast(decision);
  // Replicas being removed may be alive but slow: tell them, so they halt. Replicas being added
  // learn from it that they are members, and whom to ask for the state.
  for (ReplicaId r : members_) {
    if (contains(suspected_, r)) outbox_.push_back(Send{r, decision});
  }
  for (ReplicaId r : proposed) {
    if (!is_member(r)) outbox_.push_back(Send{r, decision});
  }
  install(now, decision);
}

void Core::on_new_view(Now now, const NewView& decision) {
  if (decision.view <= view_) return;
  if (!std::binary_search(decision.members.begin(), decision.members.end(), options_.self)) {
    halt();
    return;
  }
  install(now, decision);
}

void Core::install(Now now, const NewView& decision) {
  if (options_.durable && !replaying_) {
    // In log order: entries accepted before the decision, then the decision (which may drop some
    // of them beyond a cut), then whatever it relays.
    flush_entry_records();
    Bytes payload;
    encode_replica_message(ReplicaMessage{decision}, payload);
    persist_.push_back(
        PersistRecord{static_cast<uint8_t>(RecordType::kNewView), std::move(payload)});
  }
  for (const StreamTail& cut : decision.cuts) {
    Stream& stream = streams_[cut.source.value];
    if (cut.source == options_.self && stream.received > cut.received) {
      // A decision cutting this replica's own stream below what it holds, while keeping it a
      // member: it was added again from a view that had not seen its latest entries. Rather than
      // rewrite its own history, it stops (and may join again with a member's state).
      halt();
      return;
    }
    if (!options_.planted.skip_relay) {
      for (const OrderedEntry& entry : cut.entries) {
        if (entry.index > stream.received && entry.index <= cut.received) {
          accept_entry(cut.source, entry);
        }
      }
      LOCKSTEP_ASSERT(stream.received >= cut.received, "the cut's entries were all relayed");
    }
    // Entries beyond the cut were held by no surviving member when it reported, so no one
    // executed them: drop them everywhere alike.
    while (stream.received > cut.received) {
      LOCKSTEP_ASSERT(!stream.unexecuted.empty() && stream.executed < stream.received,
                      "an entry beyond the cut was executed");
      const OrderedEntry& last = stream.unexecuted.back();
      pending_.erase(last.timestamp);
      auto ordered = ordered_.find(RequestKey{last.request.client, last.request.sequence});
      if (--ordered->second == 0) ordered_.erase(ordered);
      stream.unexecuted.pop_back();
      --stream.received;
    }
  }
  for (ReplicaId r : decision.members) {
    if (is_member(r) || r == options_.self) continue;
    // Added by this view: it starts from a member's state, so forget what it said before; its
    // first update makes this replica resend its own unexecuted entries (§12).
    PeerState& peer = peers_[r.value];
    peer = PeerState{};
    peer.acked.assign(options_.replica_count, 0);
    peer.last_heard_ns = now.monotonic_ns;
    joined_unheard_[r.value] = true;
    connected_[r.value] = false;
    resend_own_stream_[r.value] = false;
  }
  members_ = decision.members;
  view_ = decision.view;
  for (auto it = joining_.begin(); it != joining_.end();) {
    it = is_member(*it) ? joining_.erase(it) : std::next(it);
  }
  target_view_ = std::max(target_view_, view_);
  for (auto it = suspected_.begin(); it != suspected_.end();) {
    it = is_member(*it) ? std::next(it) : suspected_.erase(it);
  }
  for (auto it = leaving_.begin(); it != leaving_.end();) {
    it = is_member(*it) ? std::next(it) : leaving_.erase(it);
  }
  std::erase_if(reports_, [&](const auto& report) { return report.second.view <= view_; });
  last_new_view_ = decision;
  acknowledgement_due_ = true;
  if (!replaying_)
    end_awaiting_peers_if_all_heard(
        now);  // tell the others how far this replica now holds each stream
  // Requests whose owner was removed and that did not make its cut now belong to a survivor:
  // it orders them from the copies the clients sent it (the session table prevents doubles).
  std::vector<ClientRequest> now_owned;
  for (auto it = backups_.begin(); it != backups_.end();) {
    if (owner_of(it->first.first) == options_.self) {
      now_owned.push_back(std::move(it->second.request));
      it = backups_.erase(it);
    } else {
      ++it;
    }
  }
  for (const ClientRequest& request : now_owned) {
    if (!contains(ordered_, RequestKey{request.client, request.sequence})) order(now, request);
  }
  if (!suspected_.empty() || !joining_.empty() || !leaving_.empty()) {
    // Never lower the target: this replica may already have proposed higher numbers, and one
    // number must not name two memberships from it.
    if (target_view_ <= view_) target_view_ = ViewNumber{view_.value + 1};
    broadcast_view_change(now);
  }
}

void Core::halt() {
  halted_ = true;
  outbox_.clear();
  unsent_.clear();
  executable_.clear();
  if (options_.durable && !replaying_) {
    // Restarted from this disk, it would otherwise recover as a member of a view the others left
    // and halt again on their word, for good (found by a soak: two replicas removed while the
    // machine was overloaded could not come back). With this record it asks to join instead.
    persist_.push_back(PersistRecord{static_cast<uint8_t>(RecordType::kHalted), {}});
  }
}

// ---- invariants -----------------------------------------------------------------------------

void Core::check_invariants() const {
  LOCKSTEP_ASSERT(std::is_sorted(members_.begin(), members_.end()), "members are sorted");
  LOCKSTEP_ASSERT(halted_ || joining() || is_member(options_.self),
                  "a serving replica is a member");
  for (ReplicaId r : joining_) {
    LOCKSTEP_ASSERT(!is_member(r) && r != options_.self, "replicas being added are not members");
  }
  LOCKSTEP_ASSERT(target_view_ >= view_, "the target view is never behind the installed one");
  size_t unexecuted_total = 0;
  for (size_t s = 0; s < streams_.size(); ++s) {
    const Stream& stream = streams_[s];
    LOCKSTEP_ASSERT(stream.executed + stream.unexecuted.size() == stream.received,
                    "a stream is executed entries then unexecuted ones");
    uint64_t expected_index = stream.executed + 1;
    for (const OrderedEntry& entry : stream.unexecuted) {
      LOCKSTEP_ASSERT(entry.index == expected_index++, "unexecuted entries are contiguous");
      LOCKSTEP_ASSERT(entry.timestamp.source.value == s, "an entry sits in its source's stream");
      LOCKSTEP_ASSERT(contains(pending_, entry.timestamp), "an unexecuted entry is pending");
    }
    unexecuted_total += stream.unexecuted.size();
  }
  LOCKSTEP_ASSERT(unexecuted_total == pending_.size(), "pending holds exactly the unexecuted");
  size_t ordered_total = 0;
  for (const auto& [key, count] : ordered_)
    ordered_total += count;
  LOCKSTEP_ASSERT(ordered_total == pending_.size(), "ordered_ counts every pending entry");
  LOCKSTEP_ASSERT(pending_.empty() || pending_.rbegin()->first.clock <= clock_.value(),
                  "the clock is above every entry held");
  for (ReplicaId r : suspected_) {
    LOCKSTEP_ASSERT(r != options_.self && is_member(r), "suspects are other members");
  }
  for (ReplicaId r : leaving_) {
    LOCKSTEP_ASSERT(r != options_.self && is_member(r) && !contains(suspected_, r),
                    "replicas leaving are other members, not suspected");
  }
  LOCKSTEP_ASSERT(backups_.size() <= options_.backups_max, "backups are bounded");
}

bool Core::replies_to(const OrderedEntry& entry) const {
  const ReplicaId orderer = entry.timestamp.source;
  return orderer == options_.self ||
         (!is_member(orderer) && owner_of(entry.request.client) == options_.self);
}

// ---- durability -----------------------------------------------------------------------------
//
// Log records, in the order the core produced them: kEntries (a ReplicaUpdate naming the source,
// carrying entries of its stream this replica accepted), kNewView (a decision it installed),
// kClockLease (a varint: no clock value above it was sent). A checkpoint holds the view, the
// membership, the ceiling, the latest decision, and per stream the received and executed counts
// with the unexecuted entries. Recovery applies the checkpoint, then the records, exactly as the
// live replica did, with outputs suppressed.

namespace {

// Version 2 adds the replicas barred from joining (§12.3), so that a restarted member or a joiner
// that loads the state keeps the operator's word. Version 1 is still read.
constexpr uint8_t kCheckpointVersion = 2;

[[noreturn]] void recovery_error(const std::string& what) {
  throw std::runtime_error("failstop recovery: " + what);
}

template <typename T>
T decode_message(std::span<const uint8_t> bytes, const char* what) {
  auto decoded = decode_replica_message(bytes);
  if (auto* error = std::get_if<DecodeError>(&decoded)) {
    recovery_error(std::string(what) + ": " + error->reason);
  }
  auto* message = std::get_if<T>(&std::get<ReplicaMessage>(decoded));
  if (message == nullptr) recovery_error(std::string(what) + ": unexpected message type");
  return std::move(*message);
}

}  // namespace

void Core::flush_entry_records() {
  for (uint32_t source = 0; source < options_.replica_count; ++source) {
    std::vector<OrderedEntry>& entries = unpersisted_entries_[source];
    if (entries.empty()) continue;
    ReplicaUpdate record{ReplicaId{source}, 0, false, ViewNumber{}, 0, std::move(entries), {}};
    entries.clear();
    Bytes payload;
    encode_replica_message(ReplicaMessage{std::move(record)}, payload);
    persist_.push_back(
        PersistRecord{static_cast<uint8_t>(RecordType::kEntries), std::move(payload)});
  }
}

std::vector<OrderingCore::PersistRecord> Core::take_persist() {
  if (!options_.durable) {
    for (auto& entries : unpersisted_entries_)
      entries.clear();
    persist_.clear();
    return {};
  }
  if (halted_) {
    // What it logged up to halting, the kHalted record last; nothing after.
    for (auto& entries : unpersisted_entries_)
      entries.clear();
    return std::exchange(persist_, {});
  }
  flush_entry_records();
  return std::exchange(persist_, {});
}

Bytes Core::checkpoint_state() const {
  Bytes out;
  Writer w(out);
  w.u8(kCheckpointVersion);
  w.varint(view_.value);
  w.varint(members_.size());
  for (ReplicaId r : members_)
    w.varint(r.value);
  w.varint(std::max(clock_ceiling_, clock_.value()));
  w.varint(barred_.size());
  for (ReplicaId r : barred_)
    w.varint(r.value);
  Bytes new_view;
  if (last_new_view_) encode_replica_message(ReplicaMessage{*last_new_view_}, new_view);
  w.bytes(new_view);
  w.varint(streams_.size());
  for (size_t source = 0; source < streams_.size(); ++source) {
    const Stream& stream = streams_[source];
    w.varint(stream.executed);
    ReplicaUpdate entries{
        ReplicaId{static_cast<uint32_t>(source)},
        0,
        false,
        ViewNumber{},
        0,
        std::vector<OrderedEntry>(stream.unexecuted.begin(), stream.unexecuted.end()),
        {}};
    Bytes encoded;
    encode_replica_message(ReplicaMessage{std::move(entries)}, encoded);
    w.bytes(encoded);
  }
  return out;
}

void Core::load_checkpoint(std::span<const uint8_t> state) {
  Reader r(state);
  const uint8_t version = r.u8();
  if (version != 1 && version != 2) recovery_error("checkpoint: unknown version");
  view_ = ViewNumber{r.varint()};
  target_view_ = view_;
  members_.clear();
  const uint64_t member_count = r.count();
  for (uint64_t i = 0; i < member_count && r.ok(); ++i) {
    const uint64_t id = r.varint();
    if (id >= options_.replica_count) recovery_error("checkpoint: member id out of range");
    members_.push_back(ReplicaId{static_cast<uint32_t>(id)});
  }
  clock_ceiling_ = r.varint();
  if (version >= 2) {
    barred_.clear();
    const uint64_t barred_count = r.count();
    for (uint64_t i = 0; i < barred_count && r.ok(); ++i) {
      const uint64_t id = r.varint();
      if (id >= options_.replica_count) recovery_error("checkpoint: barred id out of range");
      barred_.insert(ReplicaId{static_cast<uint32_t>(id)});
    }
  }
  const auto new_view = r.bytes_view();
  if (!new_view.empty()) last_new_view_ = decode_message<NewView>(new_view, "checkpoint view");
  if (r.count() != options_.replica_count) recovery_error("checkpoint: wrong stream count");
  for (uint32_t source = 0; source < options_.replica_count && r.ok(); ++source) {
    Stream& stream = streams_[source];
    stream.executed = r.varint();
    stream.received = stream.executed;
    const auto encoded = r.bytes_view();
    if (!r.ok()) break;
    for (const OrderedEntry& entry :
         decode_message<ReplicaUpdate>(encoded, "checkpoint stream").entries) {
      if (entry.index != stream.received + 1) recovery_error("checkpoint: stream gap");
      accept_entry(ReplicaId{source}, entry);
    }
  }
  if (!r.ok() || !r.at_end()) recovery_error("checkpoint: malformed protocol state");
  if (!std::is_sorted(members_.begin(), members_.end()) || members_.empty()) {
    recovery_error("checkpoint: malformed membership");
  }
}

void Core::recover(std::span<const uint8_t> checkpoint_state,
                   const std::vector<PersistRecord>& records) {
  LOCKSTEP_ASSERT(!started_ && executed_total_ == 0 && pending_.empty(),
                  "recover() comes before any input");
  // An empty disk: a first start (or a wiped disk, which peers recognise by its acknowledgements
  // going backwards, see on_update). Nothing to rebuild and no membership to doubt.
  if (checkpoint_state.empty() && records.empty()) return;
  replaying_ = true;
  if (!checkpoint_state.empty()) load_checkpoint(checkpoint_state);
  for (const PersistRecord& record : records)
    apply_record(record);
  replaying_ = false;
  // Above every clock value this replica ever sent, and every timestamp it ever issued.
  clock_.observe(clock_ceiling_, 0);
  const Stream& own = streams_[options_.self.value];
  if (!own.unexecuted.empty()) clock_.observe(own.unexecuted.back().timestamp.clock, 0);
  // Removed while it was down (or by its own last records): it has no say in the current state,
  // so it asks to be added again and takes a member's state (§12).
  const bool removed = halted_ || !is_member(options_.self);
  halted_ = false;
  join_phase_ = removed ? JoinPhase::kAsking : JoinPhase::kNone;
  if (clock_ceiling_ != 0) {
    const uint64_t ceiling_us = HybridClock::wall_us_of(clock_ceiling_);
    recovered_from_us_ =
        ceiling_us > options_.clock_lease_us ? ceiling_us - options_.clock_lease_us : 0;
  } else {
    recovered_from_us_ = 0;  // nothing sent before: nothing to wait for, unless far in the past
  }
  for (ReplicaId r : members_) {
    if (r == options_.self) continue;
    resend_own_stream_[r.value] = true;
    connected_[r.value] = false;
  }
  acknowledgement_due_ = true;
}

void Core::apply_record(const PersistRecord& record) {
  switch (static_cast<RecordType>(record.type)) {
    case RecordType::kEntries: {
      const ReplicaUpdate update = decode_message<ReplicaUpdate>(record.payload, "entries record");
      if (update.sender.value >= options_.replica_count) recovery_error("entries: bad source");
      Stream& stream = streams_[update.sender.value];
      for (const OrderedEntry& entry : update.entries) {
        if (entry.index <= stream.received) continue;  // already in the checkpoint
        if (entry.index != stream.received + 1) recovery_error("entries record: stream gap");
        accept_entry(update.sender, entry);
      }
      return;
    }
    case RecordType::kNewView: {
      const NewView decision = decode_message<NewView>(record.payload, "view record");
      if (decision.view <= view_) return;
      if (!std::binary_search(decision.members.begin(), decision.members.end(), options_.self)) {
        halted_ = true;
        return;
      }
      install(Now{}, decision);
      return;
    }
    case RecordType::kClockLease: {
      Reader r(record.payload);
      const uint64_t ceiling = r.varint();
      if (!r.ok() || !r.at_end()) recovery_error("clock lease record: malformed");
      clock_ceiling_ = std::max(clock_ceiling_, ceiling);
      return;
    }
    case RecordType::kHalted:
      if (!record.payload.empty()) recovery_error("halted record: malformed");
      halted_ = true;
      return;
    case RecordType::kBars: {
      Reader r(record.payload);
      std::set<ReplicaId> barred;
      const uint64_t count = r.count();
      for (uint64_t i = 0; i < count && r.ok(); ++i) {
        const uint64_t id = r.varint();
        if (id >= options_.replica_count) recovery_error("bars record: id out of range");
        barred.insert(ReplicaId{static_cast<uint32_t>(id)});
      }
      if (!r.ok() || !r.at_end()) recovery_error("bars record: malformed");
      barred_ = std::move(barred);
      return;
    }
  }
  recovery_error("unknown record type " + std::to_string(record.type));
}

}  // namespace lockstep::failstop
