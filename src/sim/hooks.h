// Extension points of the simulator for fault models that the failstop protocol does not claim
// to survive yet: Byzantine replicas (the byzantine mode) and disk faults (once replicas persist
// and restart). The simulator calls them at the places named below; with no hook installed the
// run is the plain failstop model.
//
// A hook runs inside the simulation, so it must be deterministic: it may draw randomness only
// from the `Random` it is handed (which is derived from the run seed), never from anything else.
#pragma once

#include "core/messages.h"
#include "sim/random.h"

namespace lockstep::sim {

// Byzantine behaviour of replicas. Called for every message a replica sends, before the network
// model sees it; may rewrite the message (lie, equivocate per destination) or suppress it.
class ByzantineHook {
 public:
  virtual ~ByzantineHook() = default;

  // True when `replica` is one of the faulty replicas this hook controls. The simulator counts
  // such replicas against the fault budget `t`, like crashed ones.
  virtual bool is_byzantine(ReplicaId replica) const = 0;

  // A message from a Byzantine `from` to replica `to`. Return false to drop it.
  virtual bool on_peer_send(ReplicaId from, ReplicaId to, ReplicaMessage& message,
                            Random& random) = 0;
  // A reply from a Byzantine `from` to a client. Return false to drop it.
  virtual bool on_client_reply(ReplicaId from, ClientReply& reply, Random& random) = 0;
};

// Disk faults. The replica keeps no durable state yet (crashes are permanent within a run), so
// the only call today is at a crash; when restart lands, the hook decides which unsynced writes
// the restarted replica loses, which writes are torn and which sectors read back corrupted.
class DiskFaultHook {
 public:
  virtual ~DiskFaultHook() = default;

  // `replica` has just crashed (its process is gone; what its disk holds is up to the hook).
  virtual void on_crash(ReplicaId replica, Random& random) = 0;
};

struct Hooks {
  ByzantineHook* byzantine = nullptr;  // not owned; outlives the run
  DiskFaultHook* disk = nullptr;       // not owned; outlives the run
};

}  // namespace lockstep::sim
