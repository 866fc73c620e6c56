// Cross-validation: the independent Python checker (scripts/check_history.py) and the C++ one
// must agree on every history; and the `lockstep check-history` command's exit codes and report.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
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

// Runs the Python checker once over every history (its start-up dominates small checks) and
// returns, per history, the exit code it would have given for that file alone.
std::vector<int> python_exit_codes(const std::vector<std::vector<Operation>>& histories) {
  std::vector<std::unique_ptr<TempFile>> files;
  std::string command = "python3 " LOCKSTEP_SOURCE_DIR "/scripts/check_history.py";
  for (const auto& history : histories) {
    files.push_back(std::make_unique<TempFile>());
    files.back()->write(history);
    command += " " + files.back()->path();
  }
  const CommandResult result = run_command(command);
  std::vector<int> codes;
  for (const auto& file : files) {
    const std::string prefix = file->path() + ": ";
    const size_t at = result.output.find(prefix);
    if (at == std::string::npos) {
      ADD_FAILURE() << "no verdict for " << file->path() << " in:\n" << result.output;
      codes.push_back(-1);
      continue;
    }
    const std::string line = result.output.substr(at, result.output.find('\n', at) - at);
    if (line.find("not linearizable") != std::string::npos) {
      codes.push_back(1);
    } else if (line.find("undecided") != std::string::npos ||
               line.find("bad input") != std::string::npos) {
      codes.push_back(2);
    } else if (line.find("linearizable") != std::string::npos) {
      codes.push_back(0);
    } else {
      ADD_FAILURE() << "unreadable verdict: " << line;
      codes.push_back(-1);
    }
  }
  return codes;
}

// Both checkers judge every history; returns the C++ verdicts.
std::vector<Verdict> expect_agreement(const std::vector<std::vector<Operation>>& histories,
                                      const std::vector<std::string>& names) {
  const std::vector<int> python = python_exit_codes(histories);
  std::vector<Verdict> verdicts;
  for (size_t i = 0; i < histories.size(); ++i) {
    const Verdict verdict = check_linearizability(histories[i]).verdict;
    EXPECT_NE(verdict, Verdict::kUndecided) << names[i];
    EXPECT_EQ(python[i], expected_exit_code(verdict)) << names[i];
    verdicts.push_back(verdict);
  }
  return verdicts;
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
  std::vector<std::vector<Operation>> histories;
  std::vector<std::string> names;
  for (const auto& [name, history] : cases) {
    names.push_back(name);
    histories.push_back(history);
  }
  const std::vector<Verdict> verdicts = expect_agreement(histories, names);
  // overlapping, unknown took effect late, equal timestamps
  EXPECT_EQ(std::count(verdicts.begin(), verdicts.end(), Verdict::kLinearizable), 3);

  // A single file gives its verdict as the exit code.
  TempFile file;
  file.write(cases[1].second);
  EXPECT_EQ(python_exit_code(file.path()), 1);
  file.write(cases[0].second);
  EXPECT_EQ(python_exit_code(file.path()), 0);
}

TEST(CrossCheck, PythonCheckerAgreesOnRandomHistories) {
  if (!python_available()) GTEST_SKIP() << "python3 is not installed";
  std::vector<std::vector<Operation>> histories;
  std::vector<std::string> names;
  for (uint64_t seed = 1; seed <= 60; ++seed) {
    testing::GeneratorOptions options;
    options.seed = 1000 + seed;
    options.operations = 40 + seed * 3;
    options.clients = 3 + seed % 6;
    options.keys = 1 + seed % 3;
    options.unknown_fraction = 0.1;
    std::vector<Operation> history = testing::generate_linearizable(options);
    histories.push_back(history);
    names.push_back("seed " + std::to_string(seed));
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
    histories.push_back(history);
    names.push_back("mutated seed " + std::to_string(seed));
  }
  const std::vector<Verdict> verdicts = expect_agreement(histories, names);
  for (size_t i = 0; i < verdicts.size(); i += 2) {
    EXPECT_EQ(verdicts[i], Verdict::kLinearizable) << names[i];
  }
  EXPECT_GT(std::count(verdicts.begin(), verdicts.end(), Verdict::kNotLinearizable), 20);
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
  // Only the integration tests make the build wait for the tool; `make build` builds it anyway.
  if (!std::filesystem::exists(LOCKSTEP_BINARY)) {
    GTEST_SKIP() << LOCKSTEP_BINARY << " is not built (build the `lockstep` target)";
  }
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
