#include "client/core/client_session.h"

#include <algorithm>
#include <utility>

#include "core/assert.h"
#include "crypto/signing.h"

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
  LOCKSTEP_ASSERT(options_.reply_quorum > 0 && options_.reply_quorum <= options_.replica_count,
                  "the reply quorum must be between 1 and the number of replicas");
}

Sequence ClientSession::submit(uint64_t now_ns, Bytes command) {
  LOCKSTEP_ASSERT(can_submit(), "submit beyond outstanding_max");
  Sequence sequence{next_sequence_++};
  ClientRequest request{id_, sequence, Sequence{}, std::move(command), {}};
  auto [it, inserted] = pending_.emplace(
      sequence,
      Pending{
          std::move(request), now_ns, saturating_add(now_ns, options_.retry_interval_ns), {}, {}});
  LOCKSTEP_ASSERT(inserted, "sequence numbers are never reused");
  // Computed with the new request pending, so it never exceeds the request's own sequence.
  it->second.request.acked_below = acked_below();
  sign(it->second.request);
  broadcast(it->second.request);
  return sequence;
}

void ClientSession::on_reply(uint64_t /*now_ns*/, const ClientReply& reply,
                             const ReplyProof* proof) {
  if (reply.client != id_) return;
  if (reply.replica.value >= options_.replica_count) return;
  auto it = pending_.find(reply.sequence);
  // Unknown or already completed: a late reply from a slower replica, or a reply to a retry.
  if (it == pending_.end()) return;
  // kBusy and kNotServing say nothing happened at that replica; the next retry asks again, and
  // another replica's kOk may still arrive before then.
  std::vector<ReplicaId>& busy_from = it->second.busy_from;
  auto busy = std::find(busy_from.begin(), busy_from.end(), reply.replica);
  if (reply.status == ReplyStatus::kBusy) {
    on_busy(it->second, reply.replica);
    return;
  }
  if (busy != busy_from.end()) busy_from.erase(busy);  // its latest word is something else now
  if (reply.status != ReplyStatus::kOk) return;
  if (options_.reply_quorum == 1) {
    // failstop: replicas fail only by stopping, so any one output is the output.
    completions_.push_back(
        Completion{reply.sequence, Status::kOk, reply.result, reply.replica, {}, {}});
    pending_.erase(it);
    return;
  }
  if (vote(it->second, reply, proof)) pending_.erase(it);
}

void ClientSession::on_busy(Pending& pending, ReplicaId replica) {
  // No earlier retry: the regular one, a full interval after the last send, is the backoff (a
  // refusal comes back within a round trip, so it waits about one interval either way).
  if (std::find(pending.busy_from.begin(), pending.busy_from.end(), replica) ==
      pending.busy_from.end()) {
    pending.busy_from.push_back(replica);
  }
}

// Byzantine output voting (Schneider §3.1, "the output of a t fault-tolerant state machine is
// the output produced by t+1 of its replicas"): at most t replicas lie, so t+1 identical results
// include one from a correct replica, and the t+1 correct replicas of 2t+1 always get there.
bool ClientSession::vote(Pending& pending, const ClientReply& reply, const ReplyProof* proof) {
  auto mine = std::find_if(pending.votes.begin(), pending.votes.end(),
                           [&](const Vote& vote) { return vote.replica == reply.replica; });
  if (mine != pending.votes.end()) {
    // The same answer again (to a retry) adds nothing; a different one proves this replica
    // faulty, but it keeps its first vote: otherwise a liar could vote for every result.
    if (reply.result == mine->result) {
      if (!mine->proof && proof) mine->proof = *proof;
      return false;
    }
    if (!mine->contradiction) mine->contradiction = reply.result;
    return false;
  }
  pending.votes.push_back(Vote{reply.replica, reply.result,
                               proof ? std::optional<ReplyProof>(*proof) : std::nullopt,
                               std::nullopt});

  std::vector<const Vote*> agreeing;
  for (const Vote& vote : pending.votes) {
    if (vote.result == reply.result) agreeing.push_back(&vote);
  }
  if (agreeing.size() < votes_needed()) return false;

  ReplyCertificate certificate;
  certificate.reply =
      ClientReply{id_, reply.sequence, agreeing.front()->replica, ReplyStatus::kOk, reply.result};
  for (const Vote* vote : agreeing) {
    if (vote->proof) certificate.proofs.push_back(*vote->proof);
  }
  std::vector<Dissent> dissent;
  for (const Vote& vote : pending.votes) {
    if (vote.result != reply.result) {
      dissent.push_back(Dissent{vote.replica, ReplyStatus::kOk, vote.result});
    }
    if (vote.contradiction && *vote.contradiction != reply.result) {
      dissent.push_back(Dissent{vote.replica, ReplyStatus::kOk, *vote.contradiction});
    }
  }
  Completion completion{
      reply.sequence, Status::kOk, reply.result, agreeing.front()->replica, {}, {}};
  completion.certificate = std::move(certificate);
  completion.dissent = std::move(dissent);
  completions_.push_back(std::move(completion));
  return true;
}

uint32_t ClientSession::votes_needed() const {
  if (options_.planted_accept_short_quorum) return std::max<uint32_t>(options_.reply_quorum - 1, 1);
  return options_.reply_quorum;
}

void ClientSession::tick(uint64_t now_ns) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending& pending = it->second;
    if (now_ns >= saturating_add(pending.submitted_ns, options_.deadline_ns)) {
      // As many refusals as it takes to accept an output: in failstop one, in byzantine mode t+1,
      // so at least one correct replica said busy.
      const bool refused = pending.busy_from.size() >= options_.reply_quorum;
      const ReplicaId refused_by = refused ? pending.busy_from.back() : ReplicaId{};
      completions_.push_back(Completion{
          it->first, refused ? Status::kBusy : Status::kTimedOut, {}, refused_by, {}, {}});
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
    if (pending.request.acked_below != watermark) {
      pending.request.acked_below = watermark;
      sign(pending.request);  // the signature covers the watermark
    }
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

void ClientSession::sign(ClientRequest& request) const {
  if (options_.signer != nullptr) crypto::sign_request(*options_.signer, request);
}

Sequence ClientSession::acked_below() const {
  if (pending_.empty()) return Sequence{next_sequence_};
  return pending_.begin()->first;
}

}  // namespace lockstep
