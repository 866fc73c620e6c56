// crypto/signing.h. Each signed or digested string starts with its domain tag, written as a
// length-prefixed string so that no tag can be a prefix of another's encoding, then the fields as
// wire varints and length-prefixed byte strings (core/wire.h): the encoding is injective, so two
// different messages never sign or digest the same bytes.
#include "crypto/signing.h"

#include <string_view>

#include "core/wire.h"

namespace lockstep::crypto {
namespace {

constexpr std::string_view kRequestTag = "lockstep/request/v1";
constexpr std::string_view kProposalTag = "lockstep/proposal/v1";
constexpr std::string_view kEndorseTag = "lockstep/endorse/v1";
constexpr std::string_view kReplyTag = "lockstep/reply/v1";
constexpr std::string_view kRepliesTag = "lockstep/replies/v1";
constexpr std::string_view kCheckpointTag = "lockstep/checkpoint/v1";
constexpr std::string_view kPositionTag = "lockstep/position/v1";
constexpr std::string_view kOrderHashTag = "lockstep/order-hash/v1";

void put_request_fields(Writer& w, const ClientRequest& request) {
  w.string(kRequestTag);
  w.varint(request.client.value);
  w.varint(request.sequence.value);
  w.varint(request.acked_below.value);
  w.bytes(request.command);
}

void put_raw(Bytes& out, std::span<const uint8_t> bytes) {
  out.insert(out.end(), bytes.begin(), bytes.end());
}

}  // namespace

Bytes request_signing_bytes(const ClientRequest& request) {
  Bytes out;
  out.reserve(kRequestTag.size() + 32 + request.command.size());
  Writer w(out);
  put_request_fields(w, request);
  return out;
}

Digest request_digest(const ClientRequest& request) {
  Bytes out;
  out.reserve(kRequestTag.size() + 32 + request.command.size() + request.signature.size());
  Writer w(out);
  put_request_fields(w, request);
  w.bytes(request.signature);
  return digest(out);
}

Digest proposal_digest(const Proposal& proposal) {
  Bytes out;
  out.reserve(kProposalTag.size() + 24 + proposal.requests.size() * sizeof(Digest));
  Writer w(out);
  w.string(kProposalTag);
  w.varint(proposal.origin.value);
  w.varint(proposal.timestamp_us);
  w.varint(proposal.requests.size());
  for (const ClientRequest& request : proposal.requests)
    put_raw(out, request_digest(request));
  w.bytes(proposal.claim);
  return digest(out);
}

Bytes endorsement_signing_bytes(const Digest& proposal_digest) {
  Bytes out;
  out.reserve(kEndorseTag.size() + 1 + proposal_digest.size());
  Writer w(out);
  w.string(kEndorseTag);
  put_raw(out, proposal_digest);
  return out;
}

Bytes checkpoint_vote_signing_bytes(ReplicaId replica, uint64_t boundary_us,
                                    const Digest& state_digest) {
  Bytes out;
  Writer w(out);
  w.string(kCheckpointTag);
  w.varint(replica.value);
  w.varint(boundary_us);
  put_raw(out, state_digest);
  return out;
}

Digest position_digest(const Digest& order_hash, const Digest& snapshot_digest) {
  Bytes out;
  Writer w(out);
  w.string(kPositionTag);
  put_raw(out, order_hash);
  put_raw(out, snapshot_digest);
  return digest(out);
}

Digest extend_order_hash(const Digest& order_hash, const Digest& proposal_digest) {
  Bytes out;
  Writer w(out);
  w.string(kOrderHashTag);
  put_raw(out, order_hash);
  put_raw(out, proposal_digest);
  return digest(out);
}

Digest reply_digest(const ClientReply& reply) {
  Bytes out;
  out.reserve(kReplyTag.size() + 32 + reply.result.size());
  Writer w(out);
  w.string(kReplyTag);
  w.varint(reply.client.value);
  w.varint(reply.sequence.value);
  w.varint(reply.replica.value);
  w.u8(static_cast<uint8_t>(reply.status));
  w.bytes(reply.result);
  w.varint(reply.epoch);
  return digest(out);
}

Bytes reply_batch_signing_bytes(ReplicaId replica, std::span<const Digest> reply_digests) {
  Bytes out;
  out.reserve(kRepliesTag.size() + 16 + reply_digests.size() * sizeof(Digest));
  Writer w(out);
  w.string(kRepliesTag);
  w.varint(replica.value);
  w.varint(reply_digests.size());
  for (const Digest& d : reply_digests)
    put_raw(out, d);
  return out;
}

namespace {

std::vector<Digest> reply_digests_of(const std::vector<ClientReply>& replies) {
  std::vector<Digest> digests;
  digests.reserve(replies.size());
  for (const ClientReply& reply : replies)
    digests.push_back(reply_digest(reply));
  return digests;
}

}  // namespace

SignedReplies sign_replies(const Signer& signer, ReplicaId replica,
                           std::vector<ClientReply> replies) {
  SignedReplies batch;
  batch.replica = replica;
  batch.replies = std::move(replies);
  batch.signature =
      signer.sign(reply_batch_signing_bytes(replica, reply_digests_of(batch.replies)));
  return batch;
}

bool verify_replies(const Verifier& verifier, const SignedReplies& batch,
                    std::vector<Digest>* digests) {
  // A replica signs only its own replies: one that names another replica is a forgery attempt
  // (it would count twice towards a client's t+1).
  for (const ClientReply& reply : batch.replies) {
    if (reply.replica != batch.replica) return false;
  }
  std::vector<Digest> computed = reply_digests_of(batch.replies);
  if (!verifier.verify_replica(batch.replica, reply_batch_signing_bytes(batch.replica, computed),
                               batch.signature)) {
    return false;
  }
  if (digests != nullptr) *digests = std::move(computed);
  return true;
}

void sign_request(const Signer& signer, ClientRequest& request) {
  const Signature signature = signer.sign(request_signing_bytes(request));
  request.signature.assign(signature.begin(), signature.end());
}

bool verify_request(const Verifier& verifier, const ClientRequest& request) {
  if (request.signature.size() != sizeof(Signature)) return false;
  Signature signature{};
  std::copy(request.signature.begin(), request.signature.end(), signature.begin());
  return verifier.verify_client(principal_of(request.client), request_signing_bytes(request),
                                signature);
}

}  // namespace lockstep::crypto
