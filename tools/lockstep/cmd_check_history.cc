// `lockstep check-history FILE`: judges a recorded history (shared format, see check/history.h)
// for linearizability against the KV store's sequential specification.
//
// Exit codes, shared with scripts/check_history.py so either can gate a run:
//   0 linearizable, 1 not linearizable (a minimal violating window is printed),
//   2 bad input, or undecided because a key's search exceeded --budget.
#include <chrono>
#include <cstdio>
#include <memory>
#include <set>
#include <string>

#include "check/history.h"
#include "check/linearizability.h"
#include "command.h"

namespace lockstep::tool {
namespace {

constexpr int kExitLinearizable = 0;
constexpr int kExitNotLinearizable = 1;
constexpr int kExitBadInputOrUndecided = 2;

struct CheckHistoryOptions {
  std::string path;
  uint64_t budget_steps = check::CheckOptions{}.steps_per_key_max;
  bool per_key = false;
  bool no_window = false;
};

void print_summary(const std::vector<check::Operation>& operations) {
  size_t by_kind[5] = {};
  size_t ok = 0, failed = 0, unknown = 0;
  std::set<uint64_t> clients;
  std::set<std::string_view> keys;
  for (const check::Operation& op : operations) {
    ++by_kind[static_cast<size_t>(op.kind)];
    ok += op.outcome == check::Outcome::kOk ? 1 : 0;
    failed += op.outcome == check::Outcome::kFailed ? 1 : 0;
    unknown += op.outcome == check::Outcome::kUnknown ? 1 : 0;
    clients.insert(op.client);
    keys.insert(op.key);
  }
  std::printf("operations: %zu (get %zu, put %zu, append %zu, cas %zu, del %zu)\n",
              operations.size(), by_kind[0], by_kind[1], by_kind[2], by_kind[3], by_kind[4]);
  std::printf("outcomes:   ok %zu, failed %zu, unknown %zu\n", ok, failed, unknown);
  std::printf("clients:    %zu\nkeys:       %zu\n", clients.size(), keys.size());
}

int run(const CheckHistoryOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  check::ReadResult input = check::read_history_file(options.path);
  if (!input.ok()) {
    std::fprintf(stderr, "check-history: %s: %s\n", options.path.c_str(),
                 input.error->to_string().c_str());
    return kExitBadInputOrUndecided;
  }
  std::printf("history:    %s\n", options.path.c_str());
  print_summary(input.operations);

  check::CheckOptions check_options;
  check_options.steps_per_key_max = options.budget_steps;
  check_options.find_window = !options.no_window;
  const check::CheckResult result = check::check_linearizability(input.operations, check_options);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  if (options.per_key) {
    for (const check::KeyReport& key : result.keys) {
      std::printf("  key %-24s %-17s ops %zu failed %zu unknown %zu steps %llu\n", key.key.c_str(),
                  std::string(check::verdict_name(key.verdict)).c_str(), key.operations, key.failed,
                  key.unknown, static_cast<unsigned long long>(key.steps));
    }
  }
  std::printf("verdict:    %s\n", std::string(check::verdict_name(result.verdict)).c_str());
  std::printf("time:       %.3f s (%llu search steps)\n", seconds,
              static_cast<unsigned long long>(result.steps));

  switch (result.verdict) {
    case check::Verdict::kLinearizable:
      return kExitLinearizable;
    case check::Verdict::kNotLinearizable:
      std::printf("violating keys: %zu\n", result.violating_keys.size());
      for (const std::string& key : result.violating_keys)
        std::printf("  %s\n", key.c_str());
      if (result.window) {
        std::printf(
            "%s",
            check::format_window(*result.window, input.operations, input.line_numbers).c_str());
      }
      return kExitNotLinearizable;
    case check::Verdict::kUndecided:
      std::printf("undecided keys (search budget of %llu steps, or memory, exceeded): %zu\n",
                  static_cast<unsigned long long>(options.budget_steps),
                  result.undecided_keys.size());
      for (const std::string& key : result.undecided_keys)
        std::printf("  %s\n", key.c_str());
      return kExitBadInputOrUndecided;
  }
  return kExitBadInputOrUndecided;
}

}  // namespace

LOCKSTEP_COMMAND(
    "check-history", "Check a recorded operation history (JSON lines) for linearizability",
    [](CLI::App& app) -> std::function<int()> {
      auto options = std::make_shared<CheckHistoryOptions>();
      app.add_option("file", options->path, "history file, one operation per line")->required();
      app.add_option("--budget", options->budget_steps,
                     "search steps allowed per key before it is undecided")
          ->check(CLI::PositiveNumber);
      app.add_flag("--per-key", options->per_key, "print the verdict of every key");
      app.add_flag("--no-window", options->no_window,
                   "skip computing the minimal violating window");
      return [options] { return run(*options); };
    });

}  // namespace lockstep::tool
