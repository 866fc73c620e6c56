// Durable byzantine replicas as real processes (docs/DESIGN.md §11.8): 3 replicas (t = 1) keep
// their log and checkpoints under [storage] data_dir with sync = "always", so a reply leaves only
// once t+1 of them synced and certified its place in the order. They are killed with SIGKILL in
// the middle of a workload and started again from their disks, without --join. Each test checks
// what durability promises: the history (before and after the crash) is linearizable, no
// acknowledged append is lost, and every replica, the restarted ones included, ends serving with
// the same state.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "cluster_fixture.h"
#include "storage/wal.h"

namespace lockstep {
namespace {

class ByzantineDurabilityTest : public integration::ClusterTest {
 protected:
  ByzantineDurabilityTest() : ClusterTest("lockstep-byzantine-durability") {}

  void start_cluster() {
    runtime::LocalClusterOptions options = cluster_options();
    options.mode = runtime::Mode::kByzantine;
    options.replicas = 3;
    options.client.retry_interval_ms = 200;
    // Clients keep retrying through a whole-cluster restart: three processes recovering from
    // their disks, then waiting for each other (they redial with a backoff of up to 1 s).
    options.client.deadline_ms = 20'000;
    options.byzantine.delta_ms = integration::kByzantineTestDeltaMs;
    options.storage.data_dir = "data";
    options.storage.sync = storage::SyncPolicy::kAlways;
    start_cluster_with(options);
  }

  workload::Options load_options(double duration_s, uint32_t clients = 8) const {
    workload::Options load = ClusterTest::load_options(duration_s, clients);
    // No puts at all: every acknowledged append, before a crash or after, must be in the end.
    load.keys = 200;
    load.get_percent = 40;
    load.append_percent = 60;
    return load;
  }

