// Encodings of protocol/byzantine/durability.h.
#include <algorithm>

#include "core/codec.h"
#include "core/wire.h"
#include "protocol/byzantine/durability.h"

namespace lockstep::byzantine {
namespace {

template <size_t N>
void put_fixed(Writer& w, const std::array<uint8_t, N>& bytes) {
  w.bytes(bytes);
}

template <size_t N>
std::array<uint8_t, N> get_fixed(Reader& r) {
  std::array<uint8_t, N> out{};
  std::span<const uint8_t> view = r.bytes_view(N);
  if (view.size() != N) {
    r.fail();
    return out;
  }
  std::copy(view.begin(), view.end(), out.begin());
  return out;
}

void put_certificate(Writer& w, const Certificate& c) {
  w.varint(c.position_us);
  put_fixed(w, c.order_hash);
  put_fixed(w, c.snapshot_digest);
  w.varint(c.signatures.size());
  for (const auto& [replica, signature] : c.signatures) {
    w.varint(replica.value);
    put_fixed(w, signature);
  }
}

Certificate get_certificate(Reader& r) {
  Certificate c;
  c.position_us = r.varint();
  c.order_hash = get_fixed<sizeof(Digest)>(r);
  c.snapshot_digest = get_fixed<sizeof(Digest)>(r);
  const uint64_t n = r.count(1 + sizeof(Signature));
  for (uint64_t i = 0; i < n && r.ok(); ++i) {
    const uint64_t replica = r.varint();
    if (replica > UINT32_MAX) r.fail();
    c.signatures.emplace_back(ReplicaId{static_cast<uint32_t>(replica)},
                              get_fixed<sizeof(Signature)>(r));
  }
  return c;
}

void put_batches(Writer& w, std::span<const Proposal> batches) {
  w.varint(batches.size());
  for (const Proposal& p : batches)
    w.bytes(encode_proposal(p));
}

std::vector<Proposal> get_batches(Reader& r) {
  std::vector<Proposal> batches;
  const uint64_t n = r.count(1);
  for (uint64_t i = 0; i < n && r.ok(); ++i) {
    std::optional<Proposal> p = decode_proposal(r.bytes_view());
    if (!p) {
      r.fail();
      break;
    }
    batches.push_back(std::move(*p));
  }
  return batches;
}

template <typename T>
std::optional<T> finished(Reader& r, T value) {
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return value;
}

}  // namespace

Bytes encode_certificate(const Certificate& certificate) {
  Bytes out;
  Writer w(out);
  put_certificate(w, certificate);
  return out;
}

std::optional<Certificate> decode_certificate(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  Certificate c = get_certificate(r);
  return finished(r, std::move(c));
}

Bytes encode_claim(const Claim& claim) {
  Bytes out;
  Writer w(out);
  w.varint(claim.start_us);
  put_certificate(w, claim.certificate);
  w.varint(claim.excused.size());
  for (ReplicaId r : claim.excused)
    w.varint(r.value);
  w.varint(claim.round);
  return out;
}

std::optional<Claim> decode_claim(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  Claim claim;
  claim.start_us = r.varint();
  claim.certificate = get_certificate(r);
  const uint64_t n = r.count(1);
  for (uint64_t i = 0; i < n && r.ok(); ++i) {
    const uint64_t replica = r.varint();
    if (replica > UINT32_MAX) r.fail();
    claim.excused.push_back(ReplicaId{static_cast<uint32_t>(replica)});
  }
  claim.round = r.varint();
  return finished(r, std::move(claim));
}

Bytes encode_proposal(const Proposal& proposal) {
  Bytes out;
  encode_replica_message(SignedProposal{proposal, {}}, out);
  return out;
}

std::optional<Proposal> decode_proposal(std::span<const uint8_t> bytes) {
  auto decoded = decode_replica_message(bytes);
  auto* message = std::get_if<ReplicaMessage>(&decoded);
  if (message == nullptr) return std::nullopt;
  auto* signed_proposal = std::get_if<SignedProposal>(message);
  if (signed_proposal == nullptr) return std::nullopt;
  return std::move(signed_proposal->proposal);
}

Bytes encode_base_and_batches(const Certificate& base, std::span<const Proposal> batches) {
  Bytes out;
  Writer w(out);
  put_certificate(w, base);
  put_batches(w, batches);
  return out;
}

std::optional<BaseAndBatches> decode_base_and_batches(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  BaseAndBatches state;
  state.base = get_certificate(r);
  state.batches = get_batches(r);
  return finished(r, std::move(state));
}

Bytes encode_durable_state(const DurableState& state) {
  Bytes out;
  Writer w(out);
  put_certificate(w, state.base_and_batches.base);
  put_batches(w, state.base_and_batches.batches);
  put_certificate(w, state.best);
  w.varint(state.claimed_round ? *state.claimed_round + 1 : 0);
  return out;
}

std::optional<DurableState> decode_durable_state(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  DurableState state;
  state.base_and_batches.base = get_certificate(r);
  state.base_and_batches.batches = get_batches(r);
  state.best = get_certificate(r);
  const uint64_t claimed = r.varint();
  if (claimed != 0) state.claimed_round = claimed - 1;
  return finished(r, std::move(state));
}

}  // namespace lockstep::byzantine
