// One client session's protocol logic, with no I/O and no clock: sequence numbers, the
// acknowledgement watermark, retries and the deadline. The networked Client (client/client.h)
// and the simulator both drive it.
//
// failstop mode: a request is broadcast to every replica; the first reply with status kOk
// completes it. With no answer after `retry_interval_ns` the request is broadcast again with the
// same (client, sequence), which the replicas' session table turns into "the first reply again",
// never a second execution. With no answer by `deadline_ns` after submission the request completes
// with kTimedOut: its outcome is unknown (it may still take effect).
//
// Back-pressure: a replica at its limit answers kBusy (replica/replica.h) and does not take the
// request. The session keeps retrying it every `retry_interval_ns` (the backoff: never sooner)
// until the deadline. If the deadline passes while at least `reply_quorum` replicas'
// latest word on the request was kBusy, the request completes with kBusy instead of kTimedOut:
// "busy, retry later". Those replicas did not execute it; others may have, so the outcome is
// strictly unknown, but most likely it did not run. (A retry after kBusy is safe within the
// session table's idle expiry, statemachine/service.h, which is far longer than any deadline.)
//
// byzantine mode (`reply_quorum` = t+1, a `signer`): every request is signed with the client
// principal's key; a request completes only when `reply_quorum` distinct replicas (t+1 members
// of one configuration, below) sent the same kOk result, and the completion carries the certificate
// (those replicas' signatures, checked by the caller before on_reply, see crypto/signing.h) and the
// dissent (which replica said what else). A faulty replica can neither complete a request alone nor
// block one.
//
// Membership changes (byzantine, crypto/membership.h, docs/DESIGN.md §11.9): the session keeps a
// Schedule, the configurations it knows, starting from the cluster file's members, and extends it
// with the administrator's signed changes replicas attach to their replies (learn_membership /
// adopt_schedule: a change for epoch k+1 is adopted only once t_k+1 members of epoch k showed it,
// client/core/membership_learner.h). A request completes with result X when, for some
// configuration e the session knows, at least t_e+1 distinct members of C_e sent X with kOk,
// whatever epoch each reply states. C_e has at most t_e faulty members (the fault assumption), so
// those t_e+1 include a correct replica, whose output is the agreed one. Votes are never added up
// across configurations: each may hold its own t faulty members (epoch 0 = {0,1,2} with 2 faulty,
// epoch 1 = {0,1,3} with 3 faulty: 2 and 3 together are t+1 = 2 liars). Nor is the stated epoch
// trusted: a faulty replica states whatever helps, and a correct one's cached reply states its
// current epoch, not the one that ordered the request. So a request ordered in an earlier
// configuration still completes with t+1 of that configuration's members after a change that
// raises t. A reply from a replica that is a member of no known configuration (a spare, or a
// replica only a change the session has not learnt adds) is kept and counted once the schedule
// learns an epoch that includes it.
//
// What the assumption must cover: a replica removed from the membership keeps its key, and its
// votes still count for the configurations it was a member of (it can sign any epoch, so no
// check of the stated epoch could stop that); those configurations' bound of t faulty members
// must keep holding after it leaves, so a decommissioned replica's key must be destroyed.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "client/core/membership_learner.h"
#include "core/messages.h"
#include "crypto/crypto.h"
#include "crypto/membership.h"

namespace lockstep {

struct ClientOptions {
  uint32_t replica_count = 0;
  uint64_t retry_interval_ns = 200'000'000;
  uint64_t deadline_ns = 5'000'000'000;
  uint32_t outstanding_max = 1024;  // pipelined requests in flight
  // Matching kOk replies from distinct replicas needed to complete a request: 1 in failstop,
  // t+1 in byzantine mode, t being the first configuration's (epoch 0), whose members must
  // send them; later epochs' t come from their member counts.
  uint32_t reply_quorum = 1;
  // Byzantine mode: the members of epoch 0, ascending; empty means every listed replica
  // (replica_count of them, spares included, so give it whenever the cluster file has spares).
  std::vector<ReplicaId> initial_members;
  // Byzantine mode: knows the administrator's key as client principal kAdminPrincipal, to check
  // the membership changes replicas attach (not owned; outlives the session). Null: changes are
  // refused (unless adopt_schedule gives them), so replies of epochs after 0 are not counted.
  const crypto::Verifier* membership_verifier = nullptr;
  // Byzantine mode: signs every request (not owned; outlives the session). Null in failstop.
  const crypto::Signer* signer = nullptr;
  // Planted bug (tests only): complete with t_e matching replies of configuration e's members.
  bool planted_accept_short_quorum = false;
};

// One replica's signed statement of a reply: the digests of every reply in the batch it signed
// (crypto/signing.h reply_batch_signing_bytes), which of them is this reply, and the signature.
struct ReplyProof {
  ReplicaId replica{};
  std::vector<Digest> batch_digests;
  uint32_t index = 0;
  Signature signature{};
  // The epoch this replica's reply stated (it is in the signed digest; the replies of distinct
  // replicas may state different epochs). Needed to check the digest; it says nothing about
  // which configuration the replica's vote counts for.
  uint64_t epoch = 0;
  bool operator==(const ReplyProof&) const = default;
};

// A reply and proofs from t_e+1 distinct members of one configuration e that it is their output:
// what `lockstep verify-reply` checks offline against the cluster's public keys.
struct ReplyCertificate {
  // `replica` and `epoch` are the first prover's; the others sent the same output.
  ClientReply reply;
  std::vector<ReplyProof> proofs;
  // The administrator's signed changes of every epoch after 0 the session knew when it
  // completed (Schedule::proofs), so that the configuration whose members signed can be
  // checked offline.
  std::vector<ClientRequest> membership_changes{};
  bool operator==(const ReplyCertificate&) const = default;
};

class ClientSession {
 public:
  enum class Status : uint8_t {
    kOk,        // `result` is the output
    kTimedOut,  // no answer by the deadline: unknown whether it took effect
    kBusy,      // refused as busy by the replicas up to the deadline: likely did not run
  };
  struct Dissent {
    ReplicaId replica;
    ReplyStatus status;
    Bytes result;
  };
  struct Completion {
    Sequence sequence;
    Status status;
    Bytes result;  // the state machine's output when kOk
    ReplicaId replied_by;
    // byzantine mode: the proofs of the replicas that agreed (empty in failstop), and the
    // replies that differed from the accepted one, by replica.
    std::optional<ReplyCertificate> certificate;
    std::vector<Dissent> dissent;
  };
  struct Send {
    ReplicaId to;
    ClientRequest request;
  };

