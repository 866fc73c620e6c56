// Durable failstop replicas as real processes (docs/DESIGN.md §10): each keeps its log and
// checkpoints under [storage] data_dir with sync = "always", and is killed with SIGKILL in the
// middle of a workload, then started again from its disk. Each test checks what durability
// promises: the history (before and after the crash) is linearizable, no acknowledged append is
// lost, and every replica, the restarted ones included, ends with the same state in view 0.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cluster_fixture.h"
#include "storage/wal.h"

namespace lockstep {
namespace {

class DurabilityTest : public integration::ClusterTest {
 protected:
  DurabilityTest() : ClusterTest("lockstep-durability") {}

  void start_cluster(uint64_t checkpoint_entries = 100'000, uint64_t segment_mb = 64) {
    runtime::LocalClusterOptions options = cluster_options();
    options.replicas = 3;
    // Generous: a restart on a loaded machine must not be mistaken for a failure (which would
    // remove the replica, and this test is about it staying a member).
    options.timeouts.failure_timeout_ms = 2000;
    options.timeouts.relay_timeout_ms = 30;
    options.storage.data_dir = "data";
    options.storage.sync = storage::SyncPolicy::kAlways;
    options.storage.checkpoint_entries = checkpoint_entries;
    options.storage.segment_mb = segment_mb;
    start_cluster_with(options);
  }

  workload::Options load_options() { return ClusterTest::load_options(/*duration_s=*/4); }

  // Checks the whole history (check_history), then that every replica converged to one state in
  // view 0 with all members.
  void verify(const workload::Options& load, const workload::Report& report) {
    check_history(load, report);
    const auto statuses = converged_statuses(listed());
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
