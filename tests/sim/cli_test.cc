// `lockstep sim` as a user runs it: exit codes, the summary, the replay command and the trace of
// a failing seed, in both modes, and the refusal of options outside a mode's model.
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

TEST(SimCliTest, ByzantineModeRunsASeed) {
  const Outcome outcome = run_tool("sim --mode byzantine --seed 1");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "seed 1: pass")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "mode=byzantine t=")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "byzantine_replicas=")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "byzantine_clients=")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "behaviours:")) << outcome.output;
}

TEST(SimCliTest, ByzantineSeedRangeSummarizesTheAdversary) {
  const Outcome outcome = run_tool("sim --mode byzantine --seeds 1..4 -j 2 --scale 1");
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "4 runs: 4 passed, 0 failed")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "mode byzantine: runs by t:")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "behaviours (runs):")) << outcome.output;
}

TEST(SimCliTest, AByzantinePlantedBugFailsWithAByzantineReplayCommand) {
  // (Not durable: seed 1 draws durability, and held replies change where the lie shows.)
  const Outcome outcome =
      run_tool("sim --mode byzantine --seed 1 --durable no --plant accept_short_quorum");
  EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "accepted result")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output,
                       "replay: lockstep sim --mode byzantine --seed 1 --ops 500 --durable no "
                       "--plant accept_short_quorum --trace"))
      << outcome.output;
}

TEST(SimCliTest, ByzantineModeRefusesWhatIsOutsideItsModel) {
  EXPECT_EQ(run_tool("sim --mode byzantine --seed 1 --clocks beyond").exit_code, 2);
  EXPECT_EQ(run_tool("sim --mode byzantine --seed 1 --t 1 --byzantine-replicas 2").exit_code, 2);
  EXPECT_EQ(run_tool("sim --mode failstop --seed 1 --byzantine-clients 1").exit_code, 2);
  // A planted bug belongs to one mode's code.
  EXPECT_EQ(run_tool("sim --mode failstop --seed 1 --plant decide_early").exit_code, 2);
  EXPECT_EQ(run_tool("sim --mode byzantine --seed 1 --plant skip_relay").exit_code, 2);
  EXPECT_EQ(run_tool("sim --mode failstop --seed 1 --restarts yes").exit_code, 2);
  EXPECT_EQ(run_tool("sim --mode failstop --seed 1 --plant load_forged_state").exit_code, 2);
  EXPECT_EQ(run_tool("sim --mode byzantine --seed 1 --restarts maybe").exit_code, 2);
}

TEST(SimCliTest, AForgedCheckpointLoadFailsWithAReplayCommandThatKeepsTheRestarts) {
  const Outcome outcome = run_tool(
      "sim --mode byzantine --seed 2 --durable no --restarts yes --plant load_forged_state");
  EXPECT_EQ(outcome.exit_code, 1) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "catch-up: ")) << outcome.output;
  EXPECT_TRUE(contains(outcome.output, "--restarts yes --plant load_forged_state --trace"))
      << outcome.output;
  const Outcome clean = run_tool("sim --mode byzantine --seed 2 --durable no --restarts yes");
  EXPECT_EQ(clean.exit_code, 0) << clean.output;
  EXPECT_TRUE(contains(clean.output, "catch_up_restart=")) << clean.output;
  EXPECT_TRUE(contains(clean.output, "checkpoint_interval=")) << clean.output;
}

TEST(SimCliTest, DurableRunsAreChosenAndReplayedByTheFlag) {
  const Outcome durable = run_tool("sim --seed 2 --durable yes");
  EXPECT_EQ(durable.exit_code, 0) << durable.output;
  EXPECT_NE(durable.output.find("durable (checkpoint every"), std::string::npos) << durable.output;
  const Outcome plain = run_tool("sim --seed 4 --durable no");
  EXPECT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_EQ(plain.output.find("durable ("), std::string::npos) << plain.output;
  const Outcome planted = run_tool("sim --seed 9 --durable yes --plant persist_after_send");
  EXPECT_EQ(planted.exit_code, 1) << planted.output;
  EXPECT_NE(planted.output.find("--durable yes --plant persist_after_send --trace"),
            std::string::npos)
      << planted.output;
  EXPECT_EQ(run_tool("sim --seed 1 --durable maybe").exit_code, 2);
}

TEST(SimCliTest, ByzantineDurableRunsAreChosenByTheFlag) {
  const Outcome durable = run_tool("sim --mode byzantine --seed 3 --durable yes");
  EXPECT_EQ(durable.exit_code, 0) << durable.output;
  EXPECT_TRUE(contains(durable.output, "durable (certify every")) << durable.output;
  const Outcome plain = run_tool("sim --mode byzantine --seed 3 --durable no");
  EXPECT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_FALSE(contains(plain.output, "durable (")) << plain.output;
}

TEST(SimCliTest, BadArgumentsAreRefused) {
  EXPECT_EQ(run_tool("sim --seeds 9..3").exit_code, 2);
  EXPECT_EQ(run_tool("sim --seed 1 --seeds 1..2").exit_code, 2);
  EXPECT_EQ(run_tool("sim --seed 1 --plant no_such_bug").exit_code, 2);
  EXPECT_EQ(run_tool("sim --mode paxos --seed 1").exit_code, 2);
}

}  // namespace
