// Durable failstop replicas as real processes (docs/DESIGN.md §10): each keeps its log and
// checkpoints under [storage] data_dir with sync = "always", and is killed with SIGKILL in the
// middle of a workload, then started again from its disk. Each test checks what durability
// promises: the history (before and after the crash) is linearizable, no acknowledged append is
// lost, and every replica, the restarted ones included, ends with the same state in view 0.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "check/linearizability.h"
#include "runtime/local_cluster.h"
#include "storage/wal.h"
#include "workload/verify.h"
#include "workload/workload.h"

namespace lockstep {
namespace {

class DurabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("lockstep-durability-" + std::to_string(getpid()) + "-" + test->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    cluster_.reset();  // kills and reaps whatever still runs
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  void start_cluster(uint64_t checkpoint_entries = 100'000, uint64_t segment_mb = 64) {
    runtime::LocalClusterOptions options;
    options.replicas = 3;
    options.dir = dir_;
    options.binary = LOCKSTEP_BINARY;
    // Generous: a restart on a loaded machine must not be mistaken for a failure (which would
    // remove the replica, and this test is about it staying a member).
    options.timeouts.failure_timeout_ms = 2000;
    options.timeouts.relay_timeout_ms = 30;
    options.client.retry_interval_ms = 100;
    options.client.deadline_ms = 10'000;
    options.storage.data_dir = "data";
    options.storage.sync = storage::SyncPolicy::kAlways;
    options.storage.checkpoint_entries = checkpoint_entries;
    options.storage.segment_mb = segment_mb;
    cluster_ = std::make_unique<runtime::LocalCluster>(options);
    cluster_->start_all();
    cluster_->wait_until_listening();
  }

  workload::Options load_options() {
    workload::Options load;
    load.client = cluster_->client_options();
    load.clients = 16;
    load.keys = 20;
    load.duration_s = 4;
    // Mostly appends, few puts: the audit can only vouch for appends no later put overwrote.
    load.get_percent = 40;
    load.append_percent = 55;
    load.progress = false;
    return load;
  }

  // Reads every key back into the history, then checks the whole history: nothing acknowledged
  // lost, linearizable, and every replica converged to one state in view 0 with all members.
  void verify(const workload::Options& load, const workload::Report& report) {
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

    std::vector<std::pair<uint32_t, net::Address>> addresses;
    for (const runtime::ReplicaConfig& replica : cluster_->config().replicas)
      addresses.emplace_back(replica.id.value, replica.address);
    const auto statuses = workload::converged_statuses(addresses);
    ASSERT_EQ(statuses.size(), 3u) << "replicas did not all answer";
    EXPECT_TRUE(workload::digests_equal(statuses));
    const std::vector<ReplicaId> everyone{ReplicaId{0}, ReplicaId{1}, ReplicaId{2}};
    for (const auto& [id, status] : statuses) {
      EXPECT_EQ(status.view, ViewNumber{0}) << "replica " << id << "; its log:\n"
                                            << cluster_->log_tail(ReplicaId{id});
      EXPECT_EQ(status.members, everyone) << "replica " << id;
      EXPECT_FALSE(status.halted) << "replica " << id;
      EXPECT_EQ(status.executed, statuses.begin()->second.executed);
    }
    for (uint32_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(cluster_->running(ReplicaId{i})) << "replica " << i << " exited; its log:\n"
                                                   << cluster_->log_tail(ReplicaId{i});
    }
  }

  std::string log_of(ReplicaId id) const {
    std::ifstream in(cluster_->log_path(id));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::filesystem::path dir_;
  std::unique_ptr<runtime::LocalCluster> cluster_;
};

TEST_F(DurabilityTest, AReplicaKilledUnderLoadAndRestartedCarriesOnAsTheSameMember) {
  start_cluster();
  const ReplicaId victim{1};
  workload::Options load = load_options();
  load.midway = [&] { cluster_->restart(victim); };  // SIGKILL, then at once a new process
  const workload::Report report = workload::run(load);
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u);
  verify(load, report);
  const std::string log = log_of(victim);
  EXPECT_NE(log.find("storage: rebuilt from disk: view 0"), std::string::npos) << log;
}

TEST_F(DurabilityTest, AWholeClusterKilledUnderLoadLosesNothingAcknowledged) {
  start_cluster();
  workload::Options load = load_options();
  // No puts at all: every acknowledged append, before the crash or after, must be in the end.
  load.keys = 200;
  load.get_percent = 40;
  load.append_percent = 60;
  load.midway = [&] {
    for (uint32_t i = 0; i < 3; ++i)
      cluster_->kill(ReplicaId{i});
    cluster_->start_all();
  };
  const workload::Report report = workload::run(load);
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u) << "clients retry until the cluster is back";
  verify(load, report);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_NE(log_of(ReplicaId{i}).find("storage: rebuilt from disk"), std::string::npos) << i;
  }
}

// Bytes of every file in a directory.
uint64_t directory_bytes(const std::filesystem::path& dir) {
  uint64_t total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

TEST_F(DurabilityTest, ARestartRecoversFromACheckpointAndTheLogStaysSmall) {
  // Checkpoints every 200 entries; 1 MB segments so that truncation shows in the files.
  start_cluster(/*checkpoint_entries=*/200, /*segment_mb=*/1);
  const ReplicaId victim{2};
  workload::Options load = load_options();
  load.value_bytes = 2000;  // puts of 2 KB: the log outgrows several segments during the run
  const workload::Report report = workload::run(load);
  ASSERT_GT(report.completed, 500u);
  cluster_->restart(victim);
  cluster_->wait_until_listening();
  verify(load, report);

  // It recovered from a checkpoint, not from the start of the log.
  const std::string log = log_of(victim);
  // "recovered; checkpoint at log index N, M records" (no std::regex: GCC 12 under ASan warns
  // inside <regex> and warnings are errors).
  const std::string marker = "recovered; checkpoint at log index ";
  const size_t at = log.find(marker);
  ASSERT_NE(at, std::string::npos) << log;
  size_t index_end = 0;
  const uint64_t log_index = std::stoull(log.substr(at + marker.size()), &index_end);
  EXPECT_GT(log_index, 1u);
  const size_t records_at = at + marker.size() + index_end + 2;  // past ", "
  RecordProperty("records_after_checkpoint",
                 log.substr(records_at, log.find(' ', records_at) - records_at));
  // The log was truncated below the checkpoints: its first segment is gone, and what is on disk
  // is a few segments and one checkpoint, however long the run.
  const std::filesystem::path data = cluster_->data_path(victim);
  EXPECT_FALSE(std::filesystem::exists(data / storage::Wal::segment_name(1)));
  const uint64_t bytes = directory_bytes(data);
  RecordProperty("disk_bytes", std::to_string(bytes));
  EXPECT_LT(bytes, uint64_t{4} << 20);
  size_t checkpoints = 0;
  for (const auto& entry : std::filesystem::directory_iterator(data))
    checkpoints += entry.path().extension() == ".ckpt";
  EXPECT_EQ(checkpoints, 1u);
}

}  // namespace
}  // namespace lockstep
