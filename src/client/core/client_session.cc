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

std::vector<ReplicaId> every_replica(uint32_t count) {
  std::vector<ReplicaId> replicas;
  for (uint32_t r = 0; r < count; ++r)
    replicas.push_back(ReplicaId{r});
  return replicas;
}

}  // namespace

ClientSession::ClientSession(ClientId id, ClientOptions options)
    : id_(id),
      options_(std::move(options)),
      membership_(options_.initial_members.empty() ? every_replica(options_.replica_count)
                                                   : options_.initial_members,
                  options_.reply_quorum - 1, options_.replica_count, options_.membership_verifier) {
  LOCKSTEP_ASSERT(options_.replica_count > 0, "a client needs at least one replica");
  LOCKSTEP_ASSERT(options_.retry_interval_ns > 0, "a zero retry interval would retry in a loop");
  LOCKSTEP_ASSERT(options_.outstanding_max > 0, "a client must be allowed one request");
  LOCKSTEP_ASSERT(options_.reply_quorum > 0 && options_.reply_quorum <= options_.replica_count,
                  "the reply quorum must be between 1 and the number of replicas");
  for (ReplicaId member : options_.initial_members) {
    LOCKSTEP_ASSERT(member.value < options_.replica_count, "an initial member that is not listed");
  }
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
// With membership changes the t+1 must be members of one configuration (try_complete).
bool ClientSession::vote(Pending& pending, const ClientReply& reply, const ReplyProof* proof) {
  auto mine = std::find_if(pending.votes.begin(), pending.votes.end(),
                           [&](const Vote& vote) { return vote.replica == reply.replica; });
  if (mine != pending.votes.end()) {
    // The same answer again (to a retry, perhaps stating the replica's newer epoch) adds
    // nothing; a different one proves this replica faulty, but it keeps its first vote:
    // otherwise a liar could vote for every result.
    if (reply.result == mine->result) {
      if (!mine->proof && proof) {
        mine->proof = *proof;
        mine->epoch = reply.epoch;  // the certificate's reply must match the proof's digest
      }
      return false;
    }
    if (!mine->contradiction) mine->contradiction = reply.result;
    return false;
  }
  pending.votes.push_back(Vote{reply.replica, reply.epoch, reply.result,
                               proof ? std::optional<ReplyProof>(*proof) : std::nullopt,
                               std::nullopt});
  if (!member_of_known_configuration(reply.replica)) {
    // Kept: an epoch learnt later may make it a member. Until then it changes no count.
    ++non_member_replies_;
    return false;
  }
  return try_complete(pending, reply.result);
}

uint32_t ClientSession::faults_of(uint64_t epoch) const {
  return membership_.faults_of(epoch);
}

bool ClientSession::member_of_known_configuration(ReplicaId replica) const {
  const std::vector<Configuration>& configurations = schedule().configurations();
  return std::any_of(configurations.begin(), configurations.end(),
                     [&](const Configuration& c) { return c.contains(replica); });
}

bool ClientSession::try_complete(Pending& pending, const Bytes& result) {
  // Some configuration e must have t_e+1 members among the agreeing votes: C_e has at most t_e
  // faulty members, so one of them is correct, and a correct replica's output is the agreed
  // one. The epoch a reply states plays no part: a faulty replica states whatever helps, and a
  // correct one's cached reply states its current epoch, not the one that ordered the request.
  // Adding up members of different configurations would be unsafe: each may hold its own t
  // faulty members, and t+1 of them together need not include a correct one.
  const std::vector<Configuration>& configurations = schedule().configurations();
  std::vector<const Vote*> counted;
  bool complete = false;
  // Latest first, so a certificate names the newest configuration that suffices.
  for (auto configuration = configurations.rbegin(); configuration != configurations.rend();
       ++configuration) {
    counted.clear();
    for (const Vote& vote : pending.votes) {
      if (vote.result == result && configuration->contains(vote.replica)) counted.push_back(&vote);
    }
    uint64_t needed = uint64_t{faults_of(configuration->epoch)} + 1;
    if (options_.planted_accept_short_quorum) needed = std::max<uint64_t>(needed - 1, 1);
    if (counted.size() >= needed) {
      complete = true;
      break;
    }
  }
  if (!complete) return false;
  LOCKSTEP_ASSERT(!counted.empty(), "a configuration completed a request with no votes");

  const Vote& first = *counted.front();
  ReplyCertificate certificate;
  certificate.reply = ClientReply{
      id_, pending.request.sequence, first.replica, ReplyStatus::kOk, result, first.epoch};
  for (const Vote* vote : counted) {
    if (vote->proof) certificate.proofs.push_back(*vote->proof);
  }
  certificate.membership_changes = schedule().proofs();
  std::vector<Dissent> dissent;
  for (const Vote& vote : pending.votes) {
    if (vote.result != result) {
      dissent.push_back(Dissent{vote.replica, ReplyStatus::kOk, vote.result});
    }
    if (vote.contradiction && *vote.contradiction != result) {
      dissent.push_back(Dissent{vote.replica, ReplyStatus::kOk, *vote.contradiction});
    }
  }
  Completion completion{pending.request.sequence, Status::kOk, result, first.replica, {}, {}};
  completion.certificate = std::move(certificate);
  completion.dissent = std::move(dissent);
  completions_.push_back(std::move(completion));
  return true;
}

uint32_t ClientSession::busy_quorum() const {
  if (options_.reply_quorum == 1) return 1;
  return faults_of(schedule().latest().epoch) + 1;
}

bool ClientSession::learn_membership(ReplicaId from, const std::vector<ClientRequest>& changes) {
  if (!membership_.offer(from, changes)) return false;
  recount();
  return true;
}

bool ClientSession::adopt_schedule(const Schedule& schedule) {
  if (!membership_.adopt(schedule)) return false;
  recount();
  return true;
}

void ClientSession::recount() {
  if (options_.reply_quorum == 1) return;
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending& pending = it->second;
    // Each distinct result once: completing on one ends the request.
    std::vector<const Bytes*> results;
    bool completed = false;
    for (const Vote& vote : pending.votes) {
      if (std::any_of(results.begin(), results.end(),
                      [&](const Bytes* seen) { return *seen == vote.result; })) {
        continue;
      }
      results.push_back(&vote.result);
      const Bytes result = vote.result;  // the votes may move while completing
      if (try_complete(pending, result)) {
        completed = true;
        break;
      }
    }
    it = completed ? pending_.erase(it) : std::next(it);
  }
}

void ClientSession::tick(uint64_t now_ns) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    Pending& pending = it->second;
    if (now_ns >= saturating_add(pending.submitted_ns, options_.deadline_ns)) {
      // As many refusals as it takes to accept an output: in failstop one, in byzantine mode t+1,
      // so at least one correct replica said busy.
      const bool refused = pending.busy_from.size() >= busy_quorum();
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
