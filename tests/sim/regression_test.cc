// Seeds that once exposed a bug stay in tests/sim/regression_seeds.txt (format: see
// regression_seeds.h) and run on every build, with the options they failed with: a fixed bug
// must stay fixed.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "regression_seeds.h"
#include "sim/runner.h"
#include "sim/simulator.h"

namespace lockstep::sim {
namespace {

TEST(RegressionSeedsTest, EverySeedThatOnceFailedPasses) {
  const std::string path = regression_seeds_path();
  const std::vector<RegressionSeed> seeds = read_regression_seeds(path);
  ASSERT_FALSE(seeds.empty()) << path << " lists no seeds";
  for (const RegressionSeed& seed : seeds) {
    const RunResult result = run_isolated(seed.options);
    if (seed.open) {
      std::printf("open bug, line %zu (%s): seed %llu %s\n", seed.line, seed.finding.c_str(),
                  static_cast<unsigned long long>(seed.options.seed),
                  result.passed
                      ? "now PASSES: remove --open from its line"
                      : ("still fails: " + result.violation.substr(0, result.violation.find('\n')))
                            .c_str());
      continue;
    }
    EXPECT_GE(result.ops_submitted, seed.options.ops) << "line " << seed.line;
    EXPECT_GE(result.fault_episodes, seed.options.faults_min) << "line " << seed.line;
    EXPECT_TRUE(result.passed) << "line " << seed.line << " (" << seed.finding << ") fails again:\n"
                               << summarize(result)
                               << "\n  replay: " << replay_command(seed.options, seed.options.seed);
  }
}

}  // namespace
}  // namespace lockstep::sim
