// Running a whole cluster on one machine: free loopback ports, a generated cluster.toml, and one
// `lockstep replica` child process per replica, each logging to its own file. Used by
// `lockstep local-cluster`, the demo, workload tools and the integration tests.
//
// Children never outlive their creator: each is started with PR_SET_PDEATHSIG = SIGKILL (the
// kernel kills it when the parent dies, even by SIGKILL), in its own process group (so a
// terminal's Ctrl-C reaches only the parent, which forwards it), and LocalCluster's destructor
// kills and reaps whatever is still running.
//
// Durability (either mode): with options.storage.data_dir set, cluster.toml gets a [storage] table
// and each replica keeps its log and checkpoints in <data_dir>/replica-<id>; restart(id) then
// brings a killed replica back from its disk: as the same member (failstop, within
// failure_timeout_ms), or recovering until it has caught up (byzantine; when every replica was
// killed, start_all() brings them back and they recover together). Durable means sync =
// "always"; options.byzantine.certify_interval_ms then sets how often the byzantine replicas
// certify what they synced.
//
// Reconfiguration (failstop): options.spares adds replicas listed with `member = false` after the
// members (ids replicas..replicas+spares-1). start_all() starts them too, with --join: they ask
// to be added and wait, serving nothing, until `lockstep admin add-replica N` (runtime/admin.h)
// lets them in. start_joining(id) starts any replica with --join, and wipe(id) deletes a stopped
// replica's data directory (a lost disk), so that kill, wipe, start_joining is a rejoin by state
// transfer.
//
// Byzantine mode: the constructor also generates an Ed25519 key pair per replica
// (dir/replica-N.key, passed to each replica with --key) and one for client principal 1
// (dir/client-1.key), lists the public keys in cluster.toml, and client_options() signs with the
// client key. Unless the cluster is durable (membership changes are not built for that yet) or
// options.administrator is false, it also makes the administrator's key (dir/admin.key, listed
// as byzantine.admin_public_key) for `lockstep admin --key` (docs/DESIGN.md §11.9); spares are
// then listed and started (with --join) as in failstop mode.
#pragma once

#include <sys/types.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "client/client.h"
#include "runtime/config.h"
#include "runtime/credentials.h"
#include "runtime/replica_server.h"

