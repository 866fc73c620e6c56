// Running many seeds, robustly. A replica's invariant check aborts the process when it fails
// (core/assert.h: a found bug stops everything), so seeds run in child processes: a seed that
// aborts is reported as a failure with the assertion's message and the trace of the events
// before it, and the remaining seeds go on in a fresh child. Children are forked, not exec'd, so
// the options (including test-only planted bugs and hooks) carry over as they are.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sim/simulator.h"

namespace lockstep::sim {

// "A..B" (both included) or a single "A".
struct SeedRange {
  uint64_t first = 0;
  uint64_t last = 0;
  uint64_t count() const { return last - first + 1; }
};
std::optional<SeedRange> parse_seed_range(std::string_view text);

// LOCKSTEP_SIM_SEEDS_SCALE (a positive float, default 1.0): multiplies the seed counts of tests
// and of `lockstep sim --seeds`, so that a sanitizer build can run a tenth of them and a soak
// run ten times as many.
double seeds_scale_from_environment();
// count * scale, at least 1.
uint64_t scale_count(uint64_t count, double scale);

// Runs `options.seed` in a child process. With options.trace, the trace tail comes back even
// when the child aborts, and options.trace_sink (if set) is called here, in the parent, with
// every line as the child produces it. When fork fails, runs in this process instead.
RunResult run_isolated(const SimOptions& options);

struct BatchResult {
  uint64_t runs = 0;
  uint64_t passed = 0;
  std::vector<RunResult> failures;  // in seed order
};

// Runs every seed of `seeds` with `options` (options.seed is ignored) in `jobs` child processes
// at once. `on_result` is called in the parent for each finished seed, in completion order.
BatchResult run_seeds(const SimOptions& options, SeedRange seeds, unsigned jobs,
                      const std::function<void(const RunResult&)>& on_result = {});

// Planted bugs by name (the field names of failstop::Options::PlantedBugs and
// byzantine::Options::PlantedBugs, and accept_short_quorum for ClientOptions), for the command
// line and replay commands. set_planted_bug returns false for an unknown name.
bool set_planted_bug(PlantedBugs& planted, std::string_view name);
std::vector<std::string> planted_bug_names(const PlantedBugs& planted);
std::vector<std::string> all_planted_bug_names();
// The planted bugs that mean something in `mode` (the others do not touch its code).
std::vector<std::string> planted_bug_names_for(Mode mode);

// The exact command line that replays `result` (its seed with the options that matter).
std::string replay_command(const SimOptions& options, uint64_t seed);

}  // namespace lockstep::sim
