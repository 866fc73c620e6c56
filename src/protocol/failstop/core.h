// The failstop ordering protocol (docs/DESIGN.md, "failstop protocol"): n = t+1 replicas, each
// the source of one FIFO stream of timestamped client requests; an entry executes once it is
// stable (every live replica's clock has passed it) and held by every live replica, in timestamp
// order. A replica that falls silent for `failure_timeout_ns` is removed by a view change that
// fixes the last of its entries that will ever run (the cut).
//
// Pure and deterministic: no I/O, no clock, no randomness. Inputs carry the time; outputs are
// collected with take_messages() and take_executable().
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "core/hlc.h"
#include "core/messages.h"
#include "protocol/ordering_core.h"

namespace lockstep::failstop {

struct Options {
  ReplicaId self{};
  uint32_t replica_count = 0;
  uint64_t incarnation = 0;  // distinct per process start (the runtime draws it)
  uint64_t heartbeat_interval_ns = 5'000'000;
  uint64_t failure_timeout_ns = 500'000'000;
  uint64_t relay_timeout_ns = 50'000'000;  // a backup not seen ordered by then is forwarded
  uint64_t view_change_retry_ns = 200'000'000;
  size_t entries_per_message_max = 4096;
  // Entries' command bytes per update; keeps every frame far below kFrameBytesMax (one entry
  // larger than this still travels, alone).
  size_t entry_bytes_per_message_max = 1 << 20;
  size_t backups_max = 1 << 20;
  // The runtime keeps this replica's state on disk and syncs every record before releasing the
  // step's outputs (fsync "always"): a restart then carries on as the same member instead of
  // counting as a failure (docs/DESIGN.md §10).
  bool durable = false;
  // How far ahead of the clock values it has sent the replica persists a ceiling, so that after a
  // restart its clock starts above everything it ever sent (one small record per lease span).
  uint64_t clock_lease_us = 100'000;
  // Reconfiguration (docs/DESIGN.md §12). The members of view 0 (empty: every listed replica).
  // A replica outside them, or started with `join`, has no state of its own: it asks the members
  // to add it and loads a member's state. Replicas listed but not in view 0 are barred from
  // joining until an operator adds them.
  std::vector<ReplicaId> initial_members;
  bool join = false;

  // Test-only switches that plant known bugs, so tests can prove the simulator's checkers catch
  // them. Never set outside tests.
  struct PlantedBugs {
    bool execute_before_stable = false;  // execute entries without waiting for stability
    bool skip_relay = false;  // view change: do not take a removed replica's missing entries
    bool reply_before_execute = false;  // the owner executes and replies on receipt (replica.cc)
    bool drop_session_entry = false;    // forget a client's session after executing (replica.cc)
  } planted;
};

class Core final : public OrderingCore {
 public:
  explicit Core(Options options);

  // A client request that reached this replica directly (the replica layer has already dropped
  // requests that executed). The owner orders it; the others keep it as a backup.
  void on_client_request(Now now, const ClientRequest& request) override;
  void on_message(Now now, ReplicaId from, const ReplicaMessage& message) override;
  void tick(Now now) override;

  // Outgoing messages since the last call; per destination in FIFO order. Building the
  // ReplicaUpdate here (not per input) is what batches entries and acknowledgements.
  std::vector<Send> take_messages(Now now) override;
  // Entries that may execute now, in the total order. Each is returned exactly once.
  std::vector<OrderedEntry> take_executable() override;
  // One reply per request instead of n: from the replica that ordered it, or, once that one has
  // been removed, from the client's current owner. If the replier fails first, the client's retry
  // is answered from the session table by whoever it reaches.
  bool replies_to(const OrderedEntry& entry) const override;
  bool admits(const ClientRequest&) override { return true; }

  // Reconfiguration (docs/DESIGN.md §12).
  std::string change_membership(Now now, MembershipChange change, ReplicaId replica) override;
  bool awaits_state() const override { return join_phase_ == JoinPhase::kAwaitingState; }
  void load_state(Now now, const StateTransfer& transfer) override;
  void state_arriving(Now now, ReplicaId donor) override;
  bool serving() const override { return !halted_ && join_phase_ == JoinPhase::kNone; }
  // Asking to be added, or added and waiting for a donor's state.
  bool joining() const { return join_phase_ != JoinPhase::kNone; }

