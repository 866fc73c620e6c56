// `lockstep local-cluster --replicas N --dir D [--base-port P]`: a whole failstop cluster on
// loopback, in the foreground. Writes D/cluster.toml, starts N `lockstep replica` children
// logging to D/replica-<id>.log, and forwards SIGINT/SIGTERM to them, waiting for them to exit.
//
// `--mode byzantine --t T` runs 2T+1 replicas instead, with fresh Ed25519 keys in
// D/replica-<id>.key and one client principal's key in D/client-1.key (for `lockstep kv|workload
// --key`).
//
// `--data` makes the replicas durable (either mode): cluster.toml gets `[storage] data_dir =
// D/data` and each replica keeps its log and checkpoints in D/data/replica-<id>, so a replica
// killed and started again (`lockstep replica --config D/cluster.toml --id N`) recovers from its
// disk.
// `--sync always|batch-interval|none` picks the sync policy (see runtime/config.h for what each
// risks) and `--checkpoint-entries N` how often checkpoints are taken.
//
// `--spares K` lists K more replicas with `member = false` (ids N..N+K-1) and starts them with
// --join: they wait, serving nothing, until `lockstep admin --config D/cluster.toml add-replica
// ID` lets one in; it then loads a member's state and serves. A byzantine cluster that is not
// durable also gets the administrator's key in D/admin.key, which that command then needs
// (`--key D/admin.key`, docs/DESIGN.md §11.9).
#include <signal.h>
#include <sys/wait.h>

#include <cstring>
#include <iostream>

#include "command.h"
#include "runtime/local_cluster.h"
#include "storage/wal.h"

