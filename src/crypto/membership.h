// Byzantine membership changes signed by an administrator (docs/DESIGN.md §11.9).
//
// The cluster file names an administrator public key; it is the client principal
// kAdminPrincipal. A change is a request of that principal whose command encodes
// {epoch, members, effective_us}: the administrator's request signature is what authorizes it,
// so the signed request itself is the proof anyone (replica, joiner, client) checks. The order
// decides where it executes (τ_c); it takes effect for every instance stamped at or after
// effective_us, if valid there (Schedule::validate): a pure function of the order, so every
// honest replica keeps the same schedule.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/messages.h"
#include "crypto/crypto.h"

namespace lockstep {

// The principal number reserved for the administrator: no client may use it.
inline constexpr uint32_t kAdminPrincipal = 0xFFFF'FFFF;

inline bool from_administrator(const ClientRequest& request) {
  return principal_of(request.client) == kAdminPrincipal;
}

struct ConfigurationChange {
  uint64_t epoch = 0;              // the configuration it starts: the previous one's + 1
  std::vector<ReplicaId> members;  // ascending, each a replica listed in the cluster file
  uint64_t effective_us = 0;       // the first timestamp of the order the change governs
  bool operator==(const ConfigurationChange&) const = default;
};

Bytes encode_configuration_change(const ConfigurationChange& change);
// "epoch K: members [a,b,c] from E us": the output of an accepted change.
std::string describe(const ConfigurationChange& change);
// nullopt unless the bytes are exactly one encoding (members strictly ascending).
std::optional<ConfigurationChange> decode_configuration_change(std::span<const uint8_t> bytes);

// Faults a configuration of `members` replicas tolerates: n ≥ 2t+1.
inline uint32_t faults_tolerated(size_t members) {
  return members == 0 ? 0 : static_cast<uint32_t>((members - 1) / 2);
}

struct Configuration {
  uint64_t epoch = 0;
  uint64_t from_us = 0;  // governs every instance stamped from here to the next one's from_us
  std::vector<ReplicaId> members;
  uint32_t t = 0;
  bool contains(ReplicaId replica) const;
  bool operator==(const Configuration&) const = default;
};

// Every configuration in force from some point of the order on, with the administrator's signed
// request for each one after the first (epoch 0, from the cluster file).
class Schedule {
 public:
  Schedule() = default;
  explicit Schedule(std::vector<ReplicaId> initial_members);

  // The configuration governing timestamp τ.
  const Configuration& at(uint64_t timestamp_us) const;
  const Configuration& latest() const { return configurations_.back(); }
  const std::vector<Configuration>& configurations() const { return configurations_; }
  const std::vector<ClientRequest>& proofs() const { return proofs_; }

  // Why `change`, executed at order time `executed_us`, may not be adopted; nullopt if it may.
  // `listed` is how many replicas the cluster file lists; `margin_us` the time every honest
  // replica needs to have executed it before a window of an instance at effective_us opens;
  // `grid_us` what effective_us must be a multiple of (a checkpoint boundary), 0 for none.
  std::optional<std::string> validate(const ConfigurationChange& change, uint64_t executed_us,
                                      uint32_t listed, uint64_t margin_us, uint64_t grid_us) const;
  // Adds a change validate() accepted, with its proof (the administrator's request).
  void adopt(const ConfigurationChange& change, ClientRequest proof);
  // The configurations up to `last_epoch` (the first ones), with their proofs.
  Schedule truncated(uint64_t last_epoch) const;

  // For clients and joiners: checks each proof's administrator signature and that the epochs
  // follow one another; nullopt if any does not. (Timing validity is the order's to decide: a
  // schedule taken from t+1 replicas' vouched state, or a change an honest replica reported.)
  static std::optional<Schedule> from_proofs(std::vector<ReplicaId> initial_members,
                                             std::vector<ClientRequest> proofs,
                                             const crypto::Verifier& verifier, uint32_t listed);

  Bytes encode() const;  // the proofs, in epoch order (the initial members are configuration)
  Digest digest() const;
  bool operator==(const Schedule&) const = default;

 private:
  std::vector<Configuration> configurations_;
  std::vector<ClientRequest> proofs_;  // proofs_[i] started configurations_[i + 1]
};

// Decodes Schedule::encode() against the initial members; checks every proof as from_proofs.
std::optional<Schedule> decode_schedule(std::span<const uint8_t> bytes,
                                        std::vector<ReplicaId> initial_members,
                                        const crypto::Verifier& verifier, uint32_t listed);

}  // namespace lockstep
