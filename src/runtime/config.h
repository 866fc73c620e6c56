// The cluster configuration file (TOML), shared by every replica and client of one cluster:
//
//   mode = "failstop"            # or "byzantine"
//   t = 1                        # failures tolerated; failstop needs t+1 replicas, byzantine 2t+1
//
//   [[replicas]]                 # one table per replica; ids are 0..n-1, each exactly once
//   id = 0
//   address = "127.0.0.1:7000"   # where it listens, "host:port" ("[::1]:7000" for IPv6)
//   public_key = "<64 hex>"      # byzantine mode only, and required there: its Ed25519 key
//   member = false               # optional, default true. A spare: listed (its address is known
//                                # to clients and peers) but not a member of view 0 (failstop)
//                                # or epoch 0 (byzantine); it becomes one by `lockstep admin
//                                # add-replica N` and `lockstep replica --join` (docs/DESIGN.md
//                                # §12, §11.9). t+1 (failstop) or 2t+1 (byzantine) replicas must
//                                # be members; spares are extra.
//
//   [byzantine]                  # required in byzantine mode, rejected in failstop
//   delta_ms = 10                # Δ: delivery bound between honest replicas, processing included
//   epsilon_ms = 2               # ε: bound on the clock difference between honest replicas
//   relay_timeout_ms = 0         # optional; 0 = 2·(σ + (t+1)·(Δ+ε)), σ = 0.1 ms
//   checkpoint_interval_ms = 1000  # optional: every this much of the order's time each replica
//                                # signs its state's digest (docs/DESIGN.md §11.7), so that one
//                                # restarted without its state (`lockstep replica --join`) can
//                                # load a snapshot t+1 replicas vouch for. At least 4 times the
//                                # decision latency σ + (t+1)·(Δ+ε): a boundary waits for every
//                                # instance below it to be decided, and the snapshot, taken
//                                # right after, is served until the next boundary.
//   certify_interval_ms = 2      # optional; durable clusters only ([storage] with sync =
//                                # "always"): how often each replica signs the running hash of
//                                # the order it has synced to disk. A reply leaves only once t+1
//                                # replicas certified its position, so this adds up to one
//                                # interval to every request's latency. checkpoint_interval_ms
//                                # must be a multiple of it (checked when durable).
//                                # Each replica takes at most Δ/(160 µs·n) client requests (at
//                                # least 8) per event-loop step and answers the rest "busy": the
//                                # mode is safe only while every step ends well within Δ.
//   admin_public_key = "<64 hex>"  # optional: the administrator's Ed25519 key (`lockstep keygen`),
//                                # which signs membership changes (`lockstep admin --key`,
//                                # docs/DESIGN.md §11.9); it is client principal 0xFFFFFFFF, which
//                                # no [[clients]] entry may use. Without it the membership is
//                                # fixed. Not with sync = "always" (not built for durable
//                                # byzantine clusters yet).
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
//   [limits]                     # resource limits, all optional; the defaults are shown
//   session_idle_expiry_ms = 600000    # a session idle this long (in order time) is forgotten
//   sessions_max = 1048576             # beyond it the least recently active session is forgotten
//   pending_requests_max = 100000      # entries held unexecuted; beyond it new requests get busy
//   connections_max = 4096             # accepted connections open at once; more are closed
//   client_output_bytes_max = 8388608  # a client that leaves this much unread is disconnected
//   peer_resend_bytes_max = 268435456  # unacknowledged bytes to one peer before its channel fails
//
//   [storage]                    # durability, both modes (docs/DESIGN.md §10, §11.8); optional
//   data_dir = "data"            # replica N keeps its log and checkpoints in <data_dir>/replica-N;
//                                # relative to this file's directory. Absent: nothing on disk.
//   sync = "always"              # when the log is fdatasynced: "always", "batch-interval", "none"
//   batch_interval_ms = 2        # batch-interval: the longest a record waits for its sync
//   checkpoint_entries = 100000  # a checkpoint after this many executed entries (log truncated)
//   segment_mb = 64              # log segment size, preallocated; every record must fit in one
//
// What each sync policy risks (storage/wal.h, SyncPolicy):
//  - "always": every loop iteration's records are synced before that iteration's messages and
//    replies leave, so nothing anyone has seen depends on a record a crash can lose. Cost: one
//    fdatasync per iteration (amortised over every request of the iteration: group commit). Only
//    this policy makes the replica durable (failstop::Options::durable, and in byzantine mode
//    byzantine::Options::certify_interval_us != 0): a failstop replica restarted from its disk
//    within failure_timeout_ms carries on as the same member; a byzantine one recovers from its
//    disk and catches up with the others (or, after a whole-cluster crash, recovers with all of
//    them: every replica must come back), and no acknowledged write is lost.
//  - "batch-interval": a record is synced at most batch_interval_ms after it was written. A
//    process crash loses nothing (the kernel has the data), but a machine crash or power loss
//    loses up to one interval of records whose effects clients and peers may already have seen.
//  - "none": never synced (segment seals excepted); a machine crash can lose any amount of the
//    log. For tests and benchmarks on throwaway machines only.
// With "batch-interval" and "none" the disk cannot be trusted after a restart, so the replica is
// not durable, exactly as without a data_dir: restarted, a failstop replica counts as failed (the
// others remove it and it halts, §3.8) and a byzantine one must be started with --join. (So that
// the recovered state is never used, the cores today write no log records at all under these two
// policies: they cost nothing and keep nothing.)
//
// Sessions idle longer than session_idle_expiry_ms are forgotten at the same point in the order
// on every replica; a client that retries a request after that may see it executed twice, so
// client deadline_ms must be far below it (it is rejected unless strictly below). The session
// limits are part of the replicated state, so every replica must use the same values: keep them
// in this shared file, not per replica.
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
#include "core/codec.h"
#include "core/types.h"
#include "crypto/crypto.h"
#include "net/acceptor.h"
#include "net/address.h"
#include "protocol/byzantine/core.h"
#include "protocol/failstop/core.h"
#include "replica/replica.h"
#include "storage/wal.h"

