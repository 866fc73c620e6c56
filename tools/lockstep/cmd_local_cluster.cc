// `lockstep local-cluster --replicas N --dir D [--base-port P]`: a whole failstop cluster on
// loopback, in the foreground. Writes D/cluster.toml, starts N `lockstep replica` children
// logging to D/replica-<id>.log, and forwards SIGINT/SIGTERM to them, waiting for them to exit.
#include <signal.h>
#include <sys/wait.h>

#include <cstring>
#include <iostream>

#include "command.h"
#include "runtime/local_cluster.h"

namespace lockstep::tool {
namespace {

struct LocalClusterArgs {
  uint32_t replicas = 3;
  std::string dir;
  uint16_t base_port = 0;
  std::string log_level = "info";
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
  options.replicas = args.replicas;
  options.dir = args.dir;
  options.base_port = args.base_port;
  options.log_level = args.log_level;
  try {
    runtime::LocalCluster cluster(options);
    cluster.start_all();
    cluster.wait_until_listening();
    std::cout << "cluster of " << args.replicas << " replicas (failstop, t = " << cluster.config().t
              << ")\n";
    std::cout << "config: " << cluster.config_path().string() << "\n";
    for (uint32_t i = 0; i < args.replicas; ++i) {
      std::cout << "replica " << i << ": "
                << net::format_address(cluster.config().replicas[i].address) << ", pid "
                << cluster.pid(ReplicaId{i}) << ", log " << cluster.log_path(ReplicaId{i}).string()
                << "\n";
    }
    std::cout << "try: lockstep kv --config " << cluster.config_path().string()
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
      for (uint32_t i = 0; i < args.replicas; ++i) {
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
      app.add_option("--replicas", args->replicas, "number of replicas (t+1)")
          ->check(CLI::Range(1, 33));
      app.add_option("--dir", args->dir, "directory for cluster.toml and the logs")->required();
      app.add_option("--base-port", args->base_port,
                     "replica i listens on base-port + i (default: free ports)");
      app.add_option("--log-level", args->log_level, "the replicas' log level");
      return [args] { return run_local_cluster(*args); };
    });

}  // namespace
}  // namespace lockstep::tool
