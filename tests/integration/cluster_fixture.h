// What the integration tests share: a runtime::LocalCluster of real `lockstep replica` processes
// in a directory of the test's own, and the checks they make of a workload's history and of the
// replicas' status.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "check/linearizability.h"
#include "client/status.h"
#include "net/event_loop.h"
#include "runtime/local_cluster.h"
#include "workload/verify.h"
#include "workload/workload.h"

namespace lockstep::integration {

// Δ of the byzantine tests' clusters (five times the default). The byzantine mode's safety rests
// on Δ holding, and CI runs these tests under AddressSanitizer next to a simulator test on two
// cores: with 20 ms, relays arrived outside their window there, the two live replicas of a
// durable cluster decided different orders, and neither could certify anything again.
inline constexpr uint64_t kByzantineTestDeltaMs = 50;

// Runs a shell command; returns its exit code (-1 when it did not exit) and its stdout.
inline std::pair<int, std::string> run_command(const std::string& command_line) {
  std::string output;
  FILE* pipe = popen(command_line.c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  std::array<char, 4096> buffer{};
  size_t n = 0;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    output.append(buffer.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// A test with one local cluster in a fresh directory named after the test; the cluster is killed
// when the test ends, and its directory (replica logs, cluster file, data) kept if it failed.
class ClusterTest : public ::testing::Test {
 protected:
  explicit ClusterTest(std::string dir_prefix) : dir_prefix_(std::move(dir_prefix)) {}

  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           (dir_prefix_ + "-" + std::to_string(getpid()) + "-" + test->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    cluster_.reset();  // kills and reaps every replica still running
    if (!HasFailure()) {
      std::filesystem::remove_all(dir_);
    } else {
      std::cerr << "replica logs kept in " << dir_ << "\n";
    }
  }

  // What every test's cluster starts from: this test's directory, the real binary, and a client
  // that retries and waits long enough for a view change on a loaded machine.
  runtime::LocalClusterOptions cluster_options() const {
    runtime::LocalClusterOptions options;
    options.dir = dir_;
    options.binary = LOCKSTEP_BINARY;
    options.client.retry_interval_ms = 100;
    options.client.deadline_ms = 10'000;
    return options;
  }
  // Starts every listed replica and returns once each accepts connections.
  void start_cluster_with(const runtime::LocalClusterOptions& options) {
    cluster_ = std::make_unique<runtime::LocalCluster>(options);
    cluster_->start_all();
    cluster_->wait_until_listening();
  }

  // Mostly appends, few puts: the append audit can only vouch for appends no later put overwrote.
  workload::Options load_options(double duration_s, uint32_t clients = 16) const {
    workload::Options load;
    load.client = cluster_->client_options();
    load.clients = clients;
    load.keys = 20;
    load.duration_s = duration_s;
    load.get_percent = 40;
    load.append_percent = 55;
    load.progress = false;
    return load;
  }

  // Reads every key of `load` back into the history of its run (the reads join it, so the
  // checker judges them too), then checks the whole history: the reads succeeded, no
  // acknowledged append is lost, and it is linearizable. Returns the history with the reads.
  std::vector<check::Operation> check_history(const workload::Options& load,
                                              const workload::Report& report) const {
    std::vector<std::string> keys;
    for (uint32_t k = 0; k < load.keys; ++k)
      keys.push_back(workload::key_name(k, load.key_bytes));
    std::vector<check::Operation> history = report.history;
    const workload::FinalState final_state =
        workload::read_final_state(cluster_->client_options(), keys, history);
    EXPECT_TRUE(final_state.errors.empty()) << final_state.errors.front();

    const workload::AppendAudit audit = workload::audit_appends(history, final_state.values);
    EXPECT_GT(audit.checked, 0u);
    EXPECT_TRUE(audit.lost.empty()) << "lost: " << audit.lost.front();
    RecordProperty("appends_checked", static_cast<int>(audit.checked));
    RecordProperty("completed", static_cast<int>(report.completed));

    const check::CheckResult verdict = check::check_linearizability(history);
    EXPECT_EQ(verdict.verdict, check::Verdict::kLinearizable)
        << (verdict.window ? check::format_window(*verdict.window, history) : "");
    return history;
  }

  // The status of each of `replicas` once they have all executed the same number of requests
  // (workload::converged_statuses); a replica that does not answer is missing from the map.
  std::map<uint32_t, StatusReply> converged_statuses(const std::vector<ReplicaId>& replicas) const {
    std::vector<std::pair<uint32_t, net::Address>> addresses;
    for (ReplicaId id : replicas)
      addresses.emplace_back(id.value, cluster_->config().replicas[id.value].address);
    return workload::converged_statuses(addresses);
  }
  // Every replica the cluster file lists.
  std::vector<ReplicaId> listed() const {
    std::vector<ReplicaId> ids;
    for (const runtime::ReplicaConfig& replica : cluster_->config().replicas)
      ids.push_back(replica.id);
    return ids;
  }

  // Polls replica `id` until it answers as a serving member (not halted, and among the members:
  // a replica still joining or catching up reports the members without itself), at most
  // `timeout_ms`.
  bool wait_until_serving(ReplicaId id, uint64_t timeout_ms) const {
    const uint64_t deadline = net::monotonic_now_ns() + timeout_ms * 1'000'000;
    const net::Address& address = cluster_->config().replicas[id.value].address;
    while (net::monotonic_now_ns() < deadline) {
      std::string error;
      const std::optional<StatusReply> status = query_status(address, 1000, error);
      if (status && !status->halted &&
          std::find(status->members.begin(), status->members.end(), id) != status->members.end()) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // The whole log of replica `id` (LocalCluster::log_tail gives its end).
  std::string log_of(ReplicaId id) const {
    std::ifstream in(cluster_->log_path(id));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::filesystem::path dir_;
  std::unique_ptr<runtime::LocalCluster> cluster_;

 private:
  std::string dir_prefix_;
};

}  // namespace lockstep::integration
