// `lockstep sim` as a user runs it: exit codes, the summary, the replay command and the trace of
// a failing seed, and the refusal of the mode that does not exist yet.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace {

struct Outcome {
  int exit_code = -1;
  std::string output;
};

Outcome run_tool(const std::string& arguments) {
  const std::string command = std::string(LOCKSTEP_BINARY) + " " + arguments + " 2>&1";
  Outcome outcome;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return outcome;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0)
    outcome.output.append(buffer, n);
  const int status = ::pclose(pipe);
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return outcome;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(SimCliTest, OneSeedPrintsASummary) {
  const Outcome outcome = run_tool("sim --mode failstop --seed 3");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "seed 3: pass")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "completed")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "faults:")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "events")) << outcome.output;
}

TEST(SimCliTest, AFailingSeedPrintsItsTraceAndReplayCommand) {
  const Outcome outcome = run_tool("sim --seed 1 --plant execute_before_stable");
  EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "FAIL")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "--- trace")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "VIOLATION")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output,
                       "replay: lockstep sim --mode failstop --seed 1 --ops 500 --plant "
                       "execute_before_stable --trace"))
      << outcome.output;
}

TEST(SimCliTest, ASeedRangeReportsCountsAndRate) {
  const Outcome outcome = run_tool("sim --seeds 1..6 --jobs 2 --scale 1");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "6 runs: 6 passed, 0 failed")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "runs/s")) << outcome.output;
}

TEST(SimCliTest, ASeedRangeListsFailingSeeds) {
  const Outcome outcome = run_tool("sim --seeds 1..4 --scale 1 --plant reply_before_execute");
  EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "failing seeds:")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "--seed 4 ")) << outcome.output;
}

TEST(SimCliTest, ScaleMultipliesTheSeedCount) {
  const Outcome outcome = run_tool("sim --seeds 1..20 --scale 0.1");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "2 runs: 2 passed")) << outcome.output;
}

TEST(SimCliTest, ByzantineModeIsRefusedClearly) {
  const Outcome outcome = run_tool("sim --mode byzantine --seed 1");
  EXPECT_EQ(outcome.exit_code, 2) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "not implemented yet")) << outcome.output;
}

TEST(SimCliTest, BadArgumentsAreRefused) {
  EXPECT_EQ(run_tool("sim --seeds 9..3").exit_code, 2);
  EXPECT_EQ(run_tool("sim --seed 1 --seeds 1..2").exit_code, 2);
  EXPECT_EQ(run_tool("sim --seed 1 --plant no_such_bug").exit_code, 2);
  EXPECT_EQ(run_tool("sim --mode paxos --seed 1").exit_code, 2);
}

}  // namespace
