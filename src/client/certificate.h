// Reply certificates (byzantine mode): checking one against a cluster's public keys, and the
// text file `lockstep verify-reply` reads.
//
// A certificate says "these replicas each signed a batch of replies that contains this reply":
// every proof carries the digests of its replica's whole signed batch (crypto/signing.h,
// reply_batch_signing_bytes), so it can be re-checked offline without the other replies. With
// t+1 proofs from distinct replicas, at least one correct replica produced the output.
//
// File format (JSON; digests, signatures and the result in lowercase hex):
//
//   {
//     "client": 30064771077,          // ClientId, a number
//     "sequence": 1,
//     "status": "ok",                 // "ok", "busy" or "not_serving"
//     "result_hex": "76616c7565",
//     "proofs": [
//       {"replica": 0, "index": 2, "batch_digests": ["<64 hex>", ...], "signature": "<128 hex>"},
//       ...
//     ]
//   }
//
// The reply's `replica` field is not stored: each proof's replica is put into the reply before
// its digest is checked, since a reply's digest names the replica that sent it.
#pragma once

#include <cstdint>
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

// True when `certificate` holds at least `quorum` valid proofs from distinct replicas and no
// invalid one (a certificate with a forged part is rejected as a whole: it is evidence, and
// evidence with a forgery in it is not to be trusted). Otherwise false, with the reason in `why`
// (may be null).
bool verify_certificate(const ReplyCertificate& certificate, const crypto::Verifier& verifier,
                        uint32_t quorum, std::string* why);

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
