// Failstop reconfiguration with real processes (docs/DESIGN.md §12): a replica whose disk was wiped
// rejoins by state transfer, and an operator adds a spare and removes a member
// (`lockstep admin`, runtime/admin.h), all while a workload runs. Each test then checks what the
// change promises: the history is linearizable, no acknowledged append is lost, and the members
// of the final view are the expected ones, serve, and hold the same state.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster_fixture.h"
#include "runtime/admin.h"

namespace lockstep {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

class ReconfigurationTest : public integration::ClusterTest {
 protected:
  ReconfigurationTest() : ClusterTest("lockstep-reconfiguration") {}

  void make_cluster(uint32_t replicas, uint32_t spares, bool durable) {
    runtime::LocalClusterOptions options = cluster_options();
    options.replicas = replicas;
    options.spares = spares;
    // Generous: a loaded machine must not make a member look failed (which would remove it and
    // change the membership this test checks).
    options.timeouts.failure_timeout_ms = 2000;
    options.timeouts.relay_timeout_ms = 30;
    if (durable) {
      options.storage.data_dir = "data";
      options.storage.sync = storage::SyncPolicy::kAlways;
    }
    cluster_ = std::make_unique<runtime::LocalCluster>(options);
  }

  runtime::AdminOptions admin_options() const {
    runtime::AdminOptions options;
    options.wait_ms = 15'000;
    return options;
  }

  // `lockstep admin` through the library, as the tool runs it; prints what it printed.
  int admin(MembershipChange change, uint32_t replica, std::string* errors = nullptr) {
    std::ostringstream out;
    std::ostringstream err;
    const int code = runtime::run_admin(cluster_->config(), change, ReplicaId{replica},
                                        admin_options(), out, err);
    std::cerr << out.str() << err.str();
    if (errors != nullptr) *errors = err.str();
    return code;
  }

