// `lockstep demo`: a whole local cluster as separate processes, a narrated workload with a
// replica killed (SIGKILL) halfway, and the checks that show nothing was lost: every acknowledged
// append is in the final state, the history is linearizable, and the survivors' state digests
// are equal. Exits non-zero if any check fails; stops everything it started.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "check/linearizability.h"
#include "command.h"
#include "net/event_loop.h"
#include "runtime/local_cluster.h"
#include "workload/verify.h"
#include "workload/workload.h"

namespace lockstep::tool {
namespace {

struct DemoArgs {
  uint32_t replicas = 3;
  uint32_t clients = 8;
  uint32_t keys = 200;
  double duration_s = 8;
  std::string history;
  std::string dir;
  bool keep = false;
};

void say(const char* format, auto... args) {
  std::printf(format, args...);
  std::printf("\n");
  std::fflush(stdout);
}

int run_demo(const DemoArgs& args) {
  bool all_ok = true;
  std::filesystem::path dir = args.dir;
  if (dir.empty()) {
    char pattern[] = "/tmp/lockstep-demo-XXXXXX";
    if (!::mkdtemp(pattern)) {
      std::perror("lockstep demo: mkdtemp");
      return 1;
    }
    dir = pattern;
  }
  const uint32_t t = args.replicas - 1;
  say("== lockstep demo: a failstop cluster of %u replicas survives t = %u failures ==",
      args.replicas, t);
  runtime::LocalClusterOptions options;
  options.replicas = args.replicas;
  options.dir = dir;
  options.timeouts.failure_timeout_ms = 300;
  runtime::LocalCluster cluster(options);
  cluster.start_all();
  cluster.wait_until_listening();
  for (const runtime::ReplicaConfig& replica : cluster.config().replicas) {
    say("  replica %u  pid %d  listening on %s  (log: %s)", replica.id.value,
        static_cast<int>(cluster.pid(replica.id)), net::format_address(replica.address).c_str(),
        cluster.log_path(replica.id).c_str());
  }
  say("  cluster file: %s", cluster.config_path().c_str());

  const ReplicaId victim{args.replicas - 1};
  say("");
  say("== %u clients run gets, appends and puts on %u keys for %.0f s; halfway, replica %u is "
      "killed with SIGKILL ==",
      args.clients, args.keys, args.duration_s, victim.value);
  say("   (the survivors notice its silence after %llu ms, agree on the last of its requests "
      "that will ever run, and carry on)",
      static_cast<unsigned long long>(options.timeouts.failure_timeout_ms));
  workload::Options load;
  load.client = cluster.client_options();
  load.clients = args.clients;
  load.keys = args.keys;
  load.duration_s = args.duration_s;
  // Mostly appends that no put overwrites, so that the check below covers many acknowledged
  // writes; values stay small because the appended tokens are short.
  load.get_percent = 50;
  load.append_percent = 40;
  load.midway = [&] {
    say("  >>> SIGKILL replica %u (pid %d) <<<", victim.value,
        static_cast<int>(cluster.pid(victim)));
    cluster.kill(victim);
  };
  workload::Report report = workload::run(load);
  say("");
  std::printf("%s", workload::format_report(report, args.clients).c_str());
  if (report.completed == 0) all_ok = false;

  say("");
  say("== checks ==");
  std::vector<std::string> keys;
  for (uint32_t k = 0; k < args.keys; ++k)
    keys.push_back(workload::key_name(k, load.key_bytes));
  std::vector<check::Operation> history = report.history;
  const workload::FinalState final_state =
      workload::read_final_state(cluster.client_options(), keys, history);
  for (const std::string& error : final_state.errors)
    say("  final read failed: %s", error.c_str());
  if (!final_state.errors.empty()) all_ok = false;

  const workload::AppendAudit audit = workload::audit_appends(history, final_state.values);
  say("  acknowledged appends no later put could overwrite: %zu, present exactly once: %zu  %s",
      audit.checked, audit.checked - audit.lost.size(), audit.lost.empty() ? "ok" : "LOST WRITES");
  for (const std::string& lost : audit.lost)
    say("    lost: %s", lost.c_str());
  if (!audit.lost.empty()) all_ok = false;

  const check::CheckResult verdict = check::check_linearizability(history);
  say("  linearizability of %zu operations: %s", history.size(),
      std::string(check::verdict_name(verdict.verdict)).c_str());
  if (verdict.verdict != check::Verdict::kLinearizable) {
    all_ok = false;
    if (verdict.window) std::printf("%s", check::format_window(*verdict.window, history).c_str());
  }

  // Survivors must hold identical state once they have executed the same requests; with no
  // more client traffic they converge within a few heartbeats.
  std::vector<std::pair<uint32_t, net::Address>> survivors;
  for (const runtime::ReplicaConfig& replica : cluster.config().replicas) {
    if (replica.id != victim) survivors.emplace_back(replica.id.value, replica.address);
  }
  const std::map<uint32_t, StatusReply> statuses = workload::converged_statuses(survivors);
  for (const runtime::ReplicaConfig& replica : cluster.config().replicas) {
    auto status = statuses.find(replica.id.value);
    if (replica.id == victim) {
      say("  replica %u: killed", replica.id.value);
    } else if (status == statuses.end()) {
      say("  replica %u: DID NOT ANSWER", replica.id.value);
    } else {
      say("  replica %u: view %llu, %zu members, executed %llu, state digest %016llx",
          replica.id.value, static_cast<unsigned long long>(status->second.view.value),
          status->second.members.size(), static_cast<unsigned long long>(status->second.executed),
          static_cast<unsigned long long>(status->second.digest));
    }
  }
  const bool identical = statuses.size() == survivors.size() && workload::digests_equal(statuses);
  say("  survivors' states identical: %s", identical ? "yes" : "NO");
  if (!identical) all_ok = false;

  if (!args.history.empty()) {
    if (auto error = check::write_history_file(args.history, history)) {
      say("  writing the history failed: %s", error->c_str());
      all_ok = false;
    } else {
      say("  history: %zu operations in %s", history.size(), args.history.c_str());
    }
  }
  cluster.stop_all();
  if (!args.keep && args.dir.empty()) std::filesystem::remove_all(dir);
  say("");
  say(all_ok ? "demo: every check passed" : "demo: SOME CHECKS FAILED");
  return all_ok ? 0 : 1;
}

LOCKSTEP_COMMAND(
    "demo", "Run a local cluster, kill a replica halfway, show nothing was lost",
    [](CLI::App& app) {
      auto args = std::make_shared<DemoArgs>();
      app.add_option("--replicas", args->replicas, "replicas (t = replicas - 1)")
          ->check(CLI::Range(2u, 9u));
      app.add_option("--clients", args->clients, "concurrent clients")
          ->check(CLI::Range(1u, 1024u));
      app.add_option("--keys", args->keys, "distinct keys")->check(CLI::Range(1u, 100000u));
      app.add_option("--duration", args->duration_s, "seconds of load")
          ->check(CLI::Range(1.0, 3600.0));
      app.add_option("--history", args->history, "also write the history here");
      app.add_option("--dir", args->dir, "keep the cluster's files here");
      app.add_flag("--keep", args->keep, "keep the temporary directory");
      return [args] {
        try {
          return run_demo(*args);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "lockstep demo: %s\n", e.what());
          return 1;
        }
      };
    });

}  // namespace
}  // namespace lockstep::tool
