// `lockstep demo`: a whole local cluster as separate processes, a narrated workload with a
// replica killed (SIGKILL) halfway, and the checks that show nothing was lost: every acknowledged
// append is in the final state, the history is linearizable, and the survivors' state digests
// are equal. Exits non-zero if any check fails; stops everything it started.
//
// `lockstep demo --mode byzantine`: 3 replicas (t = 1), one of which lies about every output
// (started with the test-only `--misbehave wrong-output`). Clients accept an output only when
// t+1 replicas signed the same one, so they outvote the liar; the demo names it from the
// dissenting replies, saves one reply certificate and checks it offline, then runs the same
// history, append and digest checks among the honest replicas.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

#include "check/linearizability.h"
#include "client/certificate.h"
#include "command.h"
#include "crypto/crypto.h"
#include "net/event_loop.h"
#include "runtime/local_cluster.h"
#include "workload/verify.h"
#include "workload/workload.h"

namespace lockstep::tool {
namespace {

struct DemoArgs {
  std::string mode = "failstop";
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

// The checks every demo ends with: read every key back into the history, no acknowledged append
// lost, the history linearizable, and the replicas not in `excluded` (killed, or lying) holding
// identical state. Prints each verdict; true when all pass.
bool check_outcome(runtime::LocalCluster& cluster, const workload::Report& report,
                   const workload::Options& load, const std::set<ReplicaId>& excluded,
                   const DemoArgs& args, const char* excluded_note, const char* group_name) {
  bool all_ok = true;
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
    if (!excluded.contains(replica.id)) {
      survivors.emplace_back(replica.id.value, replica.address);
    }
  }
  const std::map<uint32_t, StatusReply> statuses = workload::converged_statuses(survivors);
  for (const runtime::ReplicaConfig& replica : cluster.config().replicas) {
    auto status = statuses.find(replica.id.value);
    if (excluded.contains(replica.id)) {
      say("  replica %u: %s", replica.id.value, excluded_note);
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
  say("  %s states identical: %s", group_name, identical ? "yes" : "NO");
  if (!identical) all_ok = false;

  if (!args.history.empty()) {
    if (auto error = check::write_history_file(args.history, history)) {
      say("  writing the history failed: %s", error->c_str());
      all_ok = false;
    } else {
      say("  history: %zu operations in %s", history.size(), args.history.c_str());
    }
  }
  return all_ok;
}

// --dir, or a fresh temporary directory.
std::filesystem::path demo_dir(const DemoArgs& args) {
  if (!args.dir.empty()) return args.dir;
  char pattern[] = "/tmp/lockstep-demo-XXXXXX";
  if (!::mkdtemp(pattern)) {
    throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  }
  return pattern;
}

void print_cluster(runtime::LocalCluster& cluster) {
  for (const runtime::ReplicaConfig& replica : cluster.config().replicas) {
    say("  replica %u  pid %d  listening on %s  (log: %s)", replica.id.value,
        static_cast<int>(cluster.pid(replica.id)), net::format_address(replica.address).c_str(),
        cluster.log_path(replica.id).c_str());
  }
  say("  cluster file: %s", cluster.config_path().c_str());
}

int run_failstop_demo(const DemoArgs& args) {
  bool all_ok = true;
  const std::filesystem::path dir = demo_dir(args);
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
  print_cluster(cluster);

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
  if (!check_outcome(cluster, report, load, {victim}, args, "killed", "survivors'")) {
    all_ok = false;
  }
  cluster.stop_all();
  if (!args.keep && args.dir.empty()) std::filesystem::remove_all(dir);
  say("");
  say(all_ok ? "demo: every check passed" : "demo: SOME CHECKS FAILED");
  return all_ok ? 0 : 1;
}

int run_byzantine_demo(const DemoArgs& args) {
  bool all_ok = true;
  const std::filesystem::path dir = demo_dir(args);
  const uint32_t t = (args.replicas - 1) / 2;
  const ReplicaId liar{args.replicas - 1};
  say("== lockstep demo: a byzantine cluster of %u replicas outvotes t = %u replica that lies ==",
      args.replicas, t);
  runtime::LocalClusterOptions options;
  options.mode = runtime::Mode::kByzantine;
  options.replicas = args.replicas;
  options.dir = dir;
  options.misbehave[liar.value] = runtime::Misbehaviour::kWrongOutput;
  runtime::LocalCluster cluster(options);
  cluster.start_all();
  cluster.wait_until_listening();
  print_cluster(cluster);
  say("  client key (principal %u): %s", runtime::kLocalClusterPrincipal,
      cluster.client_key_path().c_str());
  say("  replica %u runs with --misbehave wrong-output: it signs a wrong result (\"...!lie\") for "
      "every request",
      liar.value);
  say("  (replicas agree on the order by Dolev-Strong broadcast with signed messages, delta %llu "
      "ms, epsilon %llu ms; each request executes %llu ms after it was proposed)",
      static_cast<unsigned long long>(options.byzantine.delta_ms),
      static_cast<unsigned long long>(options.byzantine.epsilon_ms),
      static_cast<unsigned long long>((t + 1) *
                                      (options.byzantine.delta_ms + options.byzantine.epsilon_ms)));

  say("");
  say("== %u clients run gets, appends and puts on %u keys for %.0f s; each accepts an output "
      "only when %u replicas signed the same one ==",
      args.clients, args.keys, args.duration_s, t + 1);
  workload::Options load;
  load.client = cluster.client_options();
  load.clients = args.clients;
  load.keys = args.keys;
  load.duration_s = args.duration_s;
  load.get_percent = 50;
  load.append_percent = 40;
  workload::Report report = workload::run(load);
  say("");
  std::printf("%s", workload::format_report(report, args.clients).c_str());
  if (report.completed == 0) all_ok = false;

  say("");
  say("== the vote ==");
  std::printf("%s", workload::format_votes(report).c_str());
  // Who lied, by the clients' evidence alone: replicas whose signed reply differed from the
  // accepted output.
  std::set<ReplicaId> liars;
  for (const auto& [replica, count] : report.dissented) {
    if (count > 0) liars.insert(ReplicaId{replica});
  }
  for (ReplicaId named : liars) {
    const uint64_t lied = report.dissented.at(named.value);
    const auto agreed = report.agreed.find(named.value);
    const uint64_t sent = lied + (agreed == report.agreed.end() ? 0 : agreed->second);
    say("  replica %u lied on %llu of the %llu replies of it that arrived before the vote was over",
        named.value, static_cast<unsigned long long>(lied), static_cast<unsigned long long>(sent));
  }
  const bool liar_named = liars == std::set<ReplicaId>{liar};
  say("  the clients' dissent names exactly replica %u: %s", liar.value, liar_named ? "yes" : "NO");
  if (!liar_named) all_ok = false;
  const bool all_certified =
      report.certified == report.completed && report.fewest_certificate_proofs >= t + 1;
  say("  every accepted output had %u matching signatures: %s (%llu of %llu certified, fewest "
      "signers %llu)",
      t + 1, all_certified ? "yes" : "NO", static_cast<unsigned long long>(report.certified),
      static_cast<unsigned long long>(report.completed),
      static_cast<unsigned long long>(report.fewest_certificate_proofs));
  if (!all_certified) all_ok = false;

  // One certificate to take away: anyone with the cluster file can check it offline.
  if (report.sample_certificate) {
    const std::filesystem::path file = dir / "reply-certificate.json";
    write_certificate_file(file.string(), *report.sample_certificate);
    const auto verifier =
        crypto::make_verifier(crypto::Scheme::kEd25519, cluster.config().key_directory());
    std::string why;
    const bool valid =
        verify_certificate(read_certificate_file(file.string()), *verifier, t + 1, &why);
    say("  a reply certificate (client %llu, request %llu) saved to %s: %s",
        static_cast<unsigned long long>(report.sample_certificate->reply.client.value),
        static_cast<unsigned long long>(report.sample_certificate->reply.sequence.value),
        file.c_str(), valid ? "valid" : ("NOT VALID: " + why).c_str());
    if (!valid) all_ok = false;
    say("  check it yourself: lockstep verify-reply --config %s --certificate %s",
        cluster.config_path().c_str(), file.c_str());
  } else {
    say("  no reply certificate to save: NO");
    all_ok = false;
  }

  say("");
  say("== checks ==");
  if (!check_outcome(cluster, report, load, {liar}, args, "the liar: not compared",
                     "honest replicas'")) {
    all_ok = false;
  }
  cluster.stop_all();
  // The certificate and the cluster file stay for the verify-reply command above, unless the
  // demo failed to make them.
  say("");
  say("  files kept in %s (rm -r it when done)", dir.c_str());
  say(all_ok ? "demo: every check passed" : "demo: SOME CHECKS FAILED");
  return all_ok ? 0 : 1;
}

int run_demo(const DemoArgs& args) {
  return args.mode == "byzantine" ? run_byzantine_demo(args) : run_failstop_demo(args);
}

LOCKSTEP_COMMAND(
    "demo",
    "Run a local cluster, kill a replica halfway (failstop) or outvote a lying one (byzantine), "
    "show nothing was lost",
    [](CLI::App& app) {
      auto args = std::make_shared<DemoArgs>();
      app.add_option("--mode", args->mode, "failstop (default) or byzantine")
          ->check(CLI::IsMember({"failstop", "byzantine"}));
      app.add_option(
             "--replicas", args->replicas,
             "replicas (failstop: t = replicas - 1; byzantine: odd, t = (replicas - 1) / 2)")
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
