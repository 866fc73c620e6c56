// Cross-validation: the independent Python checker (scripts/check_history.py) and the C++ one
// must agree on every history; and the `lockstep check-history` command's exit codes and report.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "check/history.h"
#include "check/linearizability.h"
#include "test_histories.h"

namespace lockstep::check {
namespace {

using testing::append;
using testing::cas;
using testing::get;
using testing::put;
using testing::unknown;

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), n);
  }
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

bool python_available() {
  return run_command("python3 --version").exit_code == 0;
}

class TempFile {
 public:
  TempFile() {
    static int counter = 0;
    path_ =
        (std::filesystem::temp_directory_path() / ("lockstep_check_" + std::to_string(::getpid()) +
                                                   "_" + std::to_string(counter++) + ".jsonl"))
            .string();
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

  void write(const std::vector<Operation>& history) const {
    auto error = write_history_file(path_, history);
    ASSERT_FALSE(error.has_value()) << *error;
  }
  void write_text(const std::string& text) const { std::ofstream(path_) << text; }

 private:
  std::string path_;
};

int expected_exit_code(Verdict verdict) {
  switch (verdict) {
    case Verdict::kLinearizable:
      return 0;
    case Verdict::kNotLinearizable:
      return 1;
    case Verdict::kUndecided:
      return 2;
  }
  return -1;
}

int python_exit_code(const std::string& path) {
  return run_command("python3 " LOCKSTEP_SOURCE_DIR "/scripts/check_history.py " + path).exit_code;
}

// Both checkers judge `history`; returns the C++ verdict.
Verdict expect_agreement(const std::vector<Operation>& history, const std::string& what) {
  TempFile file;
  file.write(history);
  const Verdict verdict = check_linearizability(history).verdict;
  EXPECT_NE(verdict, Verdict::kUndecided) << what;
  EXPECT_EQ(python_exit_code(file.path()), expected_exit_code(verdict)) << what;
  return verdict;
}

TEST(CrossCheck, PythonCheckerAgreesOnHandWrittenHistories) {
  if (!python_available()) GTEST_SKIP() << "python3 is not installed";
  const std::vector<std::pair<std::string, std::vector<Operation>>> cases = {
      {"overlapping", {put(1, "k", "a", 0, 10), put(2, "k", "b", 5, 15), get(3, "k", "a", 12, 20)}},
      {"stale read", {put(1, "k", "1", 0, 10), put(2, "k", "2", 20, 30), get(3, "k", "1", 40, 50)}},
      {"lost write",
       {append(1, "k", "x", 0, 10), append(2, "k", "y", 0, 10), get(3, "k", "x", 20, 30)}},
      {"unknown took effect late",
       {put(1, "k", "a", 0, 10), unknown(put(2, "k", "b", 20, 0)), get(3, "k", "a", 30, 40),
        get(3, "k", "b", 1000, 1010)}},
      {"unknown seen then unseen",
       {put(1, "k", "a", 0, 10), unknown(put(2, "k", "b", 20, 0)), get(3, "k", "b", 30, 40),
        get(3, "k", "a", 50, 60)}},
      {"cas on absent", {cas(1, "k", "", "x", true, 0, 10)}},
      {"equal timestamps", {put(1, "k", "a", 0, 10), get(2, "k", "", 10, 20)}},
      {"failed write read",
       {put(1, "k", "a", 0, 10), testing::failed(put(2, "k", "b", 20, 30)),
        get(3, "k", "b", 40, 50)}},
  };
  int linearizable = 0;
  for (const auto& [name, history] : cases) {
    linearizable += expect_agreement(history, name) == Verdict::kLinearizable ? 1 : 0;
  }
  EXPECT_EQ(linearizable, 3);  // overlapping, unknown took effect late, equal timestamps
}

TEST(CrossCheck, PythonCheckerAgreesOnRandomHistories) {
  if (!python_available()) GTEST_SKIP() << "python3 is not installed";
  int violations = 0;
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    testing::GeneratorOptions options;
    options.seed = 1000 + seed;
    options.operations = 60 + seed * 4;
    options.clients = 3 + seed % 6;
    options.keys = 1 + seed % 3;
    options.unknown_fraction = 0.1;
    std::vector<Operation> history = testing::generate_linearizable(options);
    EXPECT_EQ(expect_agreement(history, "seed " + std::to_string(seed)), Verdict::kLinearizable);
    // Mutate one read to another value of its key (a written one, or "" for absent): whatever
    // the verdict, the two checkers must give the same one.
    std::mt19937_64 random(seed);
    std::vector<size_t> reads;
    std::vector<std::string> values = {""};
    for (size_t i = 0; i < history.size(); ++i) {
      if (history[i].kind == OpKind::kGet && history[i].outcome == Outcome::kOk) reads.push_back(i);
      if (history[i].kind == OpKind::kPut) values.push_back(history[i].value);
    }
    if (reads.empty()) continue;
    const size_t target = reads[random() % reads.size()];
    history[target].output = values[random() % values.size()];
    if (expect_agreement(history, "mutated seed " + std::to_string(seed)) ==
        Verdict::kNotLinearizable) {
      ++violations;
    }
  }
  EXPECT_GT(violations, 0);
}

TEST(CrossCheck, PythonCheckerRejectsBadInput) {
  if (!python_available()) GTEST_SKIP() << "python3 is not installed";
  TempFile file;
  file.write_text(R"({"client":1,"op":"put","key":"k","value":"v","call":10,"return":9,"ok":true})"
                  "\n");
  EXPECT_EQ(python_exit_code(file.path()), 2);
  file.write_text(
      R"({"client":true,"op":"get","key":"k","output":"","call":1,"return":2,"ok":true})"
      "\n");
  EXPECT_EQ(python_exit_code(file.path()), 2);
}

TEST(CheckHistoryCommand, ExitCodesAndReport) {
  TempFile good;
  good.write({put(1, "k", "a", 1000, 2000), get(2, "k", "a", 3000, 4000)});
  CommandResult result =
      run_command(std::string(LOCKSTEP_BINARY) + " check-history " + good.path());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("verdict:    linearizable"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("operations: 2 (get 1, put 1"), std::string::npos) << result.output;

  TempFile bad;
  bad.write(
      {put(1, "k", "1", 1000, 2000), put(2, "k", "2", 3000, 4000), get(3, "k", "1", 5000, 6000)});
  result = run_command(std::string(LOCKSTEP_BINARY) + " check-history " + bad.path());
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("not linearizable"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("these 3 operations cannot be linearized"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("(line 3)"), std::string::npos) << result.output;

  TempFile malformed;
  malformed.write_text("{\"client\":1}\n");
  result = run_command(std::string(LOCKSTEP_BINARY) + " check-history " + malformed.path());
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("line 1, field \"op\": missing field"), std::string::npos)
      << result.output;

  result = run_command(std::string(LOCKSTEP_BINARY) + " check-history --budget 1 " + good.path());
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("undecided keys"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace lockstep::check