  // The history's checks (check_history), then every replica serving with one state, running.
  // Returns the history with the final reads.
  std::vector<check::Operation> verify(const workload::Options& load,
                                       const workload::Report& report) {
    std::vector<check::Operation> history = check_history(load, report);
    for (uint32_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(wait_until_serving(ReplicaId{i}, 15'000))
          << "replica " << i << " does not serve; its log:\n"
          << cluster_->log_tail(ReplicaId{i}, 40);
    }
    const auto statuses = converged_statuses(listed());
    EXPECT_EQ(statuses.size(), 3u) << "replicas did not all answer";
    EXPECT_TRUE(workload::digests_equal(statuses));
    for (const auto& [id, status] : statuses) {
      EXPECT_GE(status.executed, report.completed) << "replica " << id;
      EXPECT_EQ(status.executed, statuses.begin()->second.executed) << "replica " << id;
      EXPECT_FALSE(status.halted) << "replica " << id;
    }
    for (uint32_t i = 0; i < 3; ++i) {
      EXPECT_TRUE(cluster_->running(ReplicaId{i})) << "replica " << i << " exited; its log:\n"
                                                   << cluster_->log_tail(ReplicaId{i}, 40);
    }
    return history;
  }

  // Appends acknowledged before `crash_ns` (workload clock: net::monotonic_now_ns) that are not
  // in their key's final value, as read back at the end of `history` (verify's); `acknowledged`
  // gets how many there were.
  static std::vector<std::string> lost_since(const std::vector<check::Operation>& history,
                                             uint64_t crash_ns, size_t& acknowledged) {
    // read_final_state's reads, by its default reader client id.
    constexpr uint64_t kFinalReader = 999'999;
    std::map<std::string, std::string> final_values;
    for (const check::Operation& op : history) {
      if (op.client == kFinalReader && op.kind == check::OpKind::kGet && op.output) {
        final_values[op.key] = *op.output;
      }
    }
    std::vector<std::string> lost;
    acknowledged = 0;
    for (const check::Operation& op : history) {
      if (op.kind != check::OpKind::kAppend || op.outcome != check::Outcome::kOk) continue;
      if (!op.return_ns || *op.return_ns >= crash_ns) continue;
      ++acknowledged;
      const auto value = final_values.find(op.key);
      if (value == final_values.end() || value->second.find(op.value) == std::string::npos) {
        lost.push_back(op.key + ": " + op.value);
      }
    }
    return lost;
  }

  // How many log records (after its checkpoint) a restarted replica found on its disk: the
  // storage line "recovered; checkpoint at log index N, M records after it" (no std::regex: GCC
  // 12 under ASan warns inside <regex>). Nullopt when it never recovered a non-fresh disk.
  static std::optional<uint64_t> records_recovered(const std::string& log) {
    const std::string marker = "recovered; checkpoint at log index ";
    const size_t at = log.find(marker);
    if (at == std::string::npos) return std::nullopt;
    const size_t records_at = log.find(", ", at + marker.size());
    if (records_at == std::string::npos) return std::nullopt;
    return std::stoull(log.substr(records_at + 2));
  }
};

TEST_F(ByzantineDurabilityTest, KillAllUnderLoadAndRestartLosesNoAcknowledgedWrite) {
  start_cluster();
  workload::Options load = load_options(/*duration_s=*/6);
  uint64_t crash_ns = 0;
  uint64_t restart_ns = 0;
  load.midway = [&] {
    crash_ns = net::monotonic_now_ns();
    for (uint32_t i = 0; i < 3; ++i)
      cluster_->kill(ReplicaId{i});
    // From their disks, without --join: whole-cluster recovery needs every replica back.
    cluster_->start_all();
    restart_ns = net::monotonic_now_ns();
  };
  const workload::Report report = workload::run(load);
  ASSERT_NE(crash_ns, 0u);
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u) << "clients retry until the cluster is back";
  EXPECT_EQ(report.certified, report.completed);
  EXPECT_TRUE(report.dissented.empty()) << workload::format_votes(report);
  // Operations called after the restart completed: the cluster served again. (Replies that
  // arrived before the crash may be read after it, so completions alone do not show that.)
  size_t after_restart = 0;
  uint64_t first_after_ns = UINT64_MAX;
  for (const check::Operation& op : report.history) {
    if (op.call_ns < restart_ns || !op.return_ns) continue;
    ++after_restart;
    first_after_ns = std::min(first_after_ns, *op.return_ns);
  }
  EXPECT_GT(after_restart, 20u);
  const double outage_s = after_restart == 0 ? 0 : (first_after_ns - crash_ns) / 1e9;
  std::cerr << report.completed << " operations in " << report.elapsed_s << " s, " << after_restart
            << " called after the restart; the first of those done " << outage_s
            << " s after the crash\n";
  RecordProperty("completed_after_restart", static_cast<int>(after_restart));
  RecordProperty("outage_ms", static_cast<int>(outage_s * 1000));

  const std::vector<check::Operation> history = verify(load, report);
  // Explicitly what the crash put at risk: everything acknowledged before it.
  size_t acknowledged = 0;
  const std::vector<std::string> lost = lost_since(history, crash_ns, acknowledged);
  EXPECT_GT(acknowledged, 50u);
  EXPECT_TRUE(lost.empty()) << lost.size() << " of " << acknowledged
                            << " appends acknowledged before the crash lost, e.g. " << lost.front();
  RecordProperty("appends_acknowledged_before_crash", static_cast<int>(acknowledged));

  for (uint32_t i = 0; i < 3; ++i) {
    const std::string log = log_of(ReplicaId{i});
    EXPECT_NE(log.find("storage: rebuilt from disk: "), std::string::npos) << i << ":\n" << log;
    EXPECT_NE(log.find("restarted from its disk: recovering"), std::string::npos) << i;
    EXPECT_NE(log.find("recovery completed: every replica came back"), std::string::npos) << i;
    // The recovered state is checkpointed before anything leaves (Output::loaded_state).
    EXPECT_NE(log.find("storage: loaded-state checkpoint"), std::string::npos) << i;
    EXPECT_EQ(log.find("restarted without its state (--join)"), std::string::npos) << i;
    // What it recovered from is what it logged before the crash.
    const std::optional<uint64_t> records = records_recovered(log);
    ASSERT_TRUE(records.has_value()) << i;
    EXPECT_GT(*records, 0u) << "replica " << i << " found nothing on its disk";
  }
}

// One replica killed mid-workload and restarted from its disk: the other two carry the service
// (t+1 = 2 matching replies) while it recovers and catches up, and it ends serving with the same
// state. It is started with --join, as an operator used to the non-durable mode would: ignored,
// because its disk holds its state.
TEST_F(ByzantineDurabilityTest, OneReplicaKilledAndRestartedFromItsDiskCatchesUp) {
  using Clock = std::chrono::steady_clock;
  start_cluster();
  const ReplicaId victim{2};
  std::future<workload::Report> running =
      std::async(std::launch::async, [load = load_options(8)] { return workload::run(load); });
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  cluster_->kill(victim);
  cluster_->start(victim, runtime::Misbehaviour::kNone, /*join=*/true);
  const auto restarted = Clock::now();
  EXPECT_TRUE(wait_until_serving(victim, 15'000)) << cluster_->log_tail(victim, 40);
  const double catch_up_s = std::chrono::duration<double>(Clock::now() - restarted).count();
  EXPECT_EQ(running.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "caught up only after the workload, in " << catch_up_s << " s";
  const workload::Report report = running.get();
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u);
  EXPECT_EQ(report.certified, report.completed);
  EXPECT_TRUE(report.dissented.empty()) << workload::format_votes(report);
  verify(load_options(8), report);

  const std::string log = log_of(victim);
  EXPECT_NE(log.find("--join ignored: "), std::string::npos) << log;
  EXPECT_EQ(log.find("restarted without its state (--join)"), std::string::npos) << log;
  EXPECT_NE(log.find("restarted from its disk: recovering"), std::string::npos) << log;
  EXPECT_NE(log.find("storage: rebuilt from disk: "), std::string::npos) << log;
  const std::optional<uint64_t> records = records_recovered(log);
  ASSERT_TRUE(records.has_value()) << log;
  EXPECT_GT(*records, 0u) << "it found nothing on its disk";
  // It caught up from the live replicas' vouched checkpoint, and checkpointed what it loaded.
  EXPECT_NE(log.find("loaded the state: the snapshot of the checkpoint at boundary"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("storage: loaded-state checkpoint"), std::string::npos) << log;
  // The others never stopped: this was no whole-cluster recovery.
  EXPECT_EQ(log.find("recovery completed"), std::string::npos) << log;
  EXPECT_EQ(log.find("could not load a state transfer"), std::string::npos) << log;
  for (uint32_t i = 0; i < 2; ++i) {
    const std::string other = log_of(ReplicaId{i});
    EXPECT_EQ(other.find("storage: rebuilt from disk"), std::string::npos) << i;
  }
  std::cerr << "serving " << catch_up_s << " s after the restart (" << *records
            << " records on its disk); " << report.completed << " operations\n";
  RecordProperty("catch_up_ms", static_cast<int>(catch_up_s * 1000));
}

}  // namespace
}  // namespace lockstep
