// `lockstep replica --config cluster.toml --id N`: runs one replica in the foreground until
// SIGTERM/SIGINT (exit 0) or until the others remove it from the membership (exit 3).
#include <spdlog/spdlog.h>

#include <csignal>
#include <iostream>

#include "command.h"
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
  try {
    net::EventLoop loop;
    runtime::ReplicaServer server(loop, std::move(config), ReplicaId{args.id});
    // Signals are taken through the loop (signalfd), so shutdown runs on the loop thread.
    loop.watch_signal(SIGTERM, [&] { server.stop(); });
    loop.watch_signal(SIGINT, [&] { server.stop(); });
    return server.run();
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
                   return [args] { return run_replica(*args); };
                 });

}  // namespace
}  // namespace lockstep::tool
