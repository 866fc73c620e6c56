#include "sim/runner.h"

#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <sstream>

namespace lockstep::sim {
namespace {

// Lines from a child: a protocol line starts with one of these tags; anything else is what the
// child wrote to stderr (an assertion's message), kept for the failure report.
constexpr std::string_view kBeginTag = "@@B ";
constexpr std::string_view kResultTag = "@@R ";
constexpr std::string_view kTraceTag = "@@T ";
constexpr size_t kStderrLinesKept = 20;

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out;
}

std::string unescape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      out += text[i + 1] == 'n' ? '\n' : text[i + 1];
      ++i;
    } else {
      out += text[i];
    }
  }
  return out;
}

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // the parent is gone; nothing useful left to do
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

std::string encode_result(const RunResult& r) {
  std::ostringstream out;
  out << r.seed << ' ' << r.passed << ' ' << r.events << ' ' << r.simulated_ns << ' '
      << r.ops_submitted << ' ' << r.ops_completed << ' ' << r.ops_unknown << ' '
      << r.fault_episodes << ' ' << r.event_log_hash << ' ' << r.profile.t << ' '
      << r.profile.replicas << ' ' << r.profile.clients << ' ' << r.profile.keys << ' '
      << r.profile.fault_phase_ns << ' ' << r.profile.clock_beyond_bounds << ' '
      << static_cast<int>(r.profile.mode) << ' ' << r.profile.delta_us << ' '
      << r.profile.epsilon_us << ' ' << r.profile.byzantine_replicas << ' '
      << r.profile.byzantine_clients << ' ' << r.profile.durable << ' '
      << r.profile.checkpoint_interval << ' ' << r.profile.sync_latency_ns << ' ' << r.final_view
      << ' ' << r.profile.reconfiguration << ' ' << r.profile.spare << ' '
      << r.state_transfers_loaded << ' ' << r.profile.checkpoint_interval_us << ' '
      << r.profile.restarts << ' ' << r.snapshots_refused << ' ' << r.state_chunks_sent << ' '
      << r.profile.certify_interval_us << ' ' << r.recoveries_completed << ' '
      << r.crashes_ended_by_cluster_crash << ' ' << r.recoveries_with_ruling << ' '
      << escape(r.profile.behaviours).size() << ':' << escape(r.profile.behaviours);
  for (uint64_t count : r.faults)
    out << ' ' << count;
  out << ' ' << r.trace_tail.size();
  for (const std::string& line : r.trace_tail)
    out << ' ' << escape(line).size() << ':' << escape(line);
  out << ' ' << escape(r.violation);
  return out.str();
}

std::optional<RunResult> decode_result(std::string_view line) {
  std::istringstream in{std::string(line)};
  RunResult r;
  in >> r.seed >> r.passed >> r.events >> r.simulated_ns >> r.ops_submitted >> r.ops_completed >>
      r.ops_unknown >> r.fault_episodes >> r.event_log_hash >> r.profile.t >> r.profile.replicas >>
      r.profile.clients >> r.profile.keys >> r.profile.fault_phase_ns >>
      r.profile.clock_beyond_bounds;
  int mode = 0;
  in >> mode >> r.profile.delta_us >> r.profile.epsilon_us >> r.profile.byzantine_replicas >>
      r.profile.byzantine_clients >> r.profile.durable >> r.profile.checkpoint_interval >>
      r.profile.sync_latency_ns >> r.final_view >> r.profile.reconfiguration >> r.profile.spare >>
      r.state_transfers_loaded >> r.profile.checkpoint_interval_us >> r.profile.restarts >>
      r.snapshots_refused >> r.state_chunks_sent >> r.profile.certify_interval_us >>
      r.recoveries_completed >> r.crashes_ended_by_cluster_crash >> r.recoveries_with_ruling;
  r.profile.mode = static_cast<Mode>(mode);
  {
    size_t size = 0;
    char colon = 0;
    in >> size >> colon;
    std::string escaped(size, '\0');
    in.read(escaped.data(), static_cast<std::streamsize>(size));
    r.profile.behaviours = unescape(escaped);
  }
  for (uint64_t& count : r.faults)
    in >> count;
  size_t lines = 0;
  in >> lines;
  for (size_t i = 0; i < lines && in; ++i) {
    size_t size = 0;
    char colon = 0;
    in >> size >> colon;
    std::string escaped(size, '\0');
    in.read(escaped.data(), static_cast<std::streamsize>(size));
    r.trace_tail.push_back(unescape(escaped));
  }
  if (!in) return std::nullopt;
  in.get();  // the space before the violation
  std::string rest;
  std::getline(in, rest);
  r.violation = unescape(rest);
  return r;
}

