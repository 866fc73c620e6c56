// What every mode's ordering protocol offers the Replica, so that a mode is one class behind this
// interface (failstop::Core, byzantine::Core) and the replica, runtime and simulator are shared.
//
// A core is pure and deterministic: no I/O, no clock, no randomness. Inputs carry the time;
// outputs are collected with take_messages() and take_executable().
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/messages.h"

namespace lockstep {

class OrderingCore {
 public:
  struct Send {
    ReplicaId to;
    ReplicaMessage message;
  };
  // One record for the write-ahead log; its type and payload belong to the mode.
  struct PersistRecord {
    uint8_t type = 0;  // 1..255
    Bytes payload;
    bool operator==(const PersistRecord&) const = default;
  };

  virtual ~OrderingCore() = default;

  // A client request that reached this replica directly, for which admits() returned true (the
  // replica layer has also already answered retries of requests that executed).
  virtual void on_client_request(Now now, const ClientRequest& request) = 0;
  virtual void on_message(Now now, ReplicaId from, const ReplicaMessage& message) = 0;
  virtual void tick(Now now) = 0;

  // Outgoing messages since the last call; per destination in FIFO order.
  virtual std::vector<Send> take_messages(Now now) = 0;
  // Entries that may execute now, in the total order. Each is returned exactly once.
  virtual std::vector<OrderedEntry> take_executable() = 0;
  // Whether this replica sends the client the reply to `entry` (failstop: one replier; byzantine:
  // every replica, since the client needs t+1 matching replies).
  virtual bool replies_to(const OrderedEntry& entry) const = 0;
  // Whether a request arriving from a client may be looked at at all (byzantine: its client
  // signature checks), before the replica answers it from the session table.
  virtual bool admits(const ClientRequest& request) = 0;
  // For an entry just taken from take_executable(): the output when the request is the
  // replication layer's own (byzantine: an administrator's membership change), which the service
  // records instead of running the state machine. nullopt for an ordinary request.
  virtual std::optional<Bytes> take_system_output(const OrderedEntry& /*entry*/) {
    return std::nullopt;
  }

  // ---- durability (docs/DESIGN.md §10) ----
  // Records that must be durable before the messages and replies of this step are released: the
  // runtime appends them to its log and commits, then sends. Call after take_messages.
  virtual std::vector<PersistRecord> take_persist() = 0;
  // The core's part of a checkpoint, taken between steps (with Service::snapshot() of the same
  // moment): with the log records that follow, enough to rebuild the core.
  virtual Bytes checkpoint_state() const = 0;
  // Rebuilds the core from its newest checkpoint's state (empty when there is none) and every log
  // record written after it, before any input. Throws std::runtime_error on a record it cannot
  // decode (the log was verified by checksum, so that is a bug or a foreign directory).
  virtual void recover(std::span<const uint8_t> checkpoint_state,
                       const std::vector<PersistRecord>& records) = 0;

  // ---- reconfiguration (failstop, docs/DESIGN.md §12) ----
  // An operator's membership change, received by this member: "" when it is taken, otherwise why
  // not (a human-readable reason for `lockstep admin`).
  virtual std::string change_membership(Now /*now*/, MembershipChange /*change*/,
                                        ReplicaId /*replica*/) {
    return "this mode has a fixed membership";
  }
  // A member added by a view change that has no state yet: the Replica hands it the first
  // StateTransfer that arrives (load_state), with the service snapshot restored from the same one.
  virtual bool awaits_state() const { return false; }
  // Takes a donor's state in place of its own (the Replica restores transfer.service_snapshot).
  // Throws std::runtime_error when it cannot be decoded, does not make this replica a member
  // (failstop), or is not the state t+1 replicas vouched for (byzantine).
  virtual void load_state(Now /*now*/, const StateTransfer& /*transfer*/) {}
  // A piece of a state transfer from `donor` arrived (src/replica/state_chunks.h): the donor is
  // alive and sending, however long a large state takes.
  virtual void state_arriving(Now /*now*/, ReplicaId /*donor*/) {}
  // Byzantine checkpoints (docs/DESIGN.md §11.7): at a boundary of the agreed order the core stops
  // handing out entries until the Replica gives it the service snapshot of that moment.
  virtual std::optional<uint64_t> take_checkpoint_boundary() { return std::nullopt; }
  virtual void checkpoint_taken(uint64_t /*boundary*/, Bytes /*snapshot*/) {}
  // Whether it may answer clients: not halted, and a member with its state (not still joining).
  virtual bool serving() const { return !halted(); }

  virtual ReplicaId id() const = 0;
  // Halted: removed from the membership or stopped on evidence of its own failure; must not serve.
  virtual bool halted() const = 0;
  virtual ViewNumber view() const = 0;
  virtual const std::vector<ReplicaId>& members() const = 0;
  // Entries held but not executed (quiescence checks).
  virtual size_t pending_entries() const = 0;

  // Checks every invariant relating the fields; aborts (LOCKSTEP_ASSERT) on violation. The
  // simulator calls it after every event.
  virtual void check_invariants() const = 0;
};

}  // namespace lockstep
