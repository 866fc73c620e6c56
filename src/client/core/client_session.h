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
// principal's key; a request completes only when `reply_quorum` distinct replicas sent the same
// kOk result, and the completion carries the certificate (those replicas' signatures, checked by
// the caller before on_reply, see crypto/signing.h) and the dissent (which replica said what
// else). A faulty replica can neither complete a request alone nor block one.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "core/messages.h"
#include "crypto/crypto.h"

namespace lockstep {

struct ClientOptions {
  uint32_t replica_count = 0;
  uint64_t retry_interval_ns = 200'000'000;
  uint64_t deadline_ns = 5'000'000'000;
  uint32_t outstanding_max = 1024;  // pipelined requests in flight
  // Matching kOk replies from distinct replicas needed to complete a request: 1 in failstop,
  // t+1 in byzantine mode.
  uint32_t reply_quorum = 1;
  // Byzantine mode: signs every request (not owned; outlives the session). Null in failstop.
  const crypto::Signer* signer = nullptr;
  // Planted bug (tests only): complete with reply_quorum - 1 matching replies.
  bool planted_accept_short_quorum = false;
};

// One replica's signed statement of a reply: the digests of every reply in the batch it signed
// (crypto/signing.h reply_batch_signing_bytes), which of them is this reply, and the signature.
struct ReplyProof {
  ReplicaId replica{};
  std::vector<Digest> batch_digests;
  uint32_t index = 0;
  Signature signature{};
  bool operator==(const ReplyProof&) const = default;
};

// A reply and reply_quorum proofs from distinct replicas that it is their output: what
// `lockstep verify-reply` checks offline against the cluster's public keys.
struct ReplyCertificate {
  ClientReply reply;  // `replica` is the first prover's id; the others sent the same output
  std::vector<ReplyProof> proofs;
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
  uint32_t votes_needed() const;

  ClientId id_;
  ClientOptions options_;
  uint64_t next_sequence_ = 1;
  std::map<Sequence, Pending> pending_;
  std::vector<Send> sends_;
  std::vector<Completion> completions_;
};

}  // namespace lockstep