// The child's side: runs its seeds and reports each on `fd`, then exits without running the
// parent's atexit handlers or flushing its stdio buffers (they belong to the parent).
[[noreturn]] void worker_main(int fd, SimOptions options, const std::vector<uint64_t>& seeds) {
  ::dup2(fd, STDERR_FILENO);
  // An aborting seed is expected (that is why it runs here); a core dump per abort is not.
  rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  if (options.trace) {
    options.trace_sink = [fd](std::string_view line) {
      write_all(fd, std::string(kTraceTag) + escape(line) + "\n");
    };
  }
  for (uint64_t seed : seeds) {
    write_all(fd, std::string(kBeginTag) + std::to_string(seed) + "\n");
    options.seed = seed;
    RunResult result = run_simulation(options);
    write_all(fd, std::string(kResultTag) + encode_result(result) + "\n");
  }
  ::_exit(0);
}

struct Worker {
  pid_t pid = -1;
  int fd = -1;
  std::string buffer;
  std::vector<uint64_t> seeds;
  size_t reported = 0;              // seeds[0..reported) have results
  std::optional<uint64_t> running;  // begun, no result yet
  std::deque<std::string> stderr_lines;
  std::deque<std::string> trace;  // when tracing: the last lines, for a child that aborts
};

std::optional<Worker> spawn(const SimOptions& options, std::vector<uint64_t> seeds) {
  int fds[2];
  if (::pipe(fds) != 0) return std::nullopt;
  std::fflush(nullptr);  // nothing buffered in the parent may be written twice
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return std::nullopt;
  }
  if (pid == 0) {
    ::close(fds[0]);
    worker_main(fds[1], options, seeds);
  }
  ::close(fds[1]);
  Worker worker;
  worker.pid = pid;
  worker.fd = fds[0];
  worker.seeds = std::move(seeds);
  return worker;
}

std::string exit_text(int status) {
  if (WIFSIGNALED(status)) {
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  }
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "ended with status " + std::to_string(status);
}

