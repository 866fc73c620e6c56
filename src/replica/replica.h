// A replica as a pure, deterministic object: the ordering protocol core plus the replicated
// service (session table + state machine). It does no I/O and reads no clock. The runtime (real
// sockets) and the simulator (simulated network) drive the same class:
//
//   replica.on_client_request(now, request);   // a request arrived from a client connection
//   replica.on_peer_message(now, from, msg);   // a message arrived on the FIFO channel from `from`
//   replica.tick(now);                          // time passed (call every few milliseconds)
//   Replica::Output out = replica.take_output();// then send out.to_peers, out.to_clients
//
// take_output() uses the time of the latest input (heartbeats fall due by it), so call tick()
// regularly, every millisecond or so.
//
// Calling take_output once after a batch of inputs (rather than after each) lets the core put
// many entries in one message: that is where batching comes from.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "core/messages.h"
#include "protocol/byzantine/core.h"
#include "protocol/failstop/core.h"
#include "replica/state_chunks.h"
#include "statemachine/service.h"

namespace lockstep {

// Resource limits of a replica (both modes). Every replica of a cluster must use the same
// `service` options (they decide which sessions are forgotten, see statemachine/service.h);
// `pending_requests_max` is local and may differ.
struct ReplicaLimits {
  ServiceOptions service;
  // Back-pressure: with this many entries held but not executed (OrderingCore::pending_entries),
  // a new request from a client is answered kBusy at once instead of being queued. Retries of
  // requests that already ran are still answered from the session table, and requests relayed by
  // other replicas are still taken (refusing those would not shed load, only lose requests).
  size_t pending_requests_max = 100'000;
  // Client requests taken per step (between take_output calls); beyond it a request is answered
  // kBusy before its signature is even checked. 0: no limit. The byzantine mode needs it: its
  // safety assumes every step finishes well within Δ, and checking signatures is most of a step's
  // work, so an unbounded step under overload would break the assumption it rests on.
  size_t client_requests_per_step_max = 0;
  // State transfers larger than a piece go in pieces, one in flight per joiner.
  StateChunkOptions state_chunks;
};

class Replica {
 public:
  using PeerMessage = OrderingCore::Send;  // {to, message}
  // One request executed, in the order executed; for checkers and traces.
  struct Executed {
    Timestamp timestamp;
    ClientId client;
    Sequence sequence;
    Service::Outcome outcome;
  };
  struct Output {
    // Messages to other replicas. Per destination they must be delivered in this order (FIFO).
    std::vector<PeerMessage> to_peers;
    // Replies to clients, to be sent on the client's connection if it is still there.
    std::vector<ClientReply> to_clients;
    // Requests executed since the last take_output.
    std::vector<Executed> executed;
    // Records for the write-ahead log (durable failstop replicas): the runtime must append and
    // commit them before it releases `to_peers` and `to_clients` (docs/DESIGN.md §10).
    std::vector<OrderingCore::PersistRecord> persist;
    // This step loaded a donor's state (a joiner, docs/DESIGN.md §12): a durable runtime writes a
    // checkpoint (checkpoint()) before the records and before sending anything.
    bool loaded_state = false;
  };
  // A checkpoint's content: the core's state and the service snapshot, of the same moment.
  struct CheckpointData {
    Bytes protocol_state;
    Bytes service_snapshot;
  };

  Replica(failstop::Options options, std::unique_ptr<StateMachine> machine,
          ReplicaLimits limits = {});
  Replica(byzantine::Options options, std::unique_ptr<StateMachine> machine,
          ReplicaLimits limits = {});

  void on_client_request(Now now, ClientRequest request);
  void on_peer_message(Now now, ReplicaId from, ReplicaMessage message);
  void tick(Now now);
  // An operator's membership change (`lockstep admin`); answered at once.
  AdminReply on_admin(Now now, const AdminRequest& request);
  Output take_output();

  // Rebuilds the replica from its disk, before any input: the newest checkpoint (both blobs empty
  // when there is none) and every log record after it. Throws std::runtime_error (or
  // SnapshotError) when they cannot be decoded.
  void recover(const CheckpointData& checkpoint,
               const std::vector<OrderingCore::PersistRecord>& records);
  // The state to checkpoint now (between steps, e.g. right after take_output).
  CheckpointData checkpoint() const;
  // Entries executed since construction or recovery (for checkpoint scheduling).
  uint64_t executed_since_start() const { return executed_since_start_; }