  const Options& options() const { return options_; }
  // Replicas this one will not admit until an operator adds them (§12.3).
  const std::set<ReplicaId>& barred() const { return barred_; }
  bool halted() const override { return halted_; }
  ReplicaId id() const override { return options_.self; }
  ViewNumber view() const override { return view_; }
  const std::vector<ReplicaId>& members() const override { return members_; }
  bool is_member(ReplicaId r) const;
  ReplicaId owner_of(ClientId client) const;
  uint64_t clock() const { return clock_.value(); }
  uint64_t executed_entries() const { return executed_total_; }
  size_t pending_entries() const override { return pending_.size(); }
  size_t backup_count() const { return backups_.size(); }

  // Checks every invariant relating the fields; aborts (LOCKSTEP_ASSERT) on violation. The
  // simulator calls it after every event.
  void check_invariants() const override;

  // Durability: log records (kEntries, kNewView, kClockLease), checkpoints, recovery.
  // kBars: the whole barred set after an operator changed it (§12.3), so that a restart keeps the
  // operator's word even when no checkpoint followed it. kHalted: this replica halted (removed,
  // or its state found wrong); restarted from this disk it asks to join again (§10.3).
  enum class RecordType : uint8_t {
    kEntries = 1,
    kNewView = 2,
    kClockLease = 3,
    kBars = 4,
    kHalted = 5,
  };
  std::vector<PersistRecord> take_persist() override;
  Bytes checkpoint_state() const override;
  void recover(std::span<const uint8_t> checkpoint_state,
               const std::vector<PersistRecord>& records) override;

 private:
  struct Stream {
    uint64_t received = 0;                // entries 1..received held (or executed)
    uint64_t executed = 0;                // entries 1..executed executed
    std::deque<OrderedEntry> unexecuted;  // entries executed+1..received
  };
  struct PeerState {
    uint64_t heard_clock = 0;     // highest clock heard from it (FIFO: monotone)
    std::vector<uint64_t> acked;  // its `received` vector as last reported
    uint64_t last_heard_ns = 0;
    uint64_t incarnation = 0;  // 0 until first heard
  };
  struct Backup {
    ClientRequest request;
    uint64_t next_forward_ns;
  };
  using RequestKey = std::pair<ClientId, Sequence>;

  void on_update(Now now, const ReplicaUpdate& update);
  void on_forward(Now now, const ForwardRequest& forward);
  void on_view_change(Now now, const ViewChange& change);
  void on_new_view(Now now, const NewView& view);
  void on_join_request(Now now, const JoinRequest& request);
  void on_state_request(Now now, const StateRequest& request);
  bool contains_joining_or_barred(ReplicaId replica) const;
  void persist_bars();

  // A joiner's side: ask, learn the view that adds it, ask its donor for the state.
  void joiner_on_message(Now now, const ReplicaMessage& message);
  void joiner_tick(Now now);
  void admit(Now now, ReplicaId joiner);
  std::vector<ReplicaId> reporters(const std::vector<ReplicaId>& proposed) const;
  void load_checkpoint(std::span<const uint8_t> state);

  void order(Now now, const ClientRequest& request);
  void accept_entry(ReplicaId source, const OrderedEntry& entry);
  void notice_own_pause(Now now);
  void suspect(Now now, const std::set<ReplicaId>& replicas);
  std::vector<ReplicaId> proposed_members() const;
  void broadcast_view_change(Now now);
  void try_install_as_coordinator(Now now);
  void install(Now now, const NewView& view);
  void restamp_owned_backups(Now now);
  void collect_executable();
  bool stable_and_held_by_all(const OrderedEntry& entry) const;
  void halt();
  void broadcast(ReplicaMessage message);
  std::vector<uint64_t> received_vector() const;
  void flush_entry_records();
  void end_awaiting_peers_if_all_heard(Now now);
  void apply_record(const PersistRecord& record);

