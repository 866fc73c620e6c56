#include "replica/replica.h"

#include <algorithm>
#include <exception>
#include <string>
#include <utility>

#include "core/assert.h"
#include "core/codec.h"
#include "core/hlc.h"

namespace lockstep {

Replica::Replica(failstop::Options options, std::unique_ptr<StateMachine> machine,
                 ReplicaLimits limits)
    : limits_(limits),
      service_(std::move(machine), limits.service),
      sender_(limits.state_chunks, /*keep_under_way=*/false),
      receiver_(limits.state_chunks),
      planted_(options.planted) {
  auto core = std::make_unique<failstop::Core>(options);
  failstop_ = core.get();
  core_ = std::move(core);
}

Replica::Replica(byzantine::Options options, std::unique_ptr<StateMachine> machine,
                 ReplicaLimits limits)
    : limits_(limits),
      service_(std::move(machine), limits.service),
      sender_(limits.state_chunks, /*keep_under_way=*/true),
      receiver_(limits.state_chunks) {
  auto core = std::make_unique<byzantine::Core>(options);
  byzantine_ = core.get();
  byzantine_mutable_ = core.get();
  core_ = std::move(core);
  // The empty state a recovery falls back to when nothing was ever certified.
  byzantine_mutable_->set_genesis_snapshot(service_.snapshot());
}

void Replica::on_client_request(Now now, ClientRequest request) {
  last_now_ = now;
  if (!core_->serving()) {
    // A replica catching up learns of a membership change sent to it (a new member started
    // before the change: it decides nothing before it is a member; docs/DESIGN.md §11.9).
    if (byzantine_ != nullptr && from_administrator(request) && core_->admits(request)) {
      core_->on_client_request(now, request);
    }
    refuse(request, ReplyStatus::kNotServing);
    return;
  }
  if (limits_.client_requests_per_step_max != 0 &&
      client_requests_this_step_ >= limits_.client_requests_per_step_max) {
    refuse(request, ReplyStatus::kBusy);
    return;
  }
  ++client_requests_this_step_;
  // Byzantine mode: a request whose client signature fails is dropped (and counted) before
  // anything else, including an answer from the session table.
  if (!core_->admits(request)) return;
  // A retry of a request that already ran is answered from the session table by any replica:
  // the owner may be the one that failed. (In byzantine mode the cached reply is the output of
  // the request with this (client, sequence) that ran first, whatever this copy says: a client
  // that signed two gets the first one's output from every honest replica alike.)
  if (held_keys_.contains({request.client, request.sequence})) return;  // goes out when certified
  if (auto cached = service_.cached_reply(request.client, request.sequence)) {
    output_.to_clients.push_back(ClientReply{request.client, request.sequence, core_->id(),
                                             ReplyStatus::kOk, std::move(*cached), epoch()});
    return;
  }
  if (service_.already_executed_or_stale(request.client, request.sequence)) return;
  // Back-pressure: at the limit a new request is refused now, so the client backs off, rather
  // than queued where a flood of clients could grow this replica's memory without bound. (A retry
  // of a request still pending is refused too; the core holds it and will execute it anyway.)
  if (core_->pending_entries() + held_replies_.size() >= limits_.pending_requests_max) {
    refuse(request, ReplyStatus::kBusy);
    return;
  }
  if (planted_.reply_before_execute && failstop_->owner_of(request.client) == core_->id()) {
    // Planted bug: run the request on arrival, outside the agreed order.
    Service::Result result = service_.execute(request, 0);  // outside the order: no order time
    output_.to_clients.push_back(ClientReply{request.client, request.sequence, core_->id(),
                                             ReplyStatus::kOk, std::move(result.reply)});
  }
  core_->on_client_request(now, request);
  execute_ready();
}

void Replica::refuse(const ClientRequest& request, ReplyStatus status) {
  if (status == ReplyStatus::kBusy) ++busy_replies_;
  output_.to_clients.push_back(
      ClientReply{request.client, request.sequence, core_->id(), status, {}, epoch()});
}

void Replica::on_peer_message(Now now, ReplicaId from, ReplicaMessage message) {
  last_now_ = now;
  if (const auto* forward = std::get_if<ForwardRequest>(&message)) {
    if (service_.already_executed_or_stale(forward->request.client, forward->request.sequence)) {
      return;
    }
  }
  if (const auto* transfer = std::get_if<StateTransfer>(&message)) {
    if (core_->awaits_state()) load_transferred_state(now, *transfer);
    return;
  }
  if (auto* chunk = std::get_if<StateChunk>(&message)) {
    on_state_chunk(now, from, std::move(*chunk));
    return;
  }
  if (const auto* request = std::get_if<StateChunkRequest>(&message)) {
    if (std::optional<StateChunk> next = sender_.on_request(now.monotonic_ns, from, *request)) {
      chunk_messages_.push_back(PeerMessage{from, std::move(*next)});
    }
    return;
  }
  core_->on_message(now, from, message);
  execute_ready();
}

void Replica::load_transferred_state(Now now, const StateTransfer& transfer) {
  // The service first: if either throws, the core is still waiting and the next transfer
  // replaces both (a joiner serves nothing until the core has loaded).
  try {
    service_.restore(transfer.service_snapshot);
    core_->load_state(now, transfer);
  } catch (const std::exception&) {
    ++rejected_state_transfers_;
    // Byzantine: a replica waiting for a state executes nothing, so its service must hold its
    // base, which a recovery by claims may replay its disk's batches on (found by review: a
    // refused snapshot left in place was built upon).
    if (byzantine_ != nullptr) service_.restore(byzantine_->base_snapshot());
    return;
  }
  output_.loaded_state = true;
  receiver_.reset();
  if (observer_.loaded) observer_.loaded(transfer);
  last_loaded_ = LoadedTransfer{transfer.sender, transfer.view.value,
                                transfer.protocol_state.size(), transfer.service_snapshot.size()};
  execute_ready();
}

void Replica::on_state_chunk(Now now, ReplicaId from, StateChunk chunk) {
  if (!core_->awaits_state()) return;  // loaded already, or not a joiner
  take_chunk_outcome(now, receiver_.on_chunk(now.monotonic_ns, from, std::move(chunk)));
}

void Replica::take_chunk_outcome(Now now, StateReceiver::Outcome outcome) {
  if (auto* progress = std::get_if<StateReceiver::Progress>(&outcome)) {
    // A piece came in: that donor is alive and sending, however long a large state takes.
    core_->state_arriving(now, progress->donor);
    chunk_messages_.push_back(PeerMessage{progress->next.donor, progress->next.request});
  } else if (auto* transfer = std::get_if<StateTransfer>(&outcome)) {
    load_transferred_state(now, *transfer);
  } else if (std::holds_alternative<StateReceiver::Malformed>(outcome)) {
    ++rejected_state_transfers_;
  }
}

void Replica::fill_state_transfers(std::vector<PeerMessage>& messages) {
  const uint64_t now_ns = last_now_.monotonic_ns;
  // The core answers a joiner's retries; a transfer under way is as good, and building the state
  // again (it can be large) would be waste.
  std::erase_if(messages, [&](const PeerMessage& send) {
    const auto* transfer = std::get_if<StateTransfer>(&send.message);
    return transfer != nullptr && sender_.under_way(now_ns, send.to, transfer->view.value);
  });
  auto to_fill =
      static_cast<size_t>(std::count_if(messages.begin(), messages.end(), [](const auto& send) {
        return std::holds_alternative<StateTransfer>(send.message);
      }));
  // Failstop: the core's state and the service snapshot of this moment, built once however many
  // joiners this step answers, and moved into the last transfer that needs them.
  std::optional<CheckpointData> state;
  for (PeerMessage& send : messages) {
    auto* transfer = std::get_if<StateTransfer>(&send.message);
    if (transfer == nullptr) continue;
    --to_fill;
    if (byzantine_ == nullptr) {  // a byzantine core fills in the snapshot it keeps
      if (!state) state = checkpoint();
      transfer->protocol_state =
          to_fill == 0 ? std::move(state->protocol_state) : state->protocol_state;
      transfer->service_snapshot =
          to_fill == 0 ? std::move(state->service_snapshot) : state->service_snapshot;
    }
    if (observer_.built) observer_.built(send.to, *transfer);
    send.message = sender_.start(now_ns, send.to, std::move(*transfer));
  }
}

AdminReply Replica::on_admin(Now now, const AdminRequest& request) {
  last_now_ = now;
  std::string refusal = core_->change_membership(now, request.change, request.replica);
  execute_ready();
  const bool accepted = refusal.empty();
  if (accepted) {
    refusal = request.change == MembershipChange::kAdd
                  ? "replica " + std::to_string(request.replica.value) +
                        " is added when it asks (run it with --join)"
                  : "replica " + std::to_string(request.replica.value) + " is being removed";
  }
  return AdminReply{request.nonce, core_->id(), accepted, std::move(refusal)};
}

void Replica::tick(Now now) {
  last_now_ = now;
  core_->tick(now);
  sender_.expire(now.monotonic_ns);
  if (core_->awaits_state()) {
    for (StateReceiver::Ask& ask : receiver_.on_tick(now.monotonic_ns))
      chunk_messages_.push_back(PeerMessage{ask.donor, ask.request});
  } else {
    receiver_.reset();
  }
  execute_ready();
}

void Replica::execute_ready() {
  execute_entries();
  // Byzantine checkpoints: the core stops at each boundary until it has the snapshot of it.
  while (std::optional<uint64_t> boundary = core_->take_checkpoint_boundary()) {
    core_->checkpoint_taken(*boundary, service_.snapshot());
    execute_entries();
  }
  if (byzantine_mutable_ != nullptr && byzantine_mutable_->take_state_replaced()) {
    output_.loaded_state = true;  // a whole-cluster recovery completed: checkpoint it
  }
  if (byzantine_mutable_ != nullptr && byzantine_mutable_->take_diverged()) {
    held_replies_.clear();  // answers from a state that left the honest order
    held_keys_.clear();
  }
}

void Replica::execute_entries() {
  for (OrderedEntry& entry : core_->take_executable()) {
    Service::Result result =
        service_.execute(entry.request, order_time_us(entry), core_->take_system_output(entry));
    ++executed_since_start_;
    output_.executed.push_back(
        Executed{entry.timestamp, entry.request.client, entry.request.sequence, result.outcome});
    if (planted_.drop_session_entry && entry.request.sequence.value % 5 == 0) {
      service_.forget_session_for_testing(entry.request.client);  // planted bug
    }
    if (result.outcome != Service::Outcome::kStale && core_->replies_to(entry)) {
      // Counted by clients against the configuration that ordered it.
      const uint64_t epoch =
          byzantine_ != nullptr ? byzantine_->schedule().at(entry.timestamp.clock).epoch : 0;
      ClientReply reply{entry.request.client, entry.request.sequence,  core_->id(),
                        ReplyStatus::kOk,     std::move(result.reply), epoch};
      if (byzantine_ != nullptr && byzantine_->durable()) {
        held_keys_.emplace(reply.client, reply.sequence);
        held_replies_.push_back(HeldReply{order_time_us(entry), std::move(reply)});
      } else {
        output_.to_clients.push_back(std::move(reply));
      }
    }
  }
}

const std::vector<ClientRequest>& Replica::membership_proofs() const {
  static const std::vector<ClientRequest> kNone;
  return byzantine_ != nullptr ? byzantine_->schedule().proofs() : kNone;
}

uint64_t Replica::order_time_us(const OrderedEntry& entry) const {
  // Both are fixed by the order itself, so every replica computes the same value for an entry.
  if (failstop_ != nullptr) return HybridClock::wall_us_of(entry.timestamp.clock);
  return entry.timestamp.clock;  // byzantine: the proposal's synchronized-clock timestamp, µs
}

Replica::Output Replica::take_output() {
  execute_ready();
  output_.to_peers = core_->take_messages(last_now_);
  fill_state_transfers(output_.to_peers);
  for (PeerMessage& message : chunk_messages_)
    output_.to_peers.push_back(std::move(message));
  chunk_messages_.clear();
  output_.persist = core_->take_persist();  // after take_messages, which may add a clock lease
  release_certified_replies();  // the runtime sends them after this step's records are durable
  client_requests_this_step_ = 0;
  return std::exchange(output_, {});
}

void Replica::release_certified_replies() {
  if (byzantine_ == nullptr) return;
  const uint64_t certified = byzantine_->certified_us();
  while (!held_replies_.empty() && held_replies_.front().order_time_us < certified) {
    ClientReply& reply = held_replies_.front().reply;
    held_keys_.erase({reply.client, reply.sequence});
    output_.to_clients.push_back(std::move(reply));
    held_replies_.pop_front();
  }
}

void Replica::recover(const CheckpointData& checkpoint,
                      const std::vector<OrderingCore::PersistRecord>& records) {
  if (!checkpoint.service_snapshot.empty()) {
    service_.restore(checkpoint.service_snapshot);
    // The durable state's base (docs/DESIGN.md §11.8); without a checkpoint it is the genesis.
    if (byzantine_mutable_ != nullptr) {
      byzantine_mutable_->set_recovered_base_snapshot(checkpoint.service_snapshot);
    }
  }
  core_->recover(checkpoint.protocol_state, records);
}

Replica::CheckpointData Replica::checkpoint() const {
  // Byzantine: the base t+1 replicas vouched for, and the batches after it (the core's part).
  if (byzantine_ != nullptr)
    return CheckpointData{core_->checkpoint_state(), byzantine_->base_snapshot()};
  return CheckpointData{core_->checkpoint_state(), service_.snapshot()};
}

}  // namespace lockstep
