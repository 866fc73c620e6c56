// What every mode's ordering protocol offers the Replica, so that a mode is one class behind this
// interface (failstop::Core, byzantine::Core) and the replica, runtime and simulator are shared.
//
// A core is pure and deterministic: no I/O, no clock, no randomness. Inputs carry the time;
// outputs are collected with take_messages() and take_executable().
#pragma once

#include <cstdint>
#include <vector>

#include "core/messages.h"

namespace lockstep {

class OrderingCore {
 public:
  struct Send {
    ReplicaId to;
    ReplicaMessage message;
  };

  virtual ~OrderingCore() = default;

  // A client request that reached this replica directly (the replica layer has already answered
  // retries of requests that executed).
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