  // Checks the whole history (check_history); then every replica of `members` serves in one view
  // whose members are exactly `members`, and all hold the same state.
  void verify(const workload::Options& load, const workload::Report& report,
              const std::vector<ReplicaId>& members) {
    check_history(load, report);
    const auto statuses = converged_statuses(members);
    ASSERT_EQ(statuses.size(), members.size()) << "members did not all answer";
    EXPECT_TRUE(workload::digests_equal(statuses));
    for (const auto& [id, status] : statuses) {
      EXPECT_EQ(status.members, members) << "replica " << id << "; its log ends with:\n"
                                         << cluster_->log_tail(ReplicaId{id});
      EXPECT_EQ(status.view, statuses.begin()->second.view) << "replica " << id;
      EXPECT_FALSE(status.halted) << "replica " << id;
      EXPECT_EQ(status.executed, statuses.begin()->second.executed) << "replica " << id;
      EXPECT_TRUE(cluster_->running(ReplicaId{id})) << "replica " << id << " exited";
    }
  }
};

TEST_F(ReconfigurationTest, AWipedReplicaRejoinsByStateTransferUnderLoad) {
  const auto started = Clock::now();
  make_cluster(/*replicas=*/3, /*spares=*/0, /*durable=*/true);
  cluster_->start_all();
  cluster_->wait_until_listening();
  const ReplicaId victim{2};
  workload::Options load = load_options(/*duration_s=*/6);
  std::future<workload::Report> running =
      std::async(std::launch::async, [&] { return workload::run(load); });
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  // A lost disk: SIGKILL, its data directory deleted, and a new process that joins.
  cluster_->kill(victim);
  cluster_->wipe(victim);
  ASSERT_FALSE(std::filesystem::exists(cluster_->data_path(victim)));
  cluster_->start_joining(victim);
  const auto restarted = Clock::now();
  EXPECT_TRUE(wait_until_serving(victim, 15'000)) << cluster_->log_tail(victim, 40);
  const double rejoin_s = seconds_since(restarted);
  // The rejoin finished while the workload still ran (from 2 s of 6 s).
  EXPECT_EQ(running.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "rejoined only after the workload, in " << rejoin_s << " s";
  const workload::Report report = running.get();
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u);
  verify(load, report, {ReplicaId{0}, ReplicaId{1}, ReplicaId{2}});

  const std::string log = log_of(victim);
  EXPECT_NE(log.find("storage: /"), std::string::npos);
  EXPECT_NE(log.find("asking the members to add this replica"), std::string::npos) << log;
  EXPECT_NE(log.find("loaded the state of replica"), std::string::npos) << log;
  EXPECT_NE(log.find("loaded-state checkpoint at log index"), std::string::npos) << log;
  // Its disk now holds the loaded state: killed and restarted (without --join) it recovers it and
  // carries on as the same member.
  cluster_->kill(victim);
  cluster_->start(victim);
  EXPECT_TRUE(wait_until_serving(victim, 15'000)) << cluster_->log_tail(victim, 40);
  const auto statuses = converged_statuses(listed());
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_TRUE(workload::digests_equal(statuses));
  RecordProperty("rejoin_ms", static_cast<int>(rejoin_s * 1000));
  RecordProperty("wall_ms", static_cast<int>(seconds_since(started) * 1000));
}

// A member paused past the failure timeout is removed; woken, it halts on the others' word. Started
// again from the same disk (as an operator or a supervisor would), it must ask to be added back
// rather than recover the view it was removed from and halt again (found by a soak).
TEST_F(ReconfigurationTest, AReplicaRemovedForBeingSlowRejoinsWhenRestartedFromItsDisk) {
  make_cluster(/*replicas=*/3, /*spares=*/0, /*durable=*/true);
  cluster_->start_all();
  cluster_->wait_until_listening();
  const ReplicaId victim{2};
  workload::Options load = load_options(/*duration_s=*/9);
  std::future<workload::Report> running =
      std::async(std::launch::async, [&] { return workload::run(load); });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  cluster_->signal(victim, SIGSTOP);
  std::this_thread::sleep_for(std::chrono::milliseconds(3500));  // failure timeout: 2 s
  cluster_->signal(victim, SIGCONT);
  const auto woken = Clock::now();
  while (cluster_->running(victim) && seconds_since(woken) < 10)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_FALSE(cluster_->running(victim)) << "it should halt once told it was removed\n"
                                          << cluster_->log_tail(victim, 20);
  EXPECT_NE(log_of(victim).find("removed from the membership; halting"), std::string::npos);
  cluster_->start(victim);  // its own disk, no --join
  EXPECT_TRUE(wait_until_serving(victim, 15'000)) << cluster_->log_tail(victim, 40);
  const std::string log = log_of(victim);
  EXPECT_NE(log.find("asking the members to add this replica"), std::string::npos) << log;
  EXPECT_NE(log.find("loaded the state of replica"), std::string::npos) << log;
  const workload::Report report = running.get();
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u);
  verify(load, report, {ReplicaId{0}, ReplicaId{1}, ReplicaId{2}});
}

// Not durable (no data_dir): the spare comes up from a state transfer alone.
TEST_F(ReconfigurationTest, AnOperatorAddsASpareAndRemovesAMemberUnderLoad) {
  const auto started = Clock::now();
  make_cluster(/*replicas=*/3, /*spares=*/1, /*durable=*/false);
  const ReplicaId spare{3};
  const ReplicaId leaving{0};
  cluster_->start_members();
  cluster_->wait_until_listening();
  workload::Options load = load_options(/*duration_s=*/8);
  std::future<workload::Report> running =
      std::async(std::launch::async, [&] { return workload::run(load); });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  cluster_->start_joining(spare);
  cluster_->wait_until_listening();
  const auto add_started = Clock::now();
  ASSERT_EQ(admin(MembershipChange::kAdd, spare.value), runtime::kAdminDone)
      << cluster_->log_tail(spare, 40);
  const double add_s = seconds_since(add_started);
  const auto remove_started = Clock::now();
  ASSERT_EQ(admin(MembershipChange::kRemove, leaving.value), runtime::kAdminDone)
      << cluster_->log_tail(leaving, 40);
  const double remove_s = seconds_since(remove_started);
  const double changes_done_s = seconds_since(started);
  // Both changes were made while the workload ran (from 1.5 s of 8 s).
  EXPECT_EQ(running.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the membership changed only after the workload";
  const workload::Report report = running.get();
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u);

  // The removed member halted (exit 3) once it learnt; the others carry on without it.
  const std::optional<int> status = cluster_->wait(leaving, 10'000);
  ASSERT_TRUE(status.has_value()) << "replica 0 still runs after its removal";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == runtime::kExitHalted)
      << runtime::describe_wait_status(*status);
  verify(load, report, {ReplicaId{1}, ReplicaId{2}, ReplicaId{3}});

  const std::string log = log_of(spare);
  EXPECT_NE(log.find("loaded the state of replica"), std::string::npos) << log;
  RecordProperty("add_ms", static_cast<int>(add_s * 1000));
  RecordProperty("remove_ms", static_cast<int>(remove_s * 1000));
  RecordProperty("changes_done_at_ms", static_cast<int>(changes_done_s * 1000));
  RecordProperty("wall_ms", static_cast<int>(seconds_since(started) * 1000));
}

// Runs the real `lockstep` binary; its exit code, with stdout and stderr in `output`.
int run_tool(const std::string& arguments, std::string& output) {
  auto [code, printed] =
      integration::run_command(std::string(LOCKSTEP_BINARY) + " " + arguments + " 2>&1");
  output += printed;
  return code;
}

TEST_F(ReconfigurationTest, RefusesToRemoveTheLastMemberOrToAddAnUnlistedReplica) {
  make_cluster(/*replicas=*/1, /*spares=*/1, /*durable=*/false);
  cluster_->start_members();
  cluster_->wait_until_listening();
  const std::string config = "--config " + cluster_->config_path().string();

  // The last member: the replica itself refuses, and the tool says why.
  std::string errors;
  EXPECT_EQ(admin(MembershipChange::kRemove, 0, &errors), runtime::kAdminRefused);
  EXPECT_NE(errors.find("cannot remove the last member"), std::string::npos) << errors;
  std::string output;
  EXPECT_EQ(run_tool("admin " + config + " --timeout 1000 remove-replica 0", output),
            runtime::kAdminRefused)
      << output;
  EXPECT_NE(output.find("replica 0: refused: cannot remove the last member"), std::string::npos)
      << output;
  EXPECT_NE(output.find("remove-replica 0: refused: no member accepted the change"),
            std::string::npos)
      << output;

  // An id the file does not list: the tool stops before asking anyone...
  output.clear();
  EXPECT_EQ(run_tool("admin " + config + " add-replica 7", output), runtime::kAdminUsage) << output;
  EXPECT_NE(output.find("replica 7 is not listed in the cluster file (ids 0..1)"),
            std::string::npos)
      << output;
  // ...and a replica asked directly refuses it as well.
  std::string error;
  const std::optional<AdminReply> reply = runtime::send_admin_request(
      cluster_->config().replicas[0].address,
      AdminRequest{42, MembershipChange::kAdd, ReplicaId{7}}, 2000, error);
  ASSERT_TRUE(reply.has_value()) << error;
  EXPECT_EQ(reply->nonce, 42u);
  EXPECT_EQ(reply->replica, ReplicaId{0});
  EXPECT_FALSE(reply->accepted);
  EXPECT_NE(reply->detail.find("no replica 7"), std::string::npos) << reply->detail;

  // Adding a member, removing a non-member: refused with the reason.
  errors.clear();
  EXPECT_EQ(admin(MembershipChange::kAdd, 0, &errors), runtime::kAdminRefused);
  EXPECT_NE(errors.find("replica 0 is already a member"), std::string::npos) << errors;
  errors.clear();
  EXPECT_EQ(admin(MembershipChange::kRemove, 1, &errors), runtime::kAdminRefused);
  EXPECT_NE(errors.find("replica 1 is not a member"), std::string::npos) << errors;

  // An add that is accepted but whose replica never comes: the tool says so, exit 3.
  output.clear();
  EXPECT_EQ(run_tool("admin " + config + " --timeout 500 add-replica 1", output),
            runtime::kAdminNotVisible)
      << output;
  EXPECT_NE(output.find("replica 0: accepted"), std::string::npos) << output;
  EXPECT_NE(output.find("--id 1 --join"), std::string::npos) << output;

  // Nothing changed: replica 0 is still the only member, and serves.
  std::optional<StatusReply> status =
      query_status(cluster_->config().replicas[0].address, 2000, error);
  ASSERT_TRUE(status.has_value()) << error;
  EXPECT_EQ(status->members, std::vector<ReplicaId>{ReplicaId{0}});
  EXPECT_FALSE(status->halted);
}

}  // namespace
}  // namespace lockstep