  // Halted: removed from the membership (declared failed by the others). It must not serve.
  bool halted() const { return core_->halted(); }
  // Answers clients: not halted and not still joining.
  bool serving() const { return core_->serving(); }
  // Byzantine membership changes (docs/DESIGN.md §11.9): the configuration epoch in force at
  // this replica's clock (0 in failstop), and the administrator's signed changes that lead to
  // it, for clients to check (empty in failstop).
  uint64_t epoch() const { return byzantine_ != nullptr ? byzantine_->epoch() : 0; }
  const std::vector<ClientRequest>& membership_proofs() const;
  // Whether a request from a client may be looked at at all (byzantine: its signature checks).
  bool admits(const ClientRequest& request) { return core_->admits(request); }
  // StateTransfers that could not be loaded (malformed): the joiner keeps asking.
  uint64_t rejected_state_transfers() const { return rejected_state_transfers_; }
  // The last state this replica loaded, for logs.
  struct LoadedTransfer {
    ReplicaId donor{};
    uint64_t view = 0;  // byzantine: the checkpoint boundary
    size_t protocol_state_bytes = 0;
    size_t service_snapshot_bytes = 0;
  };
  const std::optional<LoadedTransfer>& last_loaded_transfer() const { return last_loaded_; }
  // For checkers (the simulator): every StateTransfer this replica builds as a donor (blobs
  // filled, before it leaves whole or in pieces) and every one it loads, however it arrived.
  struct StateTransferObserver {
    std::function<void(ReplicaId to, const StateTransfer&)> built;
    std::function<void(const StateTransfer&)> loaded;
  };
  void observe_state_transfers(StateTransferObserver observer) { observer_ = std::move(observer); }
  // Bytes of a state being received in pieces, and transfers this replica is sending in pieces.
  uint64_t state_bytes_arriving() const { return receiver_.bytes_held(); }
  size_t state_transfers_sending() const { return sender_.in_progress(); }
  ReplicaId id() const { return core_->id(); }
  const OrderingCore& core() const { return *core_; }
  // The mode's own core, or null when the replica runs the other mode.
  const failstop::Core* failstop_core() const { return failstop_; }
  const byzantine::Core* byzantine_core() const { return byzantine_; }
  const Service& service() const { return service_; }
  const ReplicaLimits& limits() const { return limits_; }
  // Replies held until their place in the order is certified (durable byzantine mode).
  size_t held_replies() const { return held_replies_.size(); }
  // Requests answered kBusy because pending_requests_max was reached (for stats logs).
  uint64_t busy_replies() const { return busy_replies_; }
  // The agreed physical time (µs) of an entry's place in the order, which the session table's
  // expiry runs on: the physical part of a failstop HLC timestamp, a byzantine timestamp as is.
  uint64_t order_time_us(const OrderedEntry& entry) const;

 private:
  void execute_ready();
  void execute_entries();
  void load_transferred_state(Now now, const StateTransfer& transfer);
  void on_state_chunk(Now now, ReplicaId from, StateChunk chunk);
  void take_chunk_outcome(Now now, StateReceiver::Outcome outcome);
  void fill_state_transfers(std::vector<PeerMessage>& messages);
  // Answers without executing: kNotServing (halted) or kBusy (a limit; counted).
  void refuse(const ClientRequest& request, ReplyStatus status);

  std::unique_ptr<OrderingCore> core_;
  const failstop::Core* failstop_ = nullptr;
  const byzantine::Core* byzantine_ = nullptr;
  ReplicaLimits limits_;
  Service service_;
  uint64_t busy_replies_ = 0;
  uint64_t rejected_state_transfers_ = 0;
  std::optional<LoadedTransfer> last_loaded_;
  StateSender sender_;
  StateReceiver receiver_;
  std::vector<PeerMessage> chunk_messages_;  // chunks and requests for them, sent with the output
  StateTransferObserver observer_;
  byzantine::Core* byzantine_mutable_ = nullptr;
  // Durable byzantine mode: replies wait until their place in the order is certified (docs/
  // DESIGN.md §11.8), in the order executed; and which requests they answer, so that a retry is
  // not answered from the session table first.
  struct HeldReply {
    uint64_t order_time_us;
    ClientReply reply;
  };
  std::deque<HeldReply> held_replies_;
  std::set<std::pair<ClientId, Sequence>> held_keys_;
  void release_certified_replies();
  size_t client_requests_this_step_ = 0;
  uint64_t executed_since_start_ = 0;
  failstop::Options::PlantedBugs planted_;
  Output output_;
  Now last_now_{};  // time of the latest input; take_output uses it for heartbeats
};

}  // namespace lockstep
