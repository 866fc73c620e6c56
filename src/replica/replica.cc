#include "replica/replica.h"

#include <utility>

namespace lockstep {

Replica::Replica(failstop::Options options, std::unique_ptr<StateMachine> machine)
    : core_(options), service_(std::move(machine)) {}

void Replica::on_client_request(Now now, ClientRequest request) {
  last_now_ = now;
  if (core_.halted()) {
    output_.to_clients.push_back(
        ClientReply{request.client, request.sequence, core_.id(), ReplyStatus::kNotServing, {}});
    return;
  }
  // A retry of a request that already ran is answered from the session table by any replica:
  // the owner may be the one that failed.
  if (auto cached = service_.cached_reply(request.client, request.sequence)) {
    output_.to_clients.push_back(ClientReply{request.client, request.sequence, core_.id(),
                                             ReplyStatus::kOk, std::move(*cached)});
    return;
  }
  if (service_.already_executed_or_stale(request.client, request.sequence)) return;
  if (core_.options().planted.reply_before_execute &&
      core_.owner_of(request.client) == core_.id()) {
    // Planted bug: run the request on arrival, outside the agreed order.
    Service::Result result = service_.execute(request);
    output_.to_clients.push_back(ClientReply{request.client, request.sequence, core_.id(),
                                             ReplyStatus::kOk, std::move(result.reply)});
  }
  core_.on_client_request(now, request);
  execute_ready();
}

void Replica::on_peer_message(Now now, ReplicaId from, ReplicaMessage message) {
  last_now_ = now;
  if (const auto* forward = std::get_if<ForwardRequest>(&message)) {
    if (service_.already_executed_or_stale(forward->request.client, forward->request.sequence)) {
      return;
    }
  }
  core_.on_message(now, from, message);
  execute_ready();
}

void Replica::tick(Now now) {
  last_now_ = now;
  core_.tick(now);
  execute_ready();
}

void Replica::execute_ready() {
  for (OrderedEntry& entry : core_.take_executable()) {
    Service::Result result = service_.execute(entry.request);
    output_.executed.push_back(
        Executed{entry.timestamp, entry.request.client, entry.request.sequence, result.outcome});
    if (core_.options().planted.drop_session_entry && entry.request.sequence.value % 5 == 0) {
      service_.forget_session_for_testing(entry.request.client);  // planted bug
    }
    // One reply per request instead of n: from the replica that ordered it (its owner then), or,
    // once that one has been removed, from the client's current owner. If the replier fails
    // first, the client's retry is answered from the session table by whoever it reaches.
    const ReplicaId orderer = entry.timestamp.source;
    const bool replies =
        orderer == core_.id() ||
        (!core_.is_member(orderer) && core_.owner_of(entry.request.client) == core_.id());
    if (result.outcome != Service::Outcome::kStale && replies) {
      output_.to_clients.push_back(ClientReply{entry.request.client, entry.request.sequence,
                                               core_.id(), ReplyStatus::kOk,
                                               std::move(result.reply)});
    }
  }
}

Replica::Output Replica::take_output() {
  execute_ready();
  output_.to_peers = core_.take_messages(last_now_);
  return std::exchange(output_, {});
}

}  // namespace lockstep