namespace lockstep::runtime {

// `count` distinct TCP ports on `host` that were free a moment ago: each is found by binding
// port 0, and all the sockets stay open until every port is chosen so none repeats. (Another
// process may still take one before it is used: acceptable for local clusters and tests.)
std::vector<uint16_t> pick_free_ports(size_t count, const std::string& host = "127.0.0.1");

// The running executable (/proc/self/exe), to start `lockstep replica` children from the tool.
std::filesystem::path self_executable();

// Starts `argv` (argv[0] is the program path) with stdin from /dev/null and stdout and stderr
// appended to `log_path`. The child gets an empty signal mask, its own process group and
// PR_SET_PDEATHSIG = SIGKILL. Throws std::runtime_error when it cannot start.
pid_t spawn_process(const std::vector<std::string>& argv, const std::filesystem::path& log_path);

// Waits up to `timeout_ms` for `pid` to exit and reaps it. Returns its wait status, or nullopt
// if it is still running.
std::optional<int> wait_process(pid_t pid, uint64_t timeout_ms);

// "exited with code 3", "killed by signal 9 (Killed)".
std::string describe_wait_status(int status);

struct LocalClusterOptions {
  Mode mode = Mode::kFailstop;
  // failstop: t = replicas - 1; byzantine: replicas must be odd, t = (replicas - 1) / 2.
  uint32_t replicas = 3;
  // Spare replicas listed after the members with `member = false` (not in view 0 / epoch 0).
  uint32_t spares = 0;
  // Byzantine, not durable: make dir/admin.key and name it in cluster.toml.
  bool administrator = true;
  std::filesystem::path dir;       // created if missing; holds cluster.toml and the logs
  uint16_t base_port = 0;          // replicas listen on base_port + id; 0 picks free ports
  std::filesystem::path binary;    // the lockstep executable; empty means self_executable()
  std::string log_level = "info";  // passed to the replicas
  TimeoutConfig timeouts;
  ClientConfig client;
  ByzantineConfig byzantine;  // byzantine mode's Δ, ε, checkpoint and certify intervals
  // Replicas that start_all() / start(id) run with a test-only fault (byzantine mode).
  std::map<uint32_t, Misbehaviour> misbehave;
  // [storage] of cluster.toml (either mode); an empty data_dir keeps nothing on disk. A relative
  // data_dir is relative to `dir` (it is written to cluster.toml as an absolute path).
  StorageConfig storage;
};

// The client principal a byzantine LocalCluster creates a key for.
inline constexpr uint32_t kLocalClusterPrincipal = kDefaultClientPrincipal;

class LocalCluster {
 public:
  // Picks the ports and writes dir/cluster.toml; starts nothing yet.
  explicit LocalCluster(LocalClusterOptions options);
  // Kills (SIGKILL) and reaps every replica still running.
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  // Starts every replica that is not running; spares with --join.
  void start_all();
  // Starts every member of view 0 that is not running (not the spares).
  void start_members();
  // Starts one replica with --join (failstop): without a state on disk it asks the running
  // cluster to add it and loads a member's state.
  void start_joining(ReplicaId id);
  // Deletes replica `id`'s data directory (no-op without a data_dir). The replica must not be
  // running (throws std::runtime_error otherwise).
  void wipe(ReplicaId id);
  // Whether `id` is a spare (listed with member = false).
  bool is_spare(ReplicaId id) const { return !config_.replicas.at(id.value).member; }
  // Every listed replica, members and spares.
  uint32_t replica_count() const { return config_.replica_count(); }
  // Starts (or restarts, after it exited) one replica process, misbehaving as
  // options.misbehave says.
  void start(ReplicaId id);
  // The same with an explicit misbehaviour (byzantine tests and the demo).
  void start(ReplicaId id, Misbehaviour misbehave);
  // The same with --join or not.
  void start(ReplicaId id, Misbehaviour misbehave, bool join);
  // Sends `signal_number` to a running replica (no-op when it is not running).
  void signal(ReplicaId id, int signal_number);
  // SIGKILL and reap: the replica is gone when this returns.
  void kill(ReplicaId id);
  // kill(id) if it is running, then start(id): the same configuration and id, a new process
  // (with a data_dir, recovered from its disk).
  void restart(ReplicaId id);
  // Waits up to `timeout_ms` for the replica to exit; its wait status, or nullopt if running.
  std::optional<int> wait(ReplicaId id, uint64_t timeout_ms);
  // SIGTERM to every running replica, up to `grace_ms` for them to exit, then SIGKILL.
  // Returns each replica's wait status (nullopt for one that was not running).
  std::vector<std::optional<int>> stop_all(uint64_t grace_ms = 5000);

  // True while the process runs (reaps it if it has exited; see last_status).
  bool running(ReplicaId id);
  std::optional<int> last_status(ReplicaId id) const { return replicas_[id.value].last_status; }
  pid_t pid(ReplicaId id) const { return replicas_[id.value].pid; }

  // Waits until every running replica accepts TCP connections. Throws std::runtime_error,
  // quoting the replica's log, when one exits or the timeout passes first.
  void wait_until_listening(uint64_t timeout_ms = 10'000);

  const ClusterConfig& config() const { return config_; }
  const std::filesystem::path& config_path() const { return config_path_; }
  std::filesystem::path log_path(ReplicaId id) const;
  // Where replica `id` keeps its state (empty without a data_dir).
  std::filesystem::path data_path(ReplicaId id) const;
  // The last `lines` lines of a replica's log, for error messages.
  std::string log_tail(ReplicaId id, size_t lines = 20) const;
  // Options for a client of this cluster; in byzantine mode they sign with client-1.key and
  // point into this LocalCluster, which must outlive the clients.
  NetworkClientOptions client_options() const;
  // Byzantine mode: where replica `id`'s key and the client principal's key are.
  std::filesystem::path key_path(ReplicaId id) const;
  std::filesystem::path client_key_path() const;
  // Byzantine mode: the administrator's key file (it exists when has_administrator()).
  std::filesystem::path admin_key_path() const;
  bool has_administrator() const {
    return config_.byzantine && config_.byzantine->admin_public_key.has_value();
  }
  // Byzantine mode: the client principal's signer and the cluster's verifier (null in failstop).
  const ClientCredentials& credentials() const { return credentials_; }

 private:
  struct Child {
    pid_t pid = -1;
    std::optional<int> last_status;
  };

  LocalClusterOptions options_;
  ClusterConfig config_;
  std::filesystem::path config_path_;
  ClientCredentials credentials_;
  std::vector<Child> replicas_;
};

}  // namespace lockstep::runtime