namespace lockstep::runtime {

enum class Mode : uint8_t { kFailstop, kByzantine };

std::string_view mode_name(Mode mode);

struct ReplicaConfig {
  ReplicaId id{};
  net::Address address;
  // Byzantine mode: the key its signatures are checked with (present exactly in that mode).
  std::optional<crypto::PublicKey> public_key{};
  // False for a spare: listed, but not a member of view 0 (failstop) or epoch 0 (byzantine).
  bool member = true;
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
  uint64_t relay_timeout_ms = 0;  // 0 = 2·(σ + (t+1)·(Δ+ε)), σ = slot (0.1 ms)
  uint64_t checkpoint_interval_ms = 1000;
  // Durable clusters only (StorageConfig::durable): byzantine::Options::certify_interval_us.
  uint64_t certify_interval_ms = 2;
  // Signs membership changes (client principal kAdminPrincipal); none: the membership is fixed.
  std::optional<crypto::PublicKey> admin_public_key{};
  bool operator==(const ByzantineConfig&) const = default;
};

// checkpoint_interval_ms must be at least this many decision latencies: a catching-up replica
// needs t+1 votes for a boundary, then the snapshot, before the donors move to the next one.
inline constexpr uint64_t kCheckpointIntervalLatencies = 4;

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

// Resource limits (docs/DESIGN.md §8). The defaults are those of ReplicaLimits, ServiceOptions,
// net::AcceptorLimits and net::PeerChannelOptions.
struct LimitsConfig {
  uint64_t session_idle_expiry_ms = 600'000;
  uint64_t sessions_max = 1'048'576;
  uint64_t pending_requests_max = 100'000;
  uint64_t connections_max = 4096;
  uint64_t client_output_bytes_max = 8'388'608;
  uint64_t peer_resend_bytes_max = 268'435'456;
  bool operator==(const LimitsConfig&) const = default;
};

// Where and how a replica keeps its state on disk (the [storage] table), in either mode.
struct StorageConfig {
  // Empty: no durability. load_config makes a relative path absolute against the config file's
  // directory; parse_config keeps it as written (relative to the working directory).
  std::string data_dir;
  storage::SyncPolicy sync = storage::SyncPolicy::kAlways;
  uint64_t batch_interval_ms = 2;
  uint64_t checkpoint_entries = 100'000;
  uint64_t segment_mb = 64;