namespace lockstep::tool {
namespace {

struct LocalClusterArgs {
  std::string mode = "failstop";
  uint32_t t = 0;  // 0: from --replicas
  uint64_t delta_ms = 0;
  uint64_t epsilon_ms = 0;
  uint32_t replicas = 0;  // 0: from --t, or 3
  std::string dir;
  uint16_t base_port = 0;
  std::string log_level = "info";
  bool data = false;
  std::string sync = "always";
  uint64_t checkpoint_entries = 0;  // 0: the default
  uint32_t spares = 0;
};

int run_local_cluster(const LocalClusterArgs& args) {
  // Blocked before the children exist, and taken with sigtimedwait below: the simplest way for
  // a process with nothing else to do to wait for either a signal or a child's exit. Children
  // start with an empty mask (spawn_process).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGCHLD);
  sigprocmask(SIG_BLOCK, &signals, nullptr);

  runtime::LocalClusterOptions options;
  options.mode = args.mode == "byzantine" ? runtime::Mode::kByzantine : runtime::Mode::kFailstop;
  options.replicas = args.replicas != 0 ? args.replicas : 3;
  if (args.t != 0) {
    const uint32_t needed = runtime::ClusterConfig::replicas_needed(options.mode, args.t);
    if (args.replicas != 0 && args.replicas != needed) {
      std::cerr << "local-cluster: " << args.mode << " mode with --t " << args.t << " needs "
                << needed << " replicas, not --replicas " << args.replicas << "\n";
      return 2;
    }
    options.replicas = needed;
  }
  if (args.delta_ms != 0) options.byzantine.delta_ms = args.delta_ms;
  if (args.epsilon_ms != 0) options.byzantine.epsilon_ms = args.epsilon_ms;
  options.dir = args.dir;
  options.base_port = args.base_port;
  options.log_level = args.log_level;
  if (!args.data && (args.sync != "always" || args.checkpoint_entries != 0)) {
    std::cerr << "local-cluster: --sync and --checkpoint-entries need --data\n";
    return 2;
  }
  options.spares = args.spares;
  if (args.data) {
    options.storage.data_dir = "data";  // under --dir
    options.storage.sync = storage::parse_sync_policy(args.sync).value();
    if (args.checkpoint_entries != 0) options.storage.checkpoint_entries = args.checkpoint_entries;
  }
  try {
    runtime::LocalCluster cluster(options);
    cluster.start_all();
    cluster.wait_until_listening();
    const bool byzantine = options.mode == runtime::Mode::kByzantine;
    std::cout << "cluster of " << options.replicas << " replicas (" << args.mode
              << ", t = " << cluster.config().t << ")";
    if (options.spares != 0) std::cout << " and " << options.spares << " spares";
    std::cout << "\n";
    std::cout << "config: " << cluster.config_path().string() << "\n";
    if (args.data) {
      std::cout << "data: " << cluster.config().storage.data_dir << " (sync " << args.sync << ")\n";
    }
    if (byzantine) {
      std::cout << "delta " << options.byzantine.delta_ms << " ms, epsilon "
                << options.byzantine.epsilon_ms << " ms; client principal "
                << runtime::kLocalClusterPrincipal << " key: " << cluster.client_key_path().string()
                << "\n";
      if (cluster.has_administrator()) {
        std::cout << "administrator key (signs membership changes): "
                  << cluster.admin_key_path().string() << "\n";
      }
    }
    const uint32_t listed = cluster.replica_count();
    for (uint32_t i = 0; i < listed; ++i) {
      std::cout << "replica " << i << ": "
                << net::format_address(cluster.config().replicas[i].address) << ", pid "
                << cluster.pid(ReplicaId{i}) << ", log " << cluster.log_path(ReplicaId{i}).string()
                << (cluster.is_spare(ReplicaId{i}) ? " (spare, waiting to be added)" : "") << "\n";
    }
    if (options.spares != 0) {
      std::cout << "add a spare: lockstep admin --config " << cluster.config_path().string()
                << (byzantine && cluster.has_administrator()
                        ? " --key " + cluster.admin_key_path().string()
                        : std::string())
                << " add-replica " << options.replicas << "\n";
    }
    std::cout << "try: lockstep kv --config " << cluster.config_path().string()
              << (byzantine ? " --key " + cluster.client_key_path().string() : std::string())
              << " put greeting hello\n";
    std::cout << "Ctrl-C stops the cluster" << std::endl;

    for (;;) {
      siginfo_t info{};
      timespec wait_at_most{1, 0};
      int signal_number = sigtimedwait(&signals, &info, &wait_at_most);
      if (signal_number == SIGINT || signal_number == SIGTERM) {
        std::cout << "stopping the replicas (" << strsignal(signal_number) << ")" << std::endl;
        std::vector<std::optional<int>> statuses = cluster.stop_all();
        for (uint32_t i = 0; i < statuses.size(); ++i) {
          if (statuses[i]) {
            std::cout << "replica " << i << " " << runtime::describe_wait_status(*statuses[i])
                      << "\n";
          }
        }
        return 0;
      }
      // SIGCHLD or the periodic wake-up: report replicas that exited on their own.
      size_t alive = 0;
      for (uint32_t i = 0; i < listed; ++i) {
        const ReplicaId id{i};
        std::optional<int> before = cluster.last_status(id);
        if (cluster.running(id)) {
          ++alive;
        } else if (cluster.last_status(id) && cluster.last_status(id) != before) {
          std::cout << "replica " << i << " "
                    << runtime::describe_wait_status(*cluster.last_status(id)) << "; see "
                    << cluster.log_path(id).string() << std::endl;
        }
      }
      if (alive == 0) {
        std::cout << "every replica has exited" << std::endl;
        return 1;
      }
    }
  } catch (const std::exception& error) {
    std::cerr << "local-cluster: " << error.what() << "\n";
    return 1;
  }
}

LOCKSTEP_COMMAND(
    "local-cluster", "Run a whole cluster on loopback in the foreground",
    [](CLI::App& app) -> std::function<int()> {
      auto args = std::make_shared<LocalClusterArgs>();
      app.add_option("--mode", args->mode, "failstop (t+1 replicas) or byzantine (2t+1)")
          ->check(CLI::IsMember({"failstop", "byzantine"}));
      app.add_option("--t", args->t, "faults tolerated; sets the replica count for the mode")
          ->check(CLI::Range(1, 32));
      app.add_option("--replicas", args->replicas,
                     "number of replicas (default 3; failstop t+1, byzantine 2t+1)")
          ->check(CLI::Range(1, 65));
      app.add_option("--delta-ms", args->delta_ms, "byzantine: delivery bound (default 10)")
          ->check(CLI::Range(1, 60000));
      app.add_option("--epsilon-ms", args->epsilon_ms, "byzantine: clock skew bound (default 2)")
          ->check(CLI::Range(1, 60000));
      app.add_option("--dir", args->dir, "directory for cluster.toml and the logs")->required();
      app.add_option("--base-port", args->base_port,
                     "replica i listens on base-port + i (default: free ports)");
      app.add_option("--log-level", args->log_level, "the replicas' log level");
      app.add_option("--spares", args->spares,
                     "also list this many spare replicas (member = false), started with "
                     "--join, for `lockstep admin add-replica`")
          ->check(CLI::Range(0, 32));
      app.add_flag("--data", args->data,
                   "keep each replica's state on disk under DIR/data (durable with --sync always)");
      app.add_option("--sync", args->sync, "with --data: always (default), batch-interval, none")
          ->check(CLI::IsMember({"always", "batch-interval", "none"}));
      app.add_option("--checkpoint-entries", args->checkpoint_entries,
                     "with --data: executed entries between checkpoints (default 100000)")
          ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
      return [args] { return run_local_cluster(*args); };
    });

}  // namespace
}  // namespace lockstep::tool
