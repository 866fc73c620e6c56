// What a durable byzantine replica writes down and sends about positions of the order
// (docs/DESIGN.md §11.8): certificates, recovery claims, its log records, and the state it hands a
// replica that recovers. Encodings use the wire codec's varints; decoders never trust the input.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "core/messages.h"
#include "crypto/crypto.h"
#include "crypto/membership.h"

namespace lockstep::byzantine {

// t+1 replicas' signatures on one position of the order: the running hash of every batch below
// it, and (at a checkpoint boundary) the digest of the service snapshot there. One signer at
// least is honest, so this is the honest order up to the position. Position 0 with no signatures
// is the empty order before anything ran (the genesis).
struct Certificate {
  uint64_t position_us = 0;
  Digest order_hash{};
  Digest snapshot_digest{};  // zero where no snapshot was taken
  std::vector<std::pair<ReplicaId, Signature>> signatures;
  bool operator==(const Certificate&) const = default;
};

// A replica recovering from its disk: where its participation started (instances stamped from
// then on it saw whole), the highest certificate it holds, and the replicas the operator ruled
// out of the recovery.
struct Claim {
  uint64_t start_us = 0;
  Certificate certificate;
  std::vector<ReplicaId> excused;  // the operator's ruling it recovers under, ascending
  // Each life of a replica claims in a round above every round an earlier life claimed in (its
  // log says), and adopts any higher round decided; a recovery counts claims of one round only.
  uint64_t round = 0;
};

// Log records of a durable byzantine replica.
enum RecordType : uint8_t {
  kBatchRecord = 1,        // a batch it executed (an encoded Proposal)
  kCertificateRecord = 2,  // a certificate it formed
  kClaimedRecord = 3,      // it is about to send recovery claims of a round (varint)
};

// A state handed to a replica: a base t+1 replicas vouched for and the batches after it, up to
// the position asked for. (StateTransfer.protocol_state; the base's snapshot is the
// StateTransfer's service_snapshot.)
struct BaseAndBatches {
  Certificate base;
  std::vector<Proposal> batches;
};

Bytes encode_certificate(const Certificate& certificate);
Bytes encode_claim(const Claim& claim);
Bytes encode_proposal(const Proposal& proposal);
Bytes encode_base_and_batches(const Certificate& base, std::span<const Proposal> batches);
std::optional<Certificate> decode_certificate(std::span<const uint8_t> bytes);
std::optional<Claim> decode_claim(std::span<const uint8_t> bytes);
std::optional<Proposal> decode_proposal(std::span<const uint8_t> bytes);
std::optional<BaseAndBatches> decode_base_and_batches(std::span<const uint8_t> bytes);
// A checkpoint served to a replica catching up (docs/DESIGN.md §11.7, §11.9): the base and
// batches as above, and the membership schedule in force there (Schedule::encode()), which the
// votes vouch for together with the snapshot. reconfiguration.cc.
Bytes encode_catch_up_state(const Bytes& base_and_batches, const Bytes& schedule);
std::optional<std::pair<Bytes, Bytes>> decode_catch_up_state(std::span<const uint8_t> bytes);
// The snapshot digest a checkpoint vote names: the service snapshot's, and once the membership
// changed, the schedule's with it (docs/DESIGN.md §11.9).
Digest vouched_snapshot_digest(std::span<const uint8_t> snapshot, const Schedule& schedule);

// The core's half of a durable checkpoint: the base, the batches after it, the best certificate
// held, and the highest round it sent recovery claims in (none: never).
struct DurableState {
  BaseAndBatches base_and_batches;
  Certificate best;
  std::optional<uint64_t> claimed_round;
};
Bytes encode_durable_state(const DurableState& state);
std::optional<DurableState> decode_durable_state(std::span<const uint8_t> bytes);

}  // namespace lockstep::byzantine
