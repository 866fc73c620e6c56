// Signatures and digests for the byzantine mode, behind two small interfaces so that the protocol
// core, the client and the simulator never call libsodium directly:
//
//   Signer    holds one principal's secret key and signs byte strings;
//   Verifier  holds every public key of a cluster (replicas by ReplicaId, client principals by
//             number) and checks signatures against them.
//
// Two schemes implement them. `Ed25519` (libsodium, RFC 8032) is what replicas and clients run.
// `SimScheme` is for the deterministic simulator only: a keyed BLAKE2b MAC whose "public key" is
// a name for the secret the Verifier keeps, so that simulated runs cost ~0.2 µs per signature
// instead of 13/36 µs. It is unforgeable for code that does not hold the secret, which is the
// property the simulator needs (Byzantine hooks are handed only the faulty replicas' Signers);
// it is not a public-key scheme and never leaves the simulator.
//
// Both schemes are deterministic: the same key and message give the same signature, so a core
// that signs stays a pure function of its inputs.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/types.h"

namespace lockstep::crypto {

using PublicKey = std::array<uint8_t, 32>;
using SecretKey = std::array<uint8_t, 64>;  // libsodium layout: 32-byte seed then public key

struct KeyPair {
  PublicKey public_key{};
  SecretKey secret_key{};
};

enum class Scheme : uint8_t { kEd25519, kSim };

// A 32-byte BLAKE2b digest of `bytes`.
Digest digest(std::span<const uint8_t> bytes);

// A key pair derived from a 32-byte seed (deterministic), and a fresh random one (keygen only).
KeyPair derive_key_pair(Scheme scheme, const std::array<uint8_t, 32>& seed);
KeyPair generate_key_pair();  // Ed25519, from the OS's randomness

class Signer {
 public:
  virtual ~Signer() = default;
  virtual Signature sign(std::span<const uint8_t> message) const = 0;
  virtual const PublicKey& public_key() const = 0;
};

std::unique_ptr<Signer> make_signer(Scheme scheme, const KeyPair& keys);

class Verifier {
 public:
  virtual ~Verifier() = default;
  // False for an unknown signer as well as for a wrong signature.
  virtual bool verify_replica(ReplicaId replica, std::span<const uint8_t> message,
                              const Signature& signature) const = 0;
  virtual bool verify_client(uint32_t principal, std::span<const uint8_t> message,
                             const Signature& signature) const = 0;
  virtual bool knows_client(uint32_t principal) const = 0;
  virtual uint32_t replica_count() const = 0;
};

struct KeyDirectory {
  std::vector<PublicKey> replicas;        // indexed by ReplicaId
  std::map<uint32_t, PublicKey> clients;  // by principal number
};

// `secrets` is used by the kSim scheme only (public key -> key pair of every principal); Ed25519
// ignores it.
std::unique_ptr<Verifier> make_verifier(Scheme scheme, KeyDirectory directory,
                                        std::vector<KeyPair> sim_secrets = {});

// ---- text forms, for key files and the cluster file ------------------------------------------

std::string to_hex(std::span<const uint8_t> bytes);
// Exactly 2*N hex digits (either case); nullopt otherwise.
template <size_t N>
std::optional<std::array<uint8_t, N>> array_from_hex(std::string_view hex);
std::optional<Bytes> bytes_from_hex(std::string_view hex);

template <size_t N>
std::optional<std::array<uint8_t, N>> array_from_hex(std::string_view hex) {
  if (hex.size() != 2 * N) return std::nullopt;
  std::optional<Bytes> bytes = bytes_from_hex(hex);
  if (!bytes) return std::nullopt;
  std::array<uint8_t, N> out{};
  std::copy(bytes->begin(), bytes->end(), out.begin());
  return out;
}

// A key file is two lines, `public <64 hex>` and `secret <128 hex>`, written with mode 0600.
// Throws std::runtime_error naming the file on I/O errors and malformed content.
// Key files hold Ed25519 keys: read_key_file also rejects a file whose public key is not the one
// its secret key embeds (a line pasted from another file).
void write_key_file(const std::string& path, const KeyPair& keys);
KeyPair read_key_file(const std::string& path);

}  // namespace lockstep::crypto
