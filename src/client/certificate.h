// Reply certificates (byzantine mode): checking one against a cluster's public keys, and the
// text file `lockstep verify-reply` reads.
//
// A certificate says "these replicas each signed a batch of replies that contains this reply":
// every proof carries the digests of its replica's whole signed batch (crypto/signing.h,
// reply_batch_signing_bytes), so it can be re-checked offline without the other replies. With
// proofs from t+1 distinct members of one configuration, at least one correct replica produced
// the output.
//
// File format (JSON; digests, signatures and the result in lowercase hex):
//
//   {
//     "client": 30064771077,          // ClientId, a number
//     "sequence": 1,
//     "status": "ok",                 // "ok", "busy" or "not_serving"
//     "result_hex": "76616c7565",
//     "proofs": [
//       {"replica": 0, "index": 2, "batch_digests": ["<64 hex>", ...], "signature": "<128 hex>",
//        "epoch": 1},                 // the epoch the reply stated; absent means 0
//       ...
//     ],
//     "membership_changes": [         // optional: the administrator's signed changes of every
//       {"client": ..., "sequence": 1, "acked_below": 1,   // epoch after 0 (a byzantine cluster
//        "command_hex": "...", "signature": "<128 hex>"},  // whose membership changed)
//       ...
//     ]
//   }
//
// The reply's `replica` field is not stored: each proof's replica is put into the reply before
// its digest is checked, since a reply's digest names the replica that sent it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "client/core/client_session.h"
#include "crypto/crypto.h"

namespace lockstep {

// Limits on what a certificate file may hold, so a hostile file cannot make the reader allocate
// without bound.
inline constexpr size_t kCertificateProofsMax = 1024;
inline constexpr size_t kCertificateBatchDigestsMax = 1 << 20;
inline constexpr size_t kCertificateFileBytesMax = 256 << 20;
inline constexpr size_t kCertificateChangesMax = 1 << 16;

// True when `certificate` holds enough valid proofs from distinct replicas and no invalid one (a
// certificate with a forged part is rejected as a whole: it is evidence, and evidence with a
// forgery in it is not to be trusted). Otherwise false, with the reason in `why` (may be null).
//
// Enough is counted as the client counts (client/core/client_session.h): the schedule is built
// from the certificate's membership_changes (each signed by the administrator, whose key
// `verifier` must hold as client principal kAdminPrincipal), and some configuration e of it must
// have t_e+1 members among the signers. The epoch each proof states is checked only as part of
// its digest: it does not say which configuration the signer counts for (a correct replica's
// cached reply states its current epoch), and signers of different configurations are never
// added up, since each configuration may hold its own t faulty members. Proofs from replicas
// that are members of no configuration are checked but count for nothing. `quorum` is t+1 of
// epoch 0, whose members are `initial_members` (empty: every replica the verifier knows, right
// for a cluster file without spares).
//
// A certificate's proof of a membership change rests on the administrator's key alone: offline,
// only the administrator's signature and consecutive epochs can be checked, not that the order
// adopted that change (the administrator may have signed two for one epoch, one refused). A live
// client trusts a change only once t+1 members of the epoch before showed it
// (client/core/membership_learner.h); a certificate carries no such vouchers.
bool verify_certificate(const ReplyCertificate& certificate, const crypto::Verifier& verifier,
                        uint32_t quorum, std::string* why,
                        std::span<const ReplicaId> initial_members = {});

// The JSON text of `certificate`, and back. certificate_from_json throws std::runtime_error
// naming `source` and the offending field on malformed input.
std::string certificate_to_json(const ReplyCertificate& certificate);
ReplyCertificate certificate_from_json(std::string_view text, const std::string& source);

// Write (through a temporary file and a rename) and read a certificate file. Throw
// std::runtime_error naming the file on I/O errors and malformed content.
void write_certificate_file(const std::string& path, const ReplyCertificate& certificate);
ReplyCertificate read_certificate_file(const std::string& path);

std::string_view reply_status_name(ReplyStatus status);

}  // namespace lockstep
