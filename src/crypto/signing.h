// What exactly each signature in the byzantine mode covers. Every signed string starts with a
// distinct domain tag, so a signature made for one purpose can never be replayed as another
// (a reply signature as an endorsement, say). Fields are encoded with the wire codec's varints,
// so two different messages never give the same bytes.
#pragma once

#include <span>

#include "core/messages.h"
#include "crypto/crypto.h"

namespace lockstep::crypto {

// "lockstep/request/v1" || client || sequence || acked_below || command. The client signs it.
Bytes request_signing_bytes(const ClientRequest& request);
// Digest of the same bytes plus the signature: names one exact signed request (two requests
// with the same (client, sequence) but different commands have different digests).
Digest request_digest(const ClientRequest& request);

// Digest of "lockstep/proposal/v1" || origin || timestamp || every request's request_digest.
Digest proposal_digest(const Proposal& proposal);
// What an endorsement signs: "lockstep/endorse/v1" || proposal digest. (The signer's id is not
// in it: the chain says who signed, and the Verifier checks under that replica's key.)
Bytes endorsement_signing_bytes(const Digest& proposal_digest);

// What a checkpoint vote signs: "lockstep/checkpoint/v1" || replica || boundary || digest of the
// service snapshot at that boundary.
Bytes checkpoint_vote_signing_bytes(ReplicaId replica, uint64_t boundary_us,
                                    const Digest& state_digest);

// What a replica's vote at a position of the order names (docs/DESIGN.md §11.7, §11.8):
// "lockstep/position/v1" || the running hash of the order below it || the digest of the service
// snapshot there (zero where no snapshot is taken). It is the digest a CheckpointVote signs.
Digest position_digest(const Digest& order_hash, const Digest& snapshot_digest);
// The running hash of the order after one more decided proposal: "lockstep/order-hash/v1" ||
// the hash before || the proposal's digest (which names its origin and timestamp).
Digest extend_order_hash(const Digest& order_hash, const Digest& proposal_digest);

// Digest of one reply: "lockstep/reply/v1" || client || sequence || replica || status || result
// || epoch. The epoch is signed so that a replica cannot have its reply counted against another
// configuration than the one it stated (a removed member claiming an epoch it belonged to).
Digest reply_digest(const ClientReply& reply);
// What a replica signs for a batch of replies: "lockstep/replies/v1" || replica || the replies'
// digests in order. A reply certificate keeps the digests of its batch to re-check it offline.
Bytes reply_batch_signing_bytes(ReplicaId replica, std::span<const Digest> reply_digests);

// Convenience: sign / check a whole SignedReplies.
SignedReplies sign_replies(const Signer& signer, ReplicaId replica,
                           std::vector<ClientReply> replies);
// When it returns true and `digests` is given, *digests holds the replies' digests (computed for
// the check anyway; a client needs them again for its reply proofs).
bool verify_replies(const Verifier& verifier, const SignedReplies& batch,
                    std::vector<Digest>* digests = nullptr);

// Sign / check a client request (fills / checks request.signature).
void sign_request(const Signer& signer, ClientRequest& request);
bool verify_request(const Verifier& verifier, const ClientRequest& request);

}  // namespace lockstep::crypto
