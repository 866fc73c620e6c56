// Extension points of the simulator for fault models beyond halting: Byzantine replicas (the
// byzantine mode) and disk faults (once replicas persist and restart). The simulator calls them at
// the places named below; with no hook installed the run is the plain model of its mode.
//
// A hook runs inside the simulation, so it must be deterministic: it may draw randomness only
// from the `Random` it is handed (which is derived from the run seed), never from anything else.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/messages.h"
#include "sim/random.h"

namespace lockstep::sim {

// Byzantine behaviour of replicas. A faulty replica runs the real Replica; everything it sends
// passes through the hook first, which may rewrite a message (lie, equivocate per destination),
// suppress it, or send messages of its own (replays, floods, late values) at any step.
class ByzantineHook {
 public:
  virtual ~ByzantineHook() = default;

  // True when `replica` is one of the faulty replicas this hook controls. The simulator counts
  // such replicas against the fault budget `t`, like crashed ones, and leaves them out of the
  // checks that only honest replicas owe (agreement, exactly-once, equal states).
  virtual bool is_byzantine(ReplicaId replica) const = 0;

  // A message from a Byzantine `from` to replica `to`. Return false to drop it.
  virtual bool on_peer_send(ReplicaId from, ReplicaId to, ReplicaMessage& message,
                            Random& random) = 0;
  // A reply from a Byzantine `from` to a client. Return false to drop it. In byzantine mode the
  // simulator signs the replies after this call, with `from`'s own key: a lie is validly signed.
  virtual bool on_client_reply(ReplicaId from, ClientReply& reply, Random& random) = 0;

  // Where and when a faulty replica takes a step (after its output went out).
  struct Step {
    ReplicaId replica;
    uint64_t sim_ns = 0;    // true (simulated) time
    Now now;                // the faulty replica's own clocks
    int64_t wall_epoch_ns;  // a perfect wall clock reads wall_epoch_ns + sim_ns
  };
  // A message the faulty replica sends on its own. With `deliver_at_ns` (true time, not before
  // the step) the adversary picks the arrival time itself, outside the channel's FIFO order (the
  // faulty sender chose when to send it); otherwise it goes out now like any other message.
  struct Injection {
    ReplicaId to;
    ReplicaMessage message;
    std::optional<uint64_t> deliver_at_ns;
  };
  // Called after every step of a Byzantine replica while clients are still running (fault and
  // heal phases); returns the messages it sends beyond its core's output.
  virtual std::vector<Injection> on_step(const Step& /*step*/, Random& /*random*/) { return {}; }
};

// Disk faults beyond the simulator's own (durable runs draw torn writes, bad sectors and restarts
// themselves, simulator.cc): called at every replica crash, after the simulated disk crashed.
class DiskFaultHook {
 public:
  virtual ~DiskFaultHook() = default;

  // `replica` has just crashed (its process is gone; what its disk holds is up to the hook).
  virtual void on_crash(ReplicaId replica, Random& random) = 0;
};

struct Hooks {
  // Not owned; outlives the run. In byzantine mode, when null, the simulator draws its own
  // (sim/byzantine.h) from the seed.
  ByzantineHook* byzantine = nullptr;
  DiskFaultHook* disk = nullptr;  // not owned; outlives the run
};

}  // namespace lockstep::sim
