#include "client/core/client_session.h"

#include <algorithm>
#include <utility>

#include "core/assert.h"

namespace lockstep {
namespace {

// Deadlines far in the future must not wrap around to the past.
uint64_t saturating_add(uint64_t a, uint64_t b) {
  return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

}  // namespace

ClientSession::ClientSession(ClientId id, ClientOptions options) : id_(id), options_(options) {
  LOCKSTEP_ASSERT(options_.replica_count > 0, "a client needs at least one replica");
  LOCKSTEP_ASSERT(options_.retry_interval_ns > 0, "a zero retry interval would retry in a loop");
  LOCKSTEP_ASSERT(options_.outstanding_max > 0, "a client must be allowed one request");
}

Sequence ClientSession::submit(uint64_t now_ns, Bytes command) {
  LOCKSTEP_ASSERT(can_submit(), "submit beyond outstanding_max");
  Sequence sequence{next_sequence_++};
  ClientRequest request{id_, sequence, Sequence{}, std::move(command)};
  auto [it, inserted] = pending_.emplace(
      sequence,
      Pending{std::move(request), now_ns, saturating_add(now_ns, options_.retry_interval_ns)});
  LOCKSTEP_ASSERT(inserted, "sequence numbers are never reused");
  // Computed with the new request pending, so it never exceeds the request's own sequence.
  it->second.request.acked_below = acked_below();
  broadcast(it->second.request);
  return sequence;
}

void ClientSession::on_reply(uint64_t /*now_ns*/, const ClientReply& reply) {
  if (reply.client != id_) return;
  if (reply.replica.value >= options_.replica_count) return;
  auto it = pending_.find(reply.sequence);
  // Unknown or already completed: a late reply from a slower replica, or a reply to a retry.
  if (it == pending_.end()) return;
  // kBusy and kNotServing say nothing happened at that replica; the next retry asks again, and
  // another replica's kOk may still arrive before then.
  if (reply.status != ReplyStatus::kOk) return;
  completions_.push_back(Completion{reply.sequence, Status::kOk, reply.result, reply.replica});
  pending_.erase(it);
}

void ClientSession::tick(uint64_t now_ns) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending& pending = it->second;
    if (now_ns >= saturating_add(pending.submitted_ns, options_.deadline_ns)) {
      completions_.push_back(Completion{it->first, Status::kTimedOut, {}, ReplicaId{}});
      it = pending_.erase(it);
      continue;
    }
    ++it;
  }
  // Retries go out after the timeouts so they carry the watermark that the timeouts raised.
  Sequence watermark = acked_below();
  for (auto& [sequence, pending] : pending_) {
    if (now_ns < pending.next_retry_ns) continue;
    // Same (client, sequence), so the replicas' session table answers it from its cache if it
    // already ran. The watermark may have risen since the first send; a higher one is always
    // true and lets replicas forget replies sooner.
    pending.request.acked_below = watermark;
    pending.next_retry_ns = saturating_add(now_ns, options_.retry_interval_ns);
    broadcast(pending.request);
  }
}

std::vector<ClientSession::Send> ClientSession::take_sends() {
  return std::exchange(sends_, {});
}

std::vector<ClientSession::Completion> ClientSession::take_completions() {
  return std::exchange(completions_, {});
}

std::optional<uint64_t> ClientSession::next_deadline_ns() const {
  std::optional<uint64_t> earliest;
  for (const auto& [sequence, pending] : pending_) {
    uint64_t at =
        std::min(pending.next_retry_ns, saturating_add(pending.submitted_ns, options_.deadline_ns));
    if (!earliest || at < *earliest) earliest = at;
  }
  return earliest;
}

void ClientSession::broadcast(const ClientRequest& request) {
  for (uint32_t replica = 0; replica < options_.replica_count; ++replica) {
    sends_.push_back(Send{ReplicaId{replica}, request});
  }
}

Sequence ClientSession::acked_below() const {
  if (pending_.empty()) return Sequence{next_sequence_};
  return pending_.begin()->first;
}

}  // namespace lockstep
