// Keys, signed requests and proposals for tests that drive the byzantine core by hand: up to
// five replicas (t = 1 with three, t = 2 with five) and one client principal.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "crypto/signing.h"
#include "protocol/byzantine/core.h"

namespace lockstep::byzantine::testing {

constexpr uint64_t kDeltaUs = 10'000;
constexpr uint64_t kEpsilonUs = 2'000;
constexpr uint64_t kSlotUs = 100;
constexpr uint64_t kD = kDeltaUs + kEpsilonUs;
constexpr uint32_t kPrincipal = 7;
constexpr uint8_t kKeys = 5;

inline std::array<uint8_t, 32> seed_of(uint8_t n) {
  std::array<uint8_t, 32> seed{};
  seed.fill(n);
  return seed;
}

inline Now at(uint64_t us) {
  return Now{us * 1000, us};
}

inline std::vector<std::string> commands_of(const std::vector<OrderedEntry>& entries) {
  std::vector<std::string> out;
  for (const OrderedEntry& e : entries)
    out.push_back(to_string(e.request.command));
  return out;
}

// Up to five replicas (t = 1 with three, t = 2 with five), their keys, one client principal.
class ByzantineFixture : public ::testing::Test {
 protected:
  ByzantineFixture() {
    for (uint8_t r = 0; r < kKeys; ++r) {
      keys_.push_back(crypto::derive_key_pair(crypto::Scheme::kEd25519, seed_of(r + 1)));
      signers_.push_back(crypto::make_signer(crypto::Scheme::kEd25519, keys_.back()));
    }
    client_keys_ = crypto::derive_key_pair(crypto::Scheme::kEd25519, seed_of(99));
    client_signer_ = crypto::make_signer(crypto::Scheme::kEd25519, client_keys_);
    for (uint32_t n : {3u, 5u}) {
      crypto::KeyDirectory directory;
      for (uint32_t r = 0; r < n; ++r)
        directory.replicas.push_back(keys_[r].public_key);
      directory.clients.emplace(kPrincipal, client_keys_.public_key);
      verifiers_.push_back(crypto::make_verifier(crypto::Scheme::kEd25519, directory));
    }
  }

  Options options_for(uint32_t self, uint32_t n = 3) const {
    Options o;
    o.self = ReplicaId{self};
    o.replica_count = n;
    o.t = (n - 1) / 2;
    o.delta_us = kDeltaUs;
    o.epsilon_us = kEpsilonUs;
    o.slot_us = kSlotUs;
    o.signer = signers_[self].get();
    o.verifier = verifiers_[n == 3 ? 0 : 1].get();
    return o;
  }

  // Last local time at which a chain of m signatures is accepted for instance τ; for m = t+1 it
  // is also the decision time (the instance is decided at any later local time).
  static uint64_t end_of_round(uint64_t tau, uint64_t m) { return tau + kSlotUs + m * kD; }

  ClientRequest request(uint32_t session, uint64_t sequence, std::string_view command) const {
    ClientRequest r{
        client_id_of(kPrincipal, session), Sequence{sequence}, Sequence{1}, to_bytes(command), {}};
    crypto::sign_request(*client_signer_, r);
    return r;
  }

  uint32_t session_owned_by(const Core& core, uint32_t owner) const {
    for (uint32_t s = 1;; ++s) {
      if (core.owner_of(client_id_of(kPrincipal, s)).value == owner) return s;
    }
  }

  SignedProposal signed_by_origin(uint32_t origin, uint64_t timestamp_us,
                                  std::vector<ClientRequest> requests) const {
    SignedProposal m{Proposal{ReplicaId{origin}, timestamp_us, std::move(requests), {}}, {}};
    endorse(m, origin);
    return m;
  }

  void endorse(SignedProposal& m, uint32_t signer) const {
    const Digest d = crypto::proposal_digest(m.proposal);
    m.chain.push_back(Endorsement{ReplicaId{signer},
                                  signers_[signer]->sign(crypto::endorsement_signing_bytes(d))});
  }

  std::vector<crypto::KeyPair> keys_;
  std::vector<std::unique_ptr<crypto::Signer>> signers_;
  crypto::KeyPair client_keys_;
  std::unique_ptr<crypto::Signer> client_signer_;
  std::vector<std::unique_ptr<crypto::Verifier>> verifiers_;
};

}  // namespace lockstep::byzantine::testing