  ClientSession(ClientId id, ClientOptions options);

  // Starts a request; returns its sequence number. Precondition: can_submit().
  Sequence submit(uint64_t now_ns, Bytes command);
  bool can_submit() const { return pending_.size() < options_.outstanding_max; }

  // `proof` is the replica's signed statement of this reply (byzantine mode; its signature must
  // already be checked by the caller); null in failstop.
  void on_reply(uint64_t now_ns, const ClientReply& reply, const ReplyProof* proof = nullptr);
  void tick(uint64_t now_ns);

  // Byzantine mode: the administrator's signed changes replica `from` attached to a batch of
  // replies whose signature the caller checked (SignedReplies::membership_changes, every epoch
  // after 0 in order). A change for an epoch the session does not know is adopted once t+1
  // members of the epoch before it showed the same one (MembershipLearner); then the session
  // recounts the replies it kept, and returns true.
  bool learn_membership(ReplicaId from, const std::vector<ClientRequest>& changes);
  // A schedule the caller already trusts (a Client's learner, which feeds all its sessions).
  // Ignored unless it extends this one's.
  bool adopt_schedule(const Schedule& schedule);
  const Schedule& schedule() const { return membership_.schedule(); }
  // Membership changes refused: malformed, a bad signature, a different change for a known
  // epoch, or a replica's second change for an epoch.
  uint64_t refused_membership_changes() const { return membership_.refused(); }
  // Replies kept uncounted on arrival because the replier was a member of no configuration the
  // session knew (each replica's first reply to a request, not its repeats).
  uint64_t non_member_replies() const { return non_member_replies_; }

  std::vector<Send> take_sends();
  std::vector<Completion> take_completions();

  ClientId id() const { return id_; }
  size_t outstanding() const { return pending_.size(); }
  // Earliest time tick() has something to do, for the event loop's timer.
  std::optional<uint64_t> next_deadline_ns() const;

 private:
  // byzantine mode: what one replica said about one request. Its first kOk result is its vote
  // (a correct replica's result never changes: retries are answered from its session table);
  // the first different result it sends afterwards is kept as evidence of its fault. Later ones
  // are dropped, so a faulty replica cannot grow a pending request without bound.
  struct Vote {
    ReplicaId replica;
    uint64_t epoch;  // as stated (and signed): for the certificate's reply, not for counting
    Bytes result;
    std::optional<ReplyProof> proof;
    std::optional<Bytes> contradiction;
  };
  struct Pending {
    ClientRequest request;
    uint64_t submitted_ns;
    uint64_t next_retry_ns;
    std::vector<Vote> votes;  // at most one per replica, in arrival order
    // Replicas whose latest reply to this request was kBusy (at most replica_count).
    std::vector<ReplicaId> busy_from;
  };
  void on_busy(Pending& pending, ReplicaId replica);
  void broadcast(const ClientRequest& request);
  Sequence acked_below() const;
  void sign(ClientRequest& request) const;
  // byzantine mode: records `reply` as a vote; true when it completed the request.
  bool vote(Pending& pending, const ClientReply& reply, const ReplyProof* proof);
  // byzantine mode: completes the request if t_e+1 members of some known configuration e voted
  // for `result`.
  bool try_complete(Pending& pending, const Bytes& result);
  bool member_of_known_configuration(ReplicaId replica) const;
  // The faults tolerated by epoch `epoch` (known to the schedule).
  uint32_t faults_of(uint64_t epoch) const;
  uint32_t busy_quorum() const;
  void recount();

  ClientId id_;
  ClientOptions options_;
  uint64_t next_sequence_ = 1;
  std::map<Sequence, Pending> pending_;
  std::vector<Send> sends_;
  std::vector<Completion> completions_;
  MembershipLearner membership_;
  uint64_t non_member_replies_ = 0;
};

}  // namespace lockstep
