// `lockstep sim`: the deterministic simulator (src/sim). One seed prints a summary of the run
// and, when it fails, the trace of the events before the violation; a range of seeds prints
// progress, pass/fail counts, runs per second and the replay command of every failing seed.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command.h"
#include "sim/byzantine.h"
#include "sim/runner.h"
#include "sim/simulator.h"

namespace lockstep::tool {
namespace {

struct SimCommandOptions {
  std::string mode = "failstop";
  std::optional<uint64_t> seed;
  std::string seeds;
  uint32_t ops = 500;
  std::optional<uint32_t> t;
  std::optional<uint32_t> clients;
  std::optional<uint32_t> byzantine_replicas;
  std::optional<uint32_t> byzantine_clients;
  uint32_t faults_min = 10;
  std::string clocks = "drawn";
  std::string durable = "drawn";
  // Off by default until the protocol passes drawn runs (see src/sim/README.md).
  std::string reconfiguration = "drawn";
  std::string restarts = "drawn";
  std::vector<std::string> planted;
  bool trace = false;
  size_t trace_events = 200;
  unsigned jobs = 1;
  std::optional<double> scale;
  bool in_process = false;
  std::string history;
};

void print_trace(const sim::RunResult& result) {
  std::printf("--- trace: the last %zu events before %s ---\n", result.trace_tail.size(),
              result.passed ? "the end" : "the violation");
  for (const std::string& line : result.trace_tail)
    std::printf("%s\n", line.c_str());
  std::printf("--- end of trace ---\n");
}

int run_one(const SimCommandOptions& cli, sim::SimOptions options) {
  options.seed = *cli.seed;
  options.trace = cli.trace;
  sim::RunResult result =
      cli.in_process ? sim::run_simulation(options) : sim::run_isolated(options);
  if (!result.passed && !options.trace) {
    // Replay the seed with the trace on: the same seed gives the same run, event for event.
    options.trace = true;
    sim::RunResult traced =
        cli.in_process ? sim::run_simulation(options) : sim::run_isolated(options);
    if (traced.violation != result.violation) {
      std::printf("warning: the traced replay ended differently (nondeterminism?)\n");
    }
    result = std::move(traced);
  }
  if (options.trace) print_trace(result);
  std::printf("%s\n", sim::summarize(result).c_str());
  if (!result.passed) {
    std::printf("replay: %s\n", sim::replay_command(options, result.seed).c_str());
    return 1;
  }
  return 0;
}

int run_many(const SimCommandOptions& cli, const sim::SimOptions& options) {
  std::optional<sim::SeedRange> range = sim::parse_seed_range(cli.seeds);
  if (!range) {
    std::fprintf(stderr, "--seeds wants A..B (A <= B) or a single seed, got '%s'\n",
                 cli.seeds.c_str());
    return 2;
  }
  const double scale = cli.scale.value_or(sim::seeds_scale_from_environment());
  const uint64_t count = sim::scale_count(range->count(), scale);
  range->last = range->first + count - 1;
  std::printf("simulating seeds %llu..%llu (%llu runs, scale %.3g) with %u job%s\n",
              static_cast<unsigned long long>(range->first),
              static_cast<unsigned long long>(range->last), static_cast<unsigned long long>(count),
              scale, cli.jobs, cli.jobs == 1 ? "" : "s");
  std::fflush(stdout);

  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  Clock::time_point last_progress = start;
  uint64_t done = 0;
  uint64_t failed = 0;
  uint64_t events = 0;
  uint64_t ops_completed = 0;
  uint64_t fault_episodes = 0;
  uint64_t min_ops = UINT64_MAX;
  uint64_t min_episodes = UINT64_MAX;
  sim::FaultCounts faults{};
  // Byzantine mode: how many runs had faulty replicas / clients, and each behaviour drawn.
  uint64_t runs_with_faulty_replicas = 0;
  uint64_t runs_with_byzantine_clients = 0;
  std::map<std::string, uint64_t> behaviour_runs;
  std::map<uint32_t, uint64_t> runs_by_t;
  uint64_t durable_runs = 0;
  uint64_t reconfiguration_runs = 0;
  uint64_t spare_runs = 0;
  uint64_t state_transfers_loaded = 0;
  uint64_t state_chunks_sent = 0;
  uint64_t restart_runs = 0;
  uint64_t snapshots_refused = 0;
  uint64_t recoveries_completed = 0;
  uint64_t recoveries_with_ruling = 0;
  auto rate = [&](Clock::time_point now) {
    const double seconds = std::chrono::duration<double>(now - start).count();
    return seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  };
  sim::BatchResult batch =
      sim::run_seeds(options, *range, cli.jobs, [&](const sim::RunResult& result) {
        ++done;
        events += result.events;
        ops_completed += result.ops_completed;
        fault_episodes += result.fault_episodes;
        min_ops = std::min(min_ops, result.ops_completed);
        min_episodes = std::min(min_episodes, result.fault_episodes);
        for (size_t k = 0; k < faults.size(); ++k)
          faults[k] += result.faults[k];
        ++runs_by_t[result.profile.t];
        if (result.profile.durable) ++durable_runs;
        if (result.profile.reconfiguration) ++reconfiguration_runs;
        if (result.profile.spare >= 0) ++spare_runs;
        if (result.profile.restarts) ++restart_runs;
        snapshots_refused += result.snapshots_refused;
        recoveries_completed += result.recoveries_completed;
        recoveries_with_ruling += result.recoveries_with_ruling;
        state_transfers_loaded += result.state_transfers_loaded;
        state_chunks_sent += result.state_chunks_sent;
        if (result.profile.byzantine_replicas > 0) ++runs_with_faulty_replicas;
        if (result.profile.byzantine_clients > 0) ++runs_with_byzantine_clients;
        for (size_t b = 0; b < sim::kBehaviourCount; ++b) {
          const std::string name(sim::behaviour_name(static_cast<sim::Behaviour>(b)));
          // Names appear after ':' or '+' ("r1:equivocate+late_equivocate").
          const std::string& text = result.profile.behaviours;
          for (size_t at = text.find(name); at != std::string::npos; at = text.find(name, at + 1)) {
            const bool starts = at > 0 && (text[at - 1] == ':' || text[at - 1] == '+');
            const size_t end = at + name.size();
            const bool ends = end == text.size() || text[end] == '+' || text[end] == ' ';
            if (starts && ends) {
              ++behaviour_runs[name];
              break;
            }
          }
        }
        if (!result.passed) {
          ++failed;
          std::printf("FAIL seed %llu: %s\n", static_cast<unsigned long long>(result.seed),
                      result.violation.substr(0, result.violation.find('\n')).c_str());
        }
        const Clock::time_point now = Clock::now();
        if (now - last_progress >= std::chrono::seconds(2) || done == count) {
          last_progress = now;
          std::printf("progress: %llu/%llu runs, %llu failed, %.1f runs/s\n",
                      static_cast<unsigned long long>(done), static_cast<unsigned long long>(count),
                      static_cast<unsigned long long>(failed), rate(now));
        }
        std::fflush(stdout);
      });
  const Clock::time_point end = Clock::now();
  const double seconds = std::chrono::duration<double>(end - start).count();

  std::printf("\n%llu runs: %llu passed, %zu failed in %.1f s (%.1f runs/s, %.0f events/s)\n",
              static_cast<unsigned long long>(batch.runs),
              static_cast<unsigned long long>(batch.passed), batch.failures.size(), seconds,
              rate(end), seconds > 0 ? static_cast<double>(events) / seconds : 0.0);
  std::printf(
      "client ops completed: %llu (fewest in one run: %llu); fault episodes: %llu "
      "(fewest in one run: %llu)\nfaults injected:",
      static_cast<unsigned long long>(ops_completed),
      static_cast<unsigned long long>(done ? min_ops : 0),
      static_cast<unsigned long long>(fault_episodes),
      static_cast<unsigned long long>(done ? min_episodes : 0));
  for (size_t k = 0; k < faults.size(); ++k) {
    if (faults[k] == 0) continue;
    std::printf(" %s=%llu",
                std::string(sim::fault_kind_name(static_cast<sim::FaultKind>(k))).c_str(),
                static_cast<unsigned long long>(faults[k]));
  }
  std::printf("\n");
  if (options.mode == sim::Mode::kFailstop) {
    std::printf("durable runs: %llu of %llu\n", static_cast<unsigned long long>(durable_runs),
                static_cast<unsigned long long>(done));
    std::printf(
        "reconfiguration runs: %llu (with a spare slot: %llu); state transfers loaded: %llu "
        "(pieces sent: %llu)\n",
        static_cast<unsigned long long>(reconfiguration_runs),
        static_cast<unsigned long long>(spare_runs),
        static_cast<unsigned long long>(state_transfers_loaded),
        static_cast<unsigned long long>(state_chunks_sent));
  }
  if (options.mode == sim::Mode::kByzantine) {
    std::printf("mode byzantine: runs by t:");
    for (const auto& [t, runs] : runs_by_t)
      std::printf(" t=%u:%llu", t, static_cast<unsigned long long>(runs));
    std::printf("; with Byzantine replicas: %llu, with Byzantine clients: %llu\nbehaviours (runs):",
                static_cast<unsigned long long>(runs_with_faulty_replicas),
                static_cast<unsigned long long>(runs_with_byzantine_clients));
    for (const auto& [name, runs] : behaviour_runs)
      std::printf(" %s=%llu", name.c_str(), static_cast<unsigned long long>(runs));
    std::printf(
        "\nruns with restarts drawn: %llu; catch-ups (checkpoints loaded): %llu (pieces sent: "
        "%llu); forged or damaged snapshots refused: %llu\n",
        static_cast<unsigned long long>(restart_runs),
        static_cast<unsigned long long>(state_transfers_loaded),
        static_cast<unsigned long long>(state_chunks_sent),
        static_cast<unsigned long long>(snapshots_refused));
    std::printf(
        "durable runs: %llu of %llu; recoveries from disk completed: %llu; whole-cluster crashes "
        "with faulty replicas ruled out by the operator: %llu\n",
        static_cast<unsigned long long>(durable_runs), static_cast<unsigned long long>(done),
        static_cast<unsigned long long>(recoveries_completed),
        static_cast<unsigned long long>(recoveries_with_ruling));
  }
  if (batch.failures.empty()) return 0;
  std::printf("failing seeds:\n");
  for (const sim::RunResult& failure : batch.failures) {
    std::printf("  seed %llu: %s\n    replay: %s\n", static_cast<unsigned long long>(failure.seed),
                failure.violation.c_str(), sim::replay_command(options, failure.seed).c_str());
  }
  if (cli.trace) {
    // Traces of the first few failures; the replay command gives any other.
    constexpr size_t kTracesShown = 3;
    for (size_t i = 0; i < batch.failures.size() && i < kTracesShown; ++i) {
      sim::SimOptions traced = options;
      traced.seed = batch.failures[i].seed;
      traced.trace = true;
      std::printf("\nseed %llu:\n", static_cast<unsigned long long>(traced.seed));
      print_trace(sim::run_isolated(traced));
    }
  }
  return 1;
}

int run(const SimCommandOptions& cli) {
  if (cli.mode != "failstop" && cli.mode != "byzantine") {
    std::fprintf(stderr, "lockstep sim: unknown mode '%s' (failstop or byzantine)\n",
                 cli.mode.c_str());
    return 2;
  }
  const sim::Mode mode = cli.mode == "byzantine" ? sim::Mode::kByzantine : sim::Mode::kFailstop;
  if (cli.seed.has_value() == !cli.seeds.empty()) {
    std::fprintf(stderr, "lockstep sim: give exactly one of --seed S or --seeds A..B\n");
    return 2;
  }
  sim::SimOptions options;
  options.mode = mode;
  options.ops = cli.ops;
  options.t = cli.t;
  options.clients = cli.clients;
  if ((cli.byzantine_replicas || cli.byzantine_clients) && mode != sim::Mode::kByzantine) {
    std::fprintf(stderr,
                 "lockstep sim: --byzantine-replicas/--byzantine-clients need --mode byzantine\n");
    return 2;
  }
  if (cli.byzantine_replicas && cli.t && *cli.byzantine_replicas > *cli.t) {
    std::fprintf(stderr, "lockstep sim: at most t replicas can be Byzantine\n");
    return 2;
  }
  if (cli.byzantine_replicas && !cli.t && *cli.byzantine_replicas > 1) {
    std::fprintf(stderr, "lockstep sim: more than one Byzantine replica needs --t\n");
    return 2;
  }
  options.byzantine_replicas = cli.byzantine_replicas;
  options.byzantine_clients = cli.byzantine_clients;
  options.faults_min = cli.faults_min;
  options.trace_tail_events = cli.trace_events;
  if (!cli.history.empty() && !cli.seed) {
    std::fprintf(stderr, "lockstep sim: --history goes with one --seed\n");
    return 2;
  }
  options.history_path = cli.history;
  if (cli.clocks == "bounded") {
    options.clock_beyond_bounds = false;
  } else if (cli.clocks == "beyond") {
    if (mode == sim::Mode::kByzantine) {
      std::fprintf(stderr,
                   "lockstep sim: the byzantine mode assumes synchronized clocks (--clocks "
                   "beyond is outside its model)\n");
      return 2;
    }
    options.clock_beyond_bounds = true;
  } else if (cli.clocks != "drawn") {
    std::fprintf(stderr, "lockstep sim: --clocks is drawn, bounded or beyond\n");
    return 2;
  }
  if (cli.durable == "yes" || cli.durable == "no") {
    options.durable = cli.durable == "yes";
  } else if (cli.durable != "drawn") {
    std::fprintf(stderr, "lockstep sim: --durable is drawn, yes or no\n");
    return 2;
  }
  if (cli.reconfiguration == "yes" || cli.reconfiguration == "no") {
    if (mode == sim::Mode::kByzantine && cli.reconfiguration == "yes" && cli.durable == "yes") {
      std::fprintf(stderr,
                   "lockstep sim: byzantine membership changes are not built for durable "
                   "clusters (--reconfiguration yes with --durable yes)\n");
      return 2;
    }
    options.reconfiguration = cli.reconfiguration == "yes";
  } else if (cli.reconfiguration == "drawn") {
    options.draw_reconfiguration = true;
  } else {
    std::fprintf(stderr, "lockstep sim: --reconfiguration is drawn, yes or no\n");
    return 2;
  }
  if (cli.restarts == "yes" || cli.restarts == "no") {
    if (mode != sim::Mode::kByzantine) {
      std::fprintf(stderr,
                   "lockstep sim: --restarts is for --mode byzantine (failstop restarts come "
                   "with --durable and --reconfiguration)\n");
      return 2;
    }
    options.restarts = cli.restarts == "yes";
  } else if (cli.restarts != "drawn") {
    std::fprintf(stderr, "lockstep sim: --restarts is drawn, yes or no\n");
    return 2;
  }
  const std::vector<std::string> known = sim::planted_bug_names_for(mode);
  for (const std::string& name : cli.planted) {
    if (std::find(known.begin(), known.end(), name) == known.end() ||
        !sim::set_planted_bug(options.planted, name)) {
      std::fprintf(stderr,
                   "lockstep sim: unknown planted bug '%s' for mode %s; known:", name.c_str(),
                   cli.mode.c_str());
      for (const std::string& bug : known)
        std::fprintf(stderr, " %s", bug.c_str());
      std::fprintf(stderr, "\n");
      return 2;
    }
  }
  return cli.seed ? run_one(cli, options) : run_many(cli, options);
}

}  // namespace

LOCKSTEP_COMMAND(
    "sim", "Run the deterministic cluster simulator on one seed or a range of seeds",
    [](CLI::App& app) -> std::function<int()> {
      auto cli = std::make_shared<SimCommandOptions>();
      app.add_option("--mode", cli->mode, "fault model: failstop or byzantine")
          ->capture_default_str();
      app.add_option("--seed", cli->seed, "run this one seed (prints a trace when it fails)");
      app.add_option("--seeds", cli->seeds, "run seeds A..B (both included)");
      app.add_option("--ops", cli->ops, "client operations per run, at least")
          ->capture_default_str()
          ->check(CLI::PositiveNumber);
      app.add_option("--t", cli->t,
                     "faults tolerated (failstop n = t+1, drawn 1..3; byzantine n = 2t+1, drawn "
                     "1..2, 3 rarely)")
          ->check(CLI::Range(1, 8));
      app.add_option("--byzantine-replicas", cli->byzantine_replicas,
                     "byzantine mode: faulty replicas (0..t); drawn if absent")
          ->check(CLI::Range(0, 8));
      app.add_option("--byzantine-clients", cli->byzantine_clients,
                     "byzantine mode: lying clients; drawn 0..3 if absent")
          ->check(CLI::Range(0, 16));
      app.add_option("--clients", cli->clients, "concurrent clients; drawn 2..12 if absent")
          ->check(CLI::Range(1, 64));
      app.add_option("--faults-min", cli->faults_min, "fault episodes per run, at least")
          ->capture_default_str();
      app.add_option("--clocks", cli->clocks,
                     "drawn | bounded | beyond: may replica clocks jump beyond the skew bound")
          ->capture_default_str();
      app.add_option("--durable", cli->durable,
                     "drawn | yes | no: replicas keep a log and checkpoints on a simulated disk, "
                     "and crash, restart, tear writes and meet bad sectors (byzantine: they "
                     "certify the order, restart from their disks and catch up, and recover "
                     "together after a whole-cluster crash)")
          ->capture_default_str();
      app.add_option("--reconfiguration", cli->reconfiguration,
                     "no | drawn | yes. failstop: operator removals, rejoins by state transfer "
                     "(wiped or old disks), wiped members rejoining, a spare slot joining; "
                     "byzantine (not durable): the administrator adds one or two spares by a "
                     "signed change, then removes an honest member")
          ->capture_default_str();
      app.add_option("--restarts", cli->restarts,
                     "byzantine: drawn | yes | no: honest replicas crash and restart without "
                     "their state (--join), and catch up from a checkpoint t+1 replicas vouch "
                     "for (checkpoints are on in every byzantine run, interval drawn)")
          ->capture_default_str();
      app.add_option("--plant", cli->planted,
                     "enable a planted protocol bug (tests the checkers); failstop: "
                     "execute_before_stable, skip_relay, reply_before_execute, "
                     "drop_session_entry, persist_after_send (durable runs); byzantine: "
                     "decide_early, ignore_equivocation, "
                     "accept_short_quorum, load_forged_state (restarts: joiners get forged "
                     "votes and snapshots), persist_after_send (durable runs)");
      app.add_flag("--trace", cli->trace, "print the trace of the last events of the run");
      app.add_option("--trace-events", cli->trace_events, "events kept in the trace")
          ->capture_default_str();
      app.add_option("--jobs,-j", cli->jobs, "seeds run in parallel (child processes)")
          ->capture_default_str()
          ->check(CLI::Range(1, 256));
      app.add_option("--scale", cli->scale,
                     "multiply the number of seeds (default: $LOCKSTEP_SIM_SEEDS_SCALE or 1)")
          ->check(CLI::PositiveNumber);
      app.add_option("--history", cli->history,
                     "write the client history (JSON lines) here, and the resolved one to "
                     "FILE.resolved");
      app.add_flag("--in-process", cli->in_process,
                   "run in this process (for a debugger); an assertion then ends the tool");
      return [cli] { return run(*cli); };
    });

}  // namespace lockstep::tool
