// Every message lockstep puts on a wire, as plain structs. Encoding lives in core/codec.h and the
// framing (length, version, checksum) there too; docs/DESIGN.md gives each message's role.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/types.h"

namespace lockstep {

// ---- client <-> replica -------------------------------------------------------------------

// A client's request. `command` is opaque to the protocol: only the state machine reads it.
// `acked_below` lets replicas forget cached replies: every request of this client with a smaller
// sequence number has been answered, so its reply will never be asked for again.
//
// In byzantine mode `signature` is the client principal's signature over the other fields
// (crypto/signing.h, request_signing_bytes); in failstop mode it is empty.
struct ClientRequest {
  ClientId client{};
  Sequence sequence{};
  Sequence acked_below{};
  Bytes command;
  Bytes signature;
  bool operator==(const ClientRequest&) const = default;
};

enum class ReplyStatus : uint8_t {
  kOk = 0,          // executed; `result` is the state machine's output
  kBusy = 1,        // not accepted (a limit was hit); nothing happened, retry later
  kNotServing = 2,  // this replica does not serve (halted, removed or not caught up)
};

struct ClientReply {
  ClientId client{};
  Sequence sequence{};
  ReplicaId replica{};
  ReplyStatus status = ReplyStatus::kOk;
  Bytes result;
  // Byzantine mode: the configuration epoch of the replica when it executed the request (or
  // refused it), so that a client counts the reply against that epoch's members and t
  // (crypto/membership.h, docs/DESIGN.md §11.9). Always 0 in failstop mode.
  uint64_t epoch = 0;
  bool operator==(const ClientReply&) const = default;
};

// ---- replica <-> replica (failstop protocol) ------------------------------------------------

// A client request as ordered by its owner: position `index` (1-based, contiguous) in the owner's
// stream, with the owner's timestamp.
struct OrderedEntry {
  uint64_t index = 0;
  Timestamp timestamp{};
  ClientRequest request;
  bool operator==(const OrderedEntry&) const = default;
};

// The one message of normal operation, sent by `sender` to every other member: new entries of
// the sender's stream, the sender's clock (a heartbeat: nothing the sender sends later has a lower
// timestamp), and how many entries of each replica's stream the sender holds (`received[r]`, a
// contiguous prefix), which is how every replica learns that an entry is held by all.
struct ReplicaUpdate {
  ReplicaId sender{};
  uint64_t incarnation = 0;  // changes when the sender process restarts
  // The sender keeps its state on disk with every acknowledged entry synced (fsync "always"), so
  // after a restart (a new incarnation) it still holds all it ever acknowledged and may carry on
  // as the same member (docs/DESIGN.md §10). Without it a new incarnation is a failed replica.
  bool durable = false;
  ViewNumber view{};
  uint64_t clock = 0;  // sender's HLC value, greater than every entry in this message
  std::vector<OrderedEntry> entries;  // contiguous, ascending index
  std::vector<uint64_t> received;     // indexed by ReplicaId
  bool operator==(const ReplicaUpdate&) const = default;
};

// A client request a non-owner holds but has not seen ordered after a while (the client may have
// crashed in the middle of its broadcast): relayed to the owner, which orders it.
struct ForwardRequest {
  ReplicaId sender{};
  ClientRequest request;
  bool operator==(const ForwardRequest&) const = default;
};

// What a replica holds of one removed replica's stream, for the view change.
struct StreamTail {
  ReplicaId source{};
  uint64_t received = 0;              // entries 1..received are held
  std::vector<OrderedEntry> entries;  // the held entries that are not yet executed
  bool operator==(const StreamTail&) const = default;
};

// Sent to the coordinator of `view` (the lowest id in `members`): "I suspect everyone outside
// `members`; here is what I hold of their streams".
struct ViewChange {
  ReplicaId sender{};
  ViewNumber view{};
  std::vector<ReplicaId> members;  // ascending
  std::vector<StreamTail> tails;   // one per replica not in `members`
  bool operator==(const ViewChange&) const = default;
};

// The coordinator's decision: the new membership and, for each removed replica, the cut (the
// last of its entries that will ever be executed) with the entries some members may lack.
struct NewView {
  ReplicaId sender{};
  ViewNumber view{};
  std::vector<ReplicaId> members;  // ascending
  std::vector<StreamTail> cuts;    // `received` is the cut
  bool operator==(const NewView&) const = default;
};

// ---- replica <-> replica (byzantine protocol) -----------------------------------------------

// A batch of client requests that `origin` proposes for the total order at `timestamp` (its
// synchronized clock, µs). (origin, timestamp) names one Dolev–Strong broadcast instance; honest
// origins never reuse a timestamp. Each request carries its client's signature.
struct Proposal {
  ReplicaId origin{};
  uint64_t timestamp_us = 0;
  std::vector<ClientRequest> requests;
  // A durable replica recovering from its disk puts its recovery claim here (encoded, see
  // protocol/byzantine/durability.h; docs/DESIGN.md §11.8), so that every honest replica decides
  // the same claims. Empty otherwise.
  Bytes claim;
  bool operator==(const Proposal&) const = default;
};

// One replica's signature over a proposal's digest (crypto/signing.h, proposal_digest).
struct Endorsement {
  ReplicaId signer{};
  Signature signature{};
  bool operator==(const Endorsement&) const = default;
};

// The Dolev–Strong message: a proposal and the chain of distinct replicas that accepted and
// relayed it, the origin first. A chain of m signatures is accepted only inside the window
// [timestamp - m*ε, timestamp + σ + min(m, t+1)*(Δ+ε)] of the receiver's clock (docs/DESIGN.md
// §11.2).
struct SignedProposal {
  Proposal proposal;
  std::vector<Endorsement> chain;
  bool operator==(const SignedProposal&) const = default;
};

// ---- replica <-> replica (failstop reconfiguration, docs/DESIGN.md §12) ----------------------

// A replica without state of its own (a spare, a wiped disk, one removed earlier) asks the members
// to add it. Sent to every listed replica until a NewView that includes the sender arrives. From
// a current member it means that member lost its state: the others remove it first.
struct JoinRequest {
  ReplicaId sender{};
  uint64_t incarnation = 0;
  bool operator==(const JoinRequest&) const = default;
};

// A member added by `view` that has no state yet asks for it: from every member, every heartbeat
// interval (which also keeps it from being suspected while it loads); only `donor` answers.
struct StateRequest {
  ReplicaId sender{};
  ViewNumber view{};
  ReplicaId donor{};
  bool operator==(const StateRequest&) const = default;
};

// A member's state of one moment (between steps): its core's checkpoint state and the service
// snapshot. The core emits it with both blobs empty; the Replica fills them at the end of the step.
struct StateTransfer {
  ReplicaId sender{};
  ViewNumber view{};
  Bytes protocol_state;
  Bytes service_snapshot;
  bool operator==(const StateTransfer&) const = default;
};

// Byzantine mode: a replica's signed word that its state after executing every instance with a
// timestamp below `boundary_us` (a multiple of the checkpoint interval) has this digest (BLAKE2b
// of the service snapshot). A restarted replica loads a snapshot that t+1 replicas vouch for, so
// at least one honest one did (docs/DESIGN.md §11.7). In that mode StateRequest.view and
// StateTransfer.view carry the boundary.
struct CheckpointVote {
  ReplicaId replica{};
  uint64_t boundary_us = 0;
  Digest digest{};
  Signature signature{};
  bool operator==(const CheckpointVote&) const = default;
};

// A StateTransfer too large for one message travels in pieces (src/replica/state_chunks.h): the
// donor sends the first, and the joiner asks for each next one, so the donor never queues more
// than one piece per joiner. `digest` (BLAKE2b of the whole encoded StateTransfer) names the
// transfer and is checked when the last piece is in.
struct StateChunk {
  Digest digest{};
  uint64_t offset = 0;
  uint64_t total = 0;  // bytes of the encoded StateTransfer
  Bytes data;
  bool operator==(const StateChunk&) const = default;
};

struct StateChunkRequest {
  Digest digest{};
  uint64_t offset = 0;  // the first byte the joiner does not hold yet
  bool operator==(const StateChunkRequest&) const = default;
};

using ReplicaMessage =
    std::variant<ReplicaUpdate, ForwardRequest, ViewChange, NewView, SignedProposal, JoinRequest,
                 StateRequest, StateTransfer, CheckpointVote, StateChunk, StateChunkRequest>;

// ---- connection level ----------------------------------------------------------------------

enum class PeerRole : uint8_t { kReplica = 1, kClient = 2 };

// First frame on every connection, in both directions. For replica channels `next_expected` is
// the channel sequence number the sender expects next from the receiver, so that after a
// reconnect the receiver resends exactly what was lost (FIFO survives reconnects).
struct Hello {
  PeerRole role = PeerRole::kClient;
  uint64_t id = 0;           // ReplicaId value or ClientId value
  uint64_t incarnation = 0;  // random per process start
  uint64_t next_expected = 0;
  bool operator==(const Hello&) const = default;
};

// A replica message on a FIFO channel: `channel_sequence` numbers the frames of one direction of
// one replica pair (from 1); `acknowledged` says the sender has received every frame of the other
// direction up to it, so the other side may drop them from its resend buffer.
struct PeerData {
  uint64_t channel_sequence = 0;
  uint64_t acknowledged = 0;
  ReplicaMessage message;
  bool operator==(const PeerData&) const = default;
};

// Acknowledgement alone, when there is no data to carry it.
struct PeerAck {
  uint64_t acknowledged = 0;
  bool operator==(const PeerAck&) const = default;
};

// An operator's (or a test's) question to one replica, on a client connection: what it has
// executed and a digest of its state. Answered with a StatusReply.
struct StatusRequest {
  uint64_t nonce = 0;
  bool operator==(const StatusRequest&) const = default;
};

struct StatusReply {
  uint64_t nonce = 0;
  ReplicaId replica{};
  bool halted = false;
  ViewNumber view{};
  std::vector<ReplicaId> members;
  uint64_t executed = 0;  // requests executed (duplicates included)
  uint64_t digest = 0;    // Service::digest() of the replicated state
  uint64_t epoch = 0;     // byzantine mode: the configuration epoch in force at the replica
  bool operator==(const StatusReply&) const = default;
};

// An operator's membership change (`lockstep admin`), on a client connection to a member. The
// member starts the view change that makes it; AdminReply says whether it was taken, and why not.
enum class MembershipChange : uint8_t { kAdd = 1, kRemove = 2 };
struct AdminRequest {
  uint64_t nonce = 0;
  MembershipChange change = MembershipChange::kAdd;
  ReplicaId replica{};
  bool operator==(const AdminRequest&) const = default;
};

struct AdminReply {
  uint64_t nonce = 0;
  ReplicaId replica{};  // the answering replica
  bool accepted = false;
  std::string detail;  // why not, or what happens next
  bool operator==(const AdminReply&) const = default;
};

// Byzantine mode: a replica's replies to one client connection, under one signature over the
// digest of all of them (crypto/signing.h, reply_batch_signing_bytes), so that signing and checking
// cost one operation per batch, not per reply.
//
// `membership_changes` are the administrator's signed requests that started every configuration
// after the first (crypto/membership.h, Schedule::proofs), in epoch order, so that a client meeting
// a reply of an epoch it does not know can learn that epoch's members. A replica attaches them to
// a connection's first batches, and to its next 64 after each change. They are outside the
// replica's signature (each carries the administrator's), and a client adopts a change for epoch
// k+1 only once t_k+1 members of epoch k showed it the same one (client/core/membership_learner.h):
// the administrator may sign a change the order then refuses.
struct SignedReplies {
  ReplicaId replica{};
  std::vector<ClientReply> replies;
  Signature signature{};
  std::vector<ClientRequest> membership_changes{};
  bool operator==(const SignedReplies&) const = default;
};

using WireMessage =
    std::variant<Hello, ClientRequest, ClientReply, PeerData, PeerAck, StatusRequest, StatusReply,
                 SignedReplies, AdminRequest, AdminReply>;

}  // namespace lockstep