// Drives the workers until all have ended, calling `on_result` for each seed's result (a crashed
// seed yields a failed result built here). Respawns a worker for the seeds after a crashed one.
void drive(const SimOptions& options, std::vector<Worker> workers,
           const std::function<void(RunResult)>& on_result) {
  while (!workers.empty()) {
    std::vector<pollfd> polls;
    for (const Worker& w : workers)
      polls.push_back(pollfd{w.fd, POLLIN, 0});
    if (::poll(polls.data(), polls.size(), -1) < 0) {
      if (errno == EINTR) continue;
      std::perror("poll");
      std::abort();
    }
    std::vector<Worker> respawned;
    for (size_t i = 0; i < workers.size(); ++i) {
      if (polls[i].revents == 0) continue;
      Worker& w = workers[i];
      char chunk[65536];
      const ssize_t n = ::read(w.fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n > 0) {
        w.buffer.append(chunk, static_cast<size_t>(n));
        size_t start = 0;
        for (size_t end; (end = w.buffer.find('\n', start)) != std::string::npos; start = end + 1) {
          std::string_view line(w.buffer.data() + start, end - start);
          if (line.starts_with(kBeginTag)) {
            w.running =
                std::strtoull(std::string(line.substr(kBeginTag.size())).c_str(), nullptr, 10);
            w.trace.clear();
            w.stderr_lines.clear();
          } else if (line.starts_with(kResultTag)) {
            std::optional<RunResult> result = decode_result(line.substr(kResultTag.size()));
            w.running.reset();
            ++w.reported;
            if (result) {
              on_result(std::move(*result));
            } else {
              RunResult broken;
              broken.seed = w.seeds[w.reported - 1];
              broken.violation = "runner: could not decode the child's result";
              on_result(std::move(broken));
            }
          } else if (line.starts_with(kTraceTag)) {
            w.trace.push_back(unescape(line.substr(kTraceTag.size())));
            if (options.trace_sink) options.trace_sink(w.trace.back());
            if (w.trace.size() > options.trace_tail_events) w.trace.pop_front();
          } else {
            w.stderr_lines.emplace_back(line);
            if (w.stderr_lines.size() > kStderrLinesKept) w.stderr_lines.pop_front();
          }
        }
        w.buffer.erase(0, start);
        continue;
      }
      // End of file: the child has exited (normally after its last seed, or mid-seed).
      ::close(w.fd);
      w.fd = -1;
      int status = 0;
      while (::waitpid(w.pid, &status, 0) < 0 && errno == EINTR) {
      }
      if (w.reported < w.seeds.size()) {
        RunResult crashed;
        crashed.seed = w.running.value_or(w.seeds[w.reported]);
        crashed.violation = "the run aborted (" + exit_text(status) + ")";
        for (const std::string& line : w.stderr_lines)
          crashed.violation += "\n  " + line;
        crashed.trace_tail.assign(w.trace.begin(), w.trace.end());
        on_result(std::move(crashed));
        std::vector<uint64_t> rest(w.seeds.begin() + static_cast<ptrdiff_t>(w.reported) + 1,
                                   w.seeds.end());
        if (!rest.empty()) {
          if (auto fresh = spawn(options, std::move(rest))) {
            respawned.push_back(std::move(*fresh));
          } else {
            std::perror("fork");
            std::abort();
          }
        }
      }
    }
    std::erase_if(workers, [](const Worker& w) { return w.fd < 0; });
    for (Worker& w : respawned)
      workers.push_back(std::move(w));
  }
}

}  // namespace

std::optional<SeedRange> parse_seed_range(std::string_view text) {
  auto parse = [](std::string_view part) -> std::optional<uint64_t> {
    uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (ec != std::errc{} || ptr != part.data() + part.size() || part.empty()) return std::nullopt;
    return value;
  };
  const size_t dots = text.find("..");
  if (dots == std::string_view::npos) {
    auto single = parse(text);
    if (!single) return std::nullopt;
    return SeedRange{*single, *single};
  }
  auto first = parse(text.substr(0, dots));
  auto last = parse(text.substr(dots + 2));
  if (!first || !last || *first > *last) return std::nullopt;
  return SeedRange{*first, *last};
}

double seeds_scale_from_environment() {
  const char* text = std::getenv("LOCKSTEP_SIM_SEEDS_SCALE");
  if (text == nullptr || *text == '\0') return 1.0;
  char* end = nullptr;
  const double scale = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(scale > 0)) {
    std::fprintf(stderr, "LOCKSTEP_SIM_SEEDS_SCALE=%s is not a positive number; using 1.0\n", text);
    return 1.0;
  }
  return scale;
}

uint64_t scale_count(uint64_t count, double scale) {
  const double scaled = static_cast<double>(count) * scale;
  return scaled < 1.0 ? 1 : static_cast<uint64_t>(scaled);
}

RunResult run_isolated(const SimOptions& options) {
  std::optional<Worker> worker = spawn(options, {options.seed});
  if (!worker) return run_simulation(options);
  RunResult result;
  std::vector<Worker> workers;
  workers.push_back(std::move(*worker));
  drive(options, std::move(workers), [&](RunResult r) { result = std::move(r); });
  return result;
}

BatchResult run_seeds(const SimOptions& options, SeedRange seeds, unsigned jobs,
                      const std::function<void(const RunResult&)>& on_result) {
  jobs = std::max(1u, static_cast<unsigned>(std::min<uint64_t>(jobs, seeds.count())));
  // Seeds are dealt round-robin, so slow seeds spread over the workers.
  std::vector<std::vector<uint64_t>> dealt(jobs);
  for (uint64_t seed = seeds.first;; ++seed) {
    dealt[(seed - seeds.first) % jobs].push_back(seed);
    if (seed == seeds.last) break;
  }
  std::vector<Worker> workers;
  for (auto& list : dealt) {
    std::optional<Worker> worker = spawn(options, std::move(list));
    if (!worker) {
      std::perror("fork");
      std::abort();
    }
    workers.push_back(std::move(*worker));
  }
  BatchResult batch;
  drive(options, std::move(workers), [&](RunResult r) {
    ++batch.runs;
    if (r.passed) {
      ++batch.passed;
    } else {
      batch.failures.push_back(r);
    }
    if (on_result) on_result(r);
  });
  std::sort(batch.failures.begin(), batch.failures.end(),
            [](const RunResult& a, const RunResult& b) { return a.seed < b.seed; });
  return batch;
}