  bool enabled() const { return !data_dir.empty(); }
  // Whether a restarted replica recovers from its disk (failstop::Options::durable; byzantine:
  // certify_interval_us != 0).
  bool durable() const { return enabled() && sync == storage::SyncPolicy::kAlways; }
  // Replica `id`'s directory: <data_dir>/replica-<id>.
  std::filesystem::path replica_dir(ReplicaId id) const;
  storage::WalOptions wal_options() const;
  bool operator==(const StorageConfig&) const = default;
};

// Limits on what a configuration may ask for.
inline constexpr uint32_t kFaultsTolerableMax = 32;
inline constexpr uint64_t kTimeoutMsMax = 24ULL * 3600 * 1000;
inline constexpr size_t kClientPrincipalsMax = 1 << 16;
// The [limits] ranges. A session expiry of 30 days is already more memory than use; the byte
// limits' minima keep one frame of the largest kind from failing a channel or a client by itself.
inline constexpr uint64_t kSessionIdleExpiryMsMax = 30ULL * 24 * 3600 * 1000;
inline constexpr uint64_t kSessionsMax = uint64_t{1} << 26;
inline constexpr uint64_t kPendingRequestsMax = uint64_t{1} << 24;
inline constexpr uint64_t kConnectionsMax = uint64_t{1} << 20;
inline constexpr uint64_t kClientOutputBytesMin = 64 * 1024;
inline constexpr uint64_t kClientOutputBytesMax = uint64_t{1} << 30;
inline constexpr uint64_t kPeerResendBytesMin = kFrameBytesMax;
inline constexpr uint64_t kPeerResendBytesMax = uint64_t{16} << 30;
// [storage]: a segment of 1 GiB is the log's own maximum (storage::kWalSegmentBytesMax).
inline constexpr uint64_t kSegmentMbMax = storage::kWalSegmentBytesMax >> 20;
inline constexpr uint64_t kCheckpointEntriesMax = uint64_t{1} << 40;

struct ClusterConfig {
  Mode mode = Mode::kFailstop;
  uint32_t t = 1;
  std::vector<ReplicaConfig> replicas;  // sorted by id: replicas[i].id == i
  TimeoutConfig timeouts;
  ClientConfig client;
  std::optional<ByzantineConfig> byzantine;    // present exactly in byzantine mode
  std::vector<ClientPrincipalConfig> clients;  // byzantine mode; sorted by principal
  LimitsConfig limits;
  StorageConfig storage;

  // How many replicas `mode` needs to tolerate `t` faults (t+1 or 2t+1): in failstop mode the
  // members of view 0, spares not counted.
  static uint32_t replicas_needed(Mode mode, uint32_t t);
  // Every listed replica, spares included (the ids are 0..replica_count()-1).
  uint32_t replica_count() const { return static_cast<uint32_t>(replicas.size()); }
  // The members of view 0, ascending: the listed replicas without `member = false`.
  std::vector<ReplicaId> initial_members() const;
  bool has_spares() const { return initial_members().size() != replicas.size(); }

  // The protocol core's options for replica `self` of this cluster (durable when
  // storage.durable(); initial_members set when there are spares, empty otherwise).
  failstop::Options failstop_options(ReplicaId self, uint64_t incarnation) const;
  // The byzantine core's options for replica `self` (byzantine mode only), checkpoints every
  // checkpoint_interval_ms, durable (certify_interval_us = certify_interval_ms) exactly when
  // storage.durable(); join is left false. The signer and verifier are not owned and must
  // outlive the core.
  byzantine::Options byzantine_options(ReplicaId self, const crypto::Signer* signer,
                                       const crypto::Verifier* verifier) const;
  // Byzantine mode: how long after a proposal's timestamp it is decided, σ + (t+1)·(Δ+ε), in µs
  // (byzantine::Core::decision_time_us(0) of a core built from byzantine_options).
  uint64_t byzantine_decision_latency_us() const;
  // Every public key of the cluster (byzantine mode only), for crypto::make_verifier; the
  // administrator's, if any, as client principal kAdminPrincipal.
  crypto::KeyDirectory key_directory() const;
  // The client library's options for this cluster: reply_quorum = t+1 in byzantine mode, and the
  // members of epoch 0 (the caller sets the signer and the verifier that checks membership
  // changes, see runtime/credentials.h).
  ClientOptions client_options() const;
  std::vector<net::Address> addresses() const;
  // The replica's limits (session table and back-pressure) and the listener's (connections).
  ReplicaLimits replica_limits() const;
  net::AcceptorLimits acceptor_limits() const;

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