  Options options_;
  bool halted_ = false;
  HybridClock clock_;
  ViewNumber view_{0};
  std::vector<ReplicaId> members_;    // ascending; the current view's membership
  std::vector<Stream> streams_;       // indexed by ReplicaId
  std::vector<PeerState> peers_;      // indexed by ReplicaId
  std::vector<OrderedEntry> unsent_;  // own entries not yet broadcast
  bool acknowledgement_due_ = false;  // received entries not yet acknowledged
  uint64_t last_broadcast_ns_ = 0;
  // Entries held but not executed, by timestamp: the next to execute is the first.
  std::map<Timestamp, ReplicaId> pending_;
  std::map<RequestKey, uint32_t> ordered_;  // held in some stream, not executed: how many times
  std::map<RequestKey, Backup> backups_;    // requests held from clients, not yet seen ordered
  std::vector<OrderedEntry> executable_;
  uint64_t executed_total_ = 0;

  uint64_t last_input_ns_ = 0;  // to notice that this process itself was paused
  bool started_ = false;

  // View change state. A view change is under way while target_view_ > view_.
  std::set<ReplicaId> suspected_;  // members this replica believes failed
  ViewNumber target_view_{0};
  uint64_t view_change_sent_ns_ = 0;
  std::map<ReplicaId, ViewChange> reports_;  // at the coordinator: latest report per member
  std::optional<NewView> last_new_view_;     // resent to replicas that missed it
  std::vector<uint64_t> removed_notice_ns_;  // when a removed replica was last told so
  std::vector<Send> outbox_;

  // Durability. Entries accepted since the last record, per source, in acceptance order; they
  // become one kEntries record per source whenever another record must follow them in order.
  std::vector<std::vector<OrderedEntry>> unpersisted_entries_;
  std::vector<PersistRecord> persist_;
  bool replaying_ = false;      // recover() is applying records: emit nothing
  uint64_t clock_ceiling_ = 0;  // persisted: no clock value sent exceeds it
  // Per peer: resend every unexecuted entry of this replica's stream in the next update (after
  // this replica recovered, or after the peer restarted with its state), since the peer may miss
  // whatever was in flight. Safe to over-send: receivers skip entries they hold.
  std::vector<bool> resend_own_stream_;
  std::set<ReplicaId> skip_broadcast_to_;  // got their own resend update in this step
  // Per peer, after a recovery: false until an update from it connects to what this replica
  // holds. Until then updates with a gap are ignored (the peer has not yet seen this replica's
  // restart and rewound), clock included, so stability never passes entries this replica lacks.
  std::vector<bool> connected_;
  // Recovered from disk after a long downtime and not yet heard (connected) from every other
  // member: no suspicions. recovered_from_us_: wall time of the last persisted lease, if recovered.
  bool awaiting_peers_ = false;
  std::optional<uint64_t> recovered_from_us_;

  // Reconfiguration. This replica's own joining: kAsking sends JoinRequests until a NewView adds
  // it; kAwaitingState sends StateRequests to that view's donor until load_state.
  enum class JoinPhase : uint8_t { kNone, kAsking, kAwaitingState };
  JoinPhase join_phase_ = JoinPhase::kNone;
  ViewNumber state_view_{0};  // the view that added it
  ReplicaId state_donor_{};
  uint64_t join_sent_ns_ = 0;
  uint64_t state_request_sent_ns_ = 0;
  uint64_t donor_since_ns_ = 0;  // when state_donor_ was picked: another is tried after a retry
  // A member's side: non-members this replica proposes to add (the counterpart of suspected_),
  // replicas it refuses to add until an operator does, and, per added replica, that its first
  // update is still due (then it gets this replica's unexecuted entries, which it missed while
  // loading). Execution pauses while an addition is proposed and not installed (§12).
  std::set<ReplicaId> joining_;
  std::set<ReplicaId> barred_;
  // Members an operator asked this replica to remove (the counterpart of suspected_ for live
  // replicas): unlike suspects they are still listened to, and the coordinator waits for their
  // report, so that a replica that is itself out of date (paused and removed meanwhile) cannot
  // remove the others on an operator's word and form a view of its own (found by the simulator).
  // leaving_self_: the operator asked this replica to leave; it reports, then halts.
  std::set<ReplicaId> leaving_;
  bool leaving_self_ = false;
  std::vector<bool> joined_unheard_;
  std::vector<uint64_t> state_served_ns_;  // per joiner: when this donor last sent it the state
};

}  // namespace lockstep::failstop
