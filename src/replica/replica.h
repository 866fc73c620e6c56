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
#include <memory>
#include <vector>

#include "core/messages.h"
#include "protocol/failstop/core.h"
#include "statemachine/service.h"

namespace lockstep {

class Replica {
 public:
  using PeerMessage = failstop::Core::Send;  // {to, message}
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
  };

  Replica(failstop::Options options, std::unique_ptr<StateMachine> machine);

  void on_client_request(Now now, ClientRequest request);
  void on_peer_message(Now now, ReplicaId from, ReplicaMessage message);
  void tick(Now now);
  Output take_output();

  // Halted: removed from the membership (declared failed by the others). It must not serve.
  bool halted() const { return core_.halted(); }
  ReplicaId id() const { return core_.id(); }
  const failstop::Core& core() const { return core_; }
  const Service& service() const { return service_; }

 private:
  void execute_ready();

  failstop::Core core_;
  Service service_;
  Output output_;
  Now last_now_{};  // time of the latest input; take_output uses it for heartbeats
};

}  // namespace lockstep
