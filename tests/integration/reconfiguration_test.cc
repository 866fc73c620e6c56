// Failstop reconfiguration with real processes (docs/DESIGN.md §12): a replica whose disk was wiped
// rejoins by state transfer, and an operator adds a spare and removes a member
// (`lockstep admin`, runtime/admin.h), all while a workload runs. Each test then checks what the
// change promises: the history is linearizable, no acknowledged append is lost, and the members
// of the final view are the expected ones, serve, and hold the same state.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "check/linearizability.h"
#include "client/status.h"
#include "net/event_loop.h"
#include "runtime/admin.h"
#include "runtime/local_cluster.h"
#include "workload/verify.h"
#include "workload/workload.h"

namespace lockstep {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

class ReconfigurationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("lockstep-reconfiguration-" + std::to_string(getpid()) + "-" + test->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    cluster_.reset();  // kills and reaps whatever still runs
    if (!HasFailure()) {
      std::filesystem::remove_all(dir_);
    } else {
      std::cerr << "replica logs kept in " << dir_ << "\n";
    }
  }

  void make_cluster(uint32_t replicas, uint32_t spares, bool durable) {
    runtime::LocalClusterOptions options;
    options.replicas = replicas;
    options.spares = spares;
    options.dir = dir_;
    options.binary = LOCKSTEP_BINARY;
    // Generous: a loaded machine must not make a member look failed (which would remove it and
    // change the membership this test checks).
    options.timeouts.failure_timeout_ms = 2000;
    options.timeouts.relay_timeout_ms = 30;
    options.client.retry_interval_ms = 100;
    options.client.deadline_ms = 10'000;
    if (durable) {
      options.storage.data_dir = "data";
      options.storage.sync = storage::SyncPolicy::kAlways;
    }
    cluster_ = std::make_unique<runtime::LocalCluster>(options);
  }

  workload::Options load_options(double duration_s) {
    workload::Options load;
    load.client = cluster_->client_options();
    load.clients = 16;
    load.keys = 20;
    load.duration_s = duration_s;
    // Mostly appends, few puts: the audit can only vouch for appends no later put overwrote.
    load.get_percent = 40;
    load.append_percent = 55;
    load.progress = false;
    return load;
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

  // Polls replica `id` until it answers as a serving member, at most `timeout_ms`.
  bool wait_until_serving(ReplicaId id, uint64_t timeout_ms) {
    const uint64_t deadline = net::monotonic_now_ns() + timeout_ms * 1'000'000;
    const net::Address& address = cluster_->config().replicas[id.value].address;
    while (net::monotonic_now_ns() < deadline) {
      std::string error;
      std::optional<StatusReply> status = query_status(address, 1000, error);
      if (status && !status->halted &&
          std::find(status->members.begin(), status->members.end(), id) != status->members.end()) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::string log_of(ReplicaId id) const {
    std::ifstream in(cluster_->log_path(id));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // Reads every key back into the history and checks it: nothing acknowledged lost,
  // linearizable; then every replica of `members` serves in one view whose members are exactly
  // `members`, and all hold the same state.
  void verify(const workload::Options& load, const workload::Report& report,
              const std::vector<ReplicaId>& members) {
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
    for (ReplicaId id : members)
      addresses.emplace_back(id.value, cluster_->config().replicas[id.value].address);
    const auto statuses = workload::converged_statuses(addresses);
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

  std::filesystem::path dir_;
  std::unique_ptr<runtime::LocalCluster> cluster_;
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
  std::vector<std::pair<uint32_t, net::Address>> addresses;
  for (const runtime::ReplicaConfig& replica : cluster_->config().replicas)
    addresses.emplace_back(replica.id.value, replica.address);
  const auto statuses = workload::converged_statuses(addresses);
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_TRUE(workload::digests_equal(statuses));
  RecordProperty("rejoin_ms", static_cast<int>(rejoin_s * 1000));
  RecordProperty("wall_ms", static_cast<int>(seconds_since(started) * 1000));
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
  const std::string command_line = std::string(LOCKSTEP_BINARY) + " " + arguments + " 2>&1";
  FILE* pipe = popen(command_line.c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0)
    output.append(buffer, n);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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
