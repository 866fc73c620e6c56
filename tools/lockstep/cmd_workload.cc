// `lockstep workload`: concurrent KV clients against a running cluster, with a history file for
// any linearizability checker and throughput/latency figures. Byzantine clusters need a client
// principal's key (`--key FILE`, `--principal N`, default 1); the report then also says, per
// replica, how many of its replies matched the accepted outputs and how many differed.
#include <cstdio>

#include "check/linearizability.h"
#include "command.h"
#include "runtime/config.h"
#include "runtime/credentials.h"
#include "workload/workload.h"

namespace lockstep::tool {
namespace {

struct WorkloadArgs {
  std::string config;
  std::string history;
  uint32_t clients = 8;
  uint32_t keys = 100;
  uint32_t key_bytes = 16;
  uint32_t value_bytes = 100;
  double duration_s = 10;
  uint32_t get_percent = 50;
  uint32_t append_percent = 25;
  uint64_t seed = 1;
  bool check = false;
  std::string key_path;
  uint32_t principal = runtime::kDefaultClientPrincipal;
};

int run_workload(const WorkloadArgs& args) {
  runtime::ClusterConfig config;
  try {
    config = runtime::load_config(args.config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep workload: %s\n", e.what());
    return 2;
  }
  const bool byzantine = config.mode == runtime::Mode::kByzantine;
  runtime::ClientCredentials credentials;
  workload::Options options;
  try {
    if (byzantine && args.key_path.empty()) {
      throw std::runtime_error(args.config +
                               ": a byzantine cluster takes only signed requests: give a client "
                               "key with --key FILE (and --principal N if not 1)");
    }
    if (!byzantine && !args.key_path.empty()) {
      throw std::runtime_error(args.config + ": --key is for byzantine clusters");
    }
    if (byzantine) {
      credentials = runtime::load_client_credentials(config, args.key_path, args.principal);
    }
    options.client = runtime::network_client_options(config, byzantine ? &credentials : nullptr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep workload: %s\n", e.what());
    return 2;
  }
  options.clients = args.clients;
  options.keys = args.keys;
  options.key_bytes = args.key_bytes;
  options.value_bytes = args.value_bytes;
  options.duration_s = args.duration_s;
  options.get_percent = args.get_percent;
  options.append_percent = args.append_percent;
  options.seed = args.seed;
  workload::Report report;
  try {
    std::fprintf(stderr, "workload: %u clients, %u keys, %.1f s against %u replicas (%s)\n",
                 args.clients, args.keys, args.duration_s, config.replica_count(),
                 std::string(runtime::mode_name(config.mode)).c_str());
    report = workload::run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep workload: %s\n", e.what());
    return 1;
  }
  std::printf("%s", workload::format_report(report, args.clients).c_str());
  std::printf("%s", workload::format_votes(report).c_str());
  if (!args.history.empty()) {
    if (auto error = check::write_history_file(args.history, report.history)) {
      std::fprintf(stderr, "lockstep workload: writing %s: %s\n", args.history.c_str(),
                   error->c_str());
      return 1;
    }
    std::printf("history: %zu operations written to %s\n", report.history.size(),
                args.history.c_str());
  }
  if (args.check) {
    const check::CheckResult result = check::check_linearizability(report.history);
    std::printf("linearizability: %s\n", std::string(check::verdict_name(result.verdict)).c_str());
    if (result.verdict != check::Verdict::kLinearizable) {
      if (result.window) {
        std::printf("%s", check::format_window(*result.window, report.history).c_str());
      }
      return 1;
    }
  }
  return 0;
}

LOCKSTEP_COMMAND(
    "workload", "Run concurrent KV clients against a cluster; record a history", [](CLI::App& app) {
      auto args = std::make_shared<WorkloadArgs>();
      app.add_option("--config", args->config, "cluster file")->required();
      app.add_option("--clients", args->clients, "concurrent sessions")
          ->check(CLI::Range(1u, 100000u));
      app.add_option("--keys", args->keys, "distinct keys")->check(CLI::Range(1u, 10000000u));
      app.add_option("--duration", args->duration_s, "seconds of load")
          ->check(CLI::Range(0.1, 86400.0));
      app.add_option("--history", args->history, "write the history (JSON lines)");
      app.add_option("--key-bytes", args->key_bytes, "key length")->check(CLI::Range(10u, 4096u));
      app.add_option("--value-bytes", args->value_bytes, "put value length")
          ->check(CLI::Range(16u, 1u << 20));
      app.add_option("--get-percent", args->get_percent, "share of gets")
          ->check(CLI::Range(0u, 100u));
      app.add_option("--append-percent", args->append_percent, "share of appends")
          ->check(CLI::Range(0u, 100u));
      app.add_option("--seed", args->seed, "random seed of the operation mix");
      app.add_flag("--check", args->check, "check the history when done");
      app.add_option("--key", args->key_path, "client principal's key file (byzantine mode)")
          ->check(CLI::ExistingFile);
      app.add_option("--principal", args->principal, "client principal of --key (default 1)")
          ->check(CLI::Range(1u, 4294967295u));
      return [args] { return run_workload(*args); };
    });

}  // namespace
}  // namespace lockstep::tool
