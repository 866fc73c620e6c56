// The cluster configuration file (TOML), shared by every replica and client of one cluster:
//
//   mode = "failstop"            # or "byzantine"
//   t = 1                        # failures tolerated; failstop needs t+1 replicas, byzantine 2t+1
//
//   [[replicas]]                 # one table per replica; ids are 0..n-1, each exactly once
//   id = 0
//   address = "127.0.0.1:7000"   # where it listens, "host:port" ("[::1]:7000" for IPv6)
//   public_key = "<64 hex>"      # byzantine mode only, and required there: its Ed25519 key
//
//   [byzantine]                  # required in byzantine mode, rejected in failstop
//   delta_ms = 10                # Δ: delivery bound between honest replicas, processing included
//   epsilon_ms = 2               # ε: bound on the clock difference between honest replicas
//   relay_timeout_ms = 0         # optional; 0 = 2·(t+1)·(Δ+ε)
//
//   [[clients]]                  # byzantine mode: client principals allowed to sign requests
//   principal = 1                # 1..2^32-1, unique
//   public_key = "<64 hex>"
//
//   [timeouts]                   # failstop timeouts, all optional; the defaults are shown
//   heartbeat_interval_ms = 5    # an idle replica's clock update to the others
//   failure_timeout_ms = 500     # silence after which a replica is declared failed
//   relay_timeout_ms = 50        # a client's copy not seen ordered by then goes to the owner
//
//   [client]                     # optional
//   retry_interval_ms = 200      # an unanswered request is broadcast again after this
//   deadline_ms = 5000           # and given up (outcome unknown) after this
//
// Every error names the file and the field: `cluster.toml: replicas[2].address: expected
// "host:port", got "abc"`. Unknown keys are errors too, so a misspelt timeout is not silently
// replaced by its default.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "client/core/client_session.h"
#include "core/types.h"
#include "crypto/crypto.h"
#include "net/address.h"
#include "protocol/byzantine/core.h"
#include "protocol/failstop/core.h"

namespace lockstep::runtime {

enum class Mode : uint8_t { kFailstop, kByzantine };

std::string_view mode_name(Mode mode);

struct ReplicaConfig {
  ReplicaId id{};
  net::Address address;
  // Byzantine mode: the key its signatures are checked with (present exactly in that mode).
  std::optional<crypto::PublicKey> public_key{};
  bool operator==(const ReplicaConfig&) const = default;
};

// A client principal of a byzantine cluster: requests signed with its key are accepted, from
// sessions whose client ids carry its number (core/types.h, client_id_of).
struct ClientPrincipalConfig {
  uint32_t principal = 0;
  crypto::PublicKey public_key{};
  bool operator==(const ClientPrincipalConfig&) const = default;
};

// The byzantine mode's timing assumptions (docs/DESIGN.md §11). Safety rests on them: a replica
// whose messages take longer than Δ to arrive, or whose clock is off by more than ε, may be
// counted among the t faulty ones.
struct ByzantineConfig {
  uint64_t delta_ms = 10;
  uint64_t epsilon_ms = 2;
  uint64_t relay_timeout_ms = 0;  // 0 = 2·(t+1)·(Δ+ε)
  bool operator==(const ByzantineConfig&) const = default;
};

struct TimeoutConfig {
  uint64_t heartbeat_interval_ms = 5;
  uint64_t failure_timeout_ms = 500;
  uint64_t relay_timeout_ms = 50;
  bool operator==(const TimeoutConfig&) const = default;
};

struct ClientConfig {
  uint64_t retry_interval_ms = 200;
  uint64_t deadline_ms = 5000;
  bool operator==(const ClientConfig&) const = default;
};

// Limits on what a configuration may ask for.
inline constexpr uint32_t kFaultsTolerableMax = 32;
inline constexpr uint64_t kTimeoutMsMax = 24ULL * 3600 * 1000;
inline constexpr size_t kClientPrincipalsMax = 1 << 16;

struct ClusterConfig {
  Mode mode = Mode::kFailstop;
  uint32_t t = 1;
  std::vector<ReplicaConfig> replicas;  // sorted by id: replicas[i].id == i
  TimeoutConfig timeouts;
  ClientConfig client;
  std::optional<ByzantineConfig> byzantine;    // present exactly in byzantine mode
  std::vector<ClientPrincipalConfig> clients;  // byzantine mode; sorted by principal

  // How many replicas `mode` needs to tolerate `t` faults (t+1 or 2t+1).
  static uint32_t replicas_needed(Mode mode, uint32_t t);
  uint32_t replica_count() const { return static_cast<uint32_t>(replicas.size()); }

  // The protocol core's options for replica `self` of this cluster.
  failstop::Options failstop_options(ReplicaId self, uint64_t incarnation) const;
  // The byzantine core's options for replica `self` (byzantine mode only). The signer and
  // verifier are not owned and must outlive the core.
  byzantine::Options byzantine_options(ReplicaId self, const crypto::Signer* signer,
                                       const crypto::Verifier* verifier) const;
  // Every public key of the cluster (byzantine mode only), for crypto::make_verifier.
  crypto::KeyDirectory key_directory() const;
  // The client library's options for this cluster: reply_quorum = t+1 in byzantine mode (the
  // caller sets the signer, see runtime/credentials.h).
  ClientOptions client_options() const;
  std::vector<net::Address> addresses() const;

  bool operator==(const ClusterConfig&) const = default;
};

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses and validates `text`; `source` names the file in error messages. Throws ConfigError.
ClusterConfig parse_config(std::string_view text, const std::string& source);
// Reads and parses a file. Throws ConfigError (also when the file cannot be read).
ClusterConfig load_config(const std::filesystem::path& path);
// Checks a configuration built in code the same way a parsed one is checked. Throws ConfigError.
void validate_config(const ClusterConfig& config, const std::string& source);

// The TOML text of `config`; parse_config(format_config(c)) == c.
std::string format_config(const ClusterConfig& config);
// Writes format_config(config) to `path` (through a temporary file and a rename, so a reader
// never sees half a file). Throws std::runtime_error on I/O errors.
void write_config(const std::filesystem::path& path, const ClusterConfig& config);

}  // namespace lockstep::runtime
