// `lockstep replica --config cluster.toml --id N [--key FILE]`: runs one replica in the
// foreground until SIGTERM/SIGINT (exit 0) or until the others remove it from the membership
// (exit 3). With a [storage] data_dir it first recovers from <data_dir>/replica-<id>, and exits
// 4 when that directory is damaged or cannot be written. Byzantine mode needs --key, the replica's
// key file (its public half must be the one the cluster file lists for this id).
//
// `--join` (failstop): a replica without a state of its own (no data_dir, or an empty one: a new
// machine, a wiped disk) asks the running cluster to add it and loads a member's state by state
// transfer, instead of starting as a founding member of view 0. A listed replica that is not a
// member yet (a spare, or one removed earlier) is added only after `lockstep admin add-replica N`;
// a member whose disk was wiped is removed and added back by itself. With a state on disk the flag
// is ignored (the replica recovers it).
//
// `--join` (byzantine): a replica restarted without its state (a wiped disk, or a cluster without
// durable storage) takes part in the protocol at once, executes nothing and serves no client
// until it has loaded the snapshot of a checkpoint that t+1 replicas vouch for, then executes the
// rest (docs/DESIGN.md §11.7). Without durable storage, restart a byzantine replica with --join,
// always: without it, it starts from an empty state, diverges, and counts as one of the t faulty
// replicas. With durable storage ([storage] sync = "always") a restart recovers from the disk and
// the flag is ignored: it catches up from the live replicas, or recovers with all of them after a
// whole-cluster crash (§11.8).
//
// `--recover-without R,...` (byzantine, durable): a whole-cluster recovery goes on without these
// replicas' claims (docs/DESIGN.md §11.8). It needs a claim from every replica otherwise, since
// the only copy of an acknowledged write may be on any honest replica's disk; so rule out only a
// replica that is gone for good or faulty, and give every replica the same list.
//
// `--misbehave wrong-output|silent` (hidden from --help) makes the replica faulty on purpose, for
// the byzantine tests and the demo: see runtime/replica_server.h, Misbehaviour.
#include <spdlog/spdlog.h>

#include <csignal>
#include <iostream>

#include "command.h"
#include "crypto/crypto.h"
#include "net/event_loop.h"
#include "net/logging.h"
#include "runtime/config.h"
#include "runtime/replica_server.h"

namespace lockstep::tool {
namespace {

struct ReplicaArgs {
  std::string config_path;
  uint32_t id = 0;
  std::string log_level = "info";
  std::string key_path;
  std::string misbehave = "none";
  bool join = false;
  std::vector<uint32_t> recover_without;
};

int run_replica(const ReplicaArgs& args) {
  net::init_logging("replica " + std::to_string(args.id), args.log_level);
  runtime::ClusterConfig config;
  try {
    config = runtime::load_config(args.config_path);
  } catch (const runtime::ConfigError& error) {
    std::cerr << error.what() << "\n";
    return 2;
  }
  runtime::ReplicaServerOptions options;
  const std::optional<runtime::Misbehaviour> misbehave =
      runtime::parse_misbehaviour(args.misbehave);
  if (!misbehave) {
    std::cerr << "--misbehave: expected none, wrong-output or silent, got \"" << args.misbehave
              << "\"\n";
    return 2;
  }
  options.misbehave = *misbehave;
  options.join = args.join;
  for (uint32_t r : args.recover_without) {
    if (r >= config.replicas.size()) {
      std::cerr << "--recover-without: replica " << r << " is not in the cluster file\n";
      return 2;
    }
    options.recover_without.push_back(ReplicaId{r});
  }
  if (config.mode == runtime::Mode::kByzantine) {
    if (args.key_path.empty()) {
      std::cerr << args.config_path
                << ": byzantine mode: give this replica's key file with --key FILE\n";
      return 2;
    }
    try {
      options.keys = crypto::read_key_file(args.key_path);
    } catch (const std::exception& error) {
      std::cerr << error.what() << "\n";
      return 2;
    }
  } else if (!args.key_path.empty()) {
    std::cerr << args.config_path << ": --key is for byzantine clusters; this one is failstop\n";
    return 2;
  }
  try {
    net::EventLoop loop;
    runtime::ReplicaServer server(loop, std::move(config), ReplicaId{args.id}, std::move(options));
    // Signals are taken through the loop (signalfd), so shutdown runs on the loop thread.
    loop.watch_signal(SIGTERM, [&] { server.stop(); });
    loop.watch_signal(SIGINT, [&] { server.stop(); });
    return server.run();
  } catch (const runtime::ReplicaStorageError& error) {
    // Its own exit status: a supervisor must not simply restart a replica whose disk is damaged.
    spdlog::critical("{}", error.what());
    return runtime::kExitStorageFailed;
  } catch (const std::exception& error) {
    spdlog::critical("{}", error.what());
    return 2;
  }
}

LOCKSTEP_COMMAND("replica", "Run one replica of a cluster in the foreground",
                 [](CLI::App& app) -> std::function<int()> {
                   auto args = std::make_shared<ReplicaArgs>();
                   app.add_option("--config", args->config_path, "cluster TOML file")
                       ->required()
                       ->check(CLI::ExistingFile);
                   app.add_option("--id", args->id, "this replica's id in the file")->required();
                   app.add_option("--log-level", args->log_level,
                                  "trace, debug, info, warn, error (LOCKSTEP_LOG overrides)");
                   app.add_option("--key", args->key_path,
                                  "this replica's key file (byzantine mode)")
                       ->check(CLI::ExistingFile);
                   app.add_flag("--join", args->join,
                                "failstop: without a state on disk, join the running cluster by "
                                "state transfer instead of starting as a founding member; "
                                "byzantine: restarted without its state, catch up from a "
                                "checkpoint t+1 replicas vouch for");
                   app.add_option("--recover-without", args->recover_without,
                                  "byzantine, durable: after a whole-cluster crash, recover "
                                  "without these replicas' claims (comma-separated ids; the "
                                  "same list on every replica; see docs/DESIGN.md §11.8)")
                       ->delimiter(',');
                   // For tests and the demo only: an empty group keeps it out of --help.
                   app.add_option("--misbehave", args->misbehave,
                                  "none, wrong-output or silent (tests only)")
                       ->group("");
                   return [args] { return run_replica(*args); };
                 });

}  // namespace
}  // namespace lockstep::tool