namespace {

// The flag a planted bug's name sets; null for an unknown name.
bool* planted_flag(PlantedBugs& planted, std::string_view name) {
  if (name == "execute_before_stable") return &planted.failstop.execute_before_stable;
  if (name == "skip_relay") return &planted.failstop.skip_relay;
  if (name == "reply_before_execute") return &planted.failstop.reply_before_execute;
  if (name == "drop_session_entry") return &planted.failstop.drop_session_entry;
  if (name == "decide_early") return &planted.byzantine.decide_early;
  if (name == "ignore_equivocation") return &planted.byzantine.ignore_equivocation;
  if (name == "accept_short_quorum") return &planted.accept_short_quorum;
  if (name == "persist_after_send") return &planted.persist_after_send;
  if (name == "load_forged_state") return &planted.load_forged_state;
  return nullptr;
}

}  // namespace

bool set_planted_bug(PlantedBugs& planted, std::string_view name) {
  bool* flag = planted_flag(planted, name);
  if (flag == nullptr) return false;
  *flag = true;
  return true;
}

std::vector<std::string> planted_bug_names(const PlantedBugs& planted) {
  std::vector<std::string> names;
  PlantedBugs copy = planted;
  for (const std::string& name : all_planted_bug_names()) {
    if (*planted_flag(copy, name)) names.push_back(name);
  }
  return names;
}

std::vector<std::string> all_planted_bug_names() {
  return {"execute_before_stable", "skip_relay",          "reply_before_execute",
          "drop_session_entry",    "persist_after_send",  "decide_early",
          "ignore_equivocation",   "accept_short_quorum", "load_forged_state"};
}

std::vector<std::string> planted_bug_names_for(Mode mode) {
  if (mode == Mode::kByzantine) {
    return {"decide_early", "ignore_equivocation", "accept_short_quorum", "load_forged_state",
            "persist_after_send"};
  }
  return {"execute_before_stable", "skip_relay", "reply_before_execute", "drop_session_entry",
          "persist_after_send"};
}

std::string replay_command(const SimOptions& options, uint64_t seed) {
  std::string command = "lockstep sim --mode " + std::string(mode_name(options.mode)) + " --seed " +
                        std::to_string(seed) + " --ops " + std::to_string(options.ops);
  if (options.t) command += " --t " + std::to_string(*options.t);
  if (options.byzantine_replicas) {
    command += " --byzantine-replicas " + std::to_string(*options.byzantine_replicas);
  }
  if (options.byzantine_clients) {
    command += " --byzantine-clients " + std::to_string(*options.byzantine_clients);
  }
  if (options.clients) command += " --clients " + std::to_string(*options.clients);
  if (options.clock_beyond_bounds) {
    command += *options.clock_beyond_bounds ? " --clocks beyond" : " --clocks bounded";
  }
  if (options.durable) command += *options.durable ? " --durable yes" : " --durable no";
  // Drawn is the tool's default; a failstop run that drew none (the library's default) says so.
  if (options.reconfiguration) {
    command += *options.reconfiguration ? " --reconfiguration yes" : " --reconfiguration no";
  } else if (!options.draw_reconfiguration) {
    command += " --reconfiguration no";
  }
  if (options.restarts) command += *options.restarts ? " --restarts yes" : " --restarts no";
  if (options.faults_min != SimOptions{}.faults_min) {
    command += " --faults-min " + std::to_string(options.faults_min);
  }
  for (const std::string& name : planted_bug_names(options.planted))
    command += " --plant " + name;
  return command + " --trace";
}

}  // namespace lockstep::sim
