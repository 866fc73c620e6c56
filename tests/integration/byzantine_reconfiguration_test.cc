// Byzantine membership changes signed by an administrator (docs/DESIGN.md §11.9) with real
// processes on loopback: `lockstep admin --key dir/admin.key` adds a spare and removes a member
// of a 3-replica cluster (t = 1) while a workload runs, and refuses a change signed with another
// key. Each test checks what the change promises: the history is linearizable, no acknowledged
// append is lost, every completion is certified with nobody dissenting, and the members of the
// final epoch serve it with the same state.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <future>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "cluster_fixture.h"
#include "crypto/crypto.h"
#include "crypto/membership.h"
#include "net/event_loop.h"
#include "runtime/admin.h"
#include "runtime/credentials.h"

namespace lockstep {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs the real `lockstep` binary; its exit code, with stdout and stderr in `output`.
int run_tool(const std::string& arguments, std::string& output) {
  auto [code, printed] =
      integration::run_command(std::string(LOCKSTEP_BINARY) + " " + arguments + " 2>&1");
  output += printed;
  return code;
}

// The decimal number that follows the first `prefix` in `text`; 0 if there is none.
uint64_t number_after(const std::string& text, const std::string& prefix) {
  const size_t at = text.find(prefix);
  if (at == std::string::npos) return 0;
  uint64_t value = 0;
  for (size_t i = at + prefix.size(); i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i)
    value = value * 10 + static_cast<uint64_t>(text[i] - '0');
  return value;
}

class ByzantineReconfigurationTest : public integration::ClusterTest {
 protected:
  ByzantineReconfigurationTest() : ClusterTest("lockstep-byzantine-reconfiguration") {}

  // 3 members (t = 1) and `spares` spares, with the administrator's key in dir/admin.key; the
  // members are started, the spares are not.
  void start_members(uint32_t spares) {
    runtime::LocalClusterOptions options = cluster_options();
    options.mode = runtime::Mode::kByzantine;
    options.replicas = 3;
    options.spares = spares;
    options.client.retry_interval_ms = 200;
    options.byzantine.delta_ms = integration::kByzantineTestDeltaMs;
    cluster_ = std::make_unique<runtime::LocalCluster>(options);
    ASSERT_TRUE(cluster_->has_administrator());
    cluster_->start_members();
    cluster_->wait_until_listening();
  }

  workload::Options load_options(double duration_s) const {
    workload::Options load = ClusterTest::load_options(duration_s, /*clients=*/8);
    load.append_percent = 50;
    return load;
  }

  // `lockstep admin --key KEY_FILE CHANGE REPLICA` with the real binary; prints what it printed.
  // The change takes effect 2 s after it is signed (the default is 3 s): both changes and the
  // spare's catch-up then fit within the workload, so the clients live through both epochs.
  int admin(const std::string& change, ReplicaId replica, const std::filesystem::path& key_file,
            std::string& output) {
    const int code = run_tool("admin --config " + cluster_->config_path().string() + " --key " +
                                  key_file.string() + " --timeout 15000 --effective-in-ms 2000 " +
                                  change + " " + std::to_string(replica.value),
                              output);
    std::cerr << "$ lockstep admin " << change << " " << replica.value << " -> exit " << code
              << "\n"
              << output;
    return code;
  }

  // Waits until replica `id`, started with --join, takes inputs: every peer has redialled it
  // (they back off up to 1 s) or it stopped waiting for them (3 s). Until then it drops client
  // requests and holds the administrator's (runtime/replica_server.h).
  bool wait_until_taking_inputs(ReplicaId id, uint64_t timeout_ms) const {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      const std::string log = log_of(id);
      if (log.find("catching up: every peer connected") != std::string::npos ||
          log.find("taking part without them for now") != std::string::npos) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  std::vector<ReplicaId> members_of_epoch_0() const {
    return {ReplicaId{0}, ReplicaId{1}, ReplicaId{2}};
  }
};

// The spare (replica 3) starts with --join a second into the workload and waits, serving nothing;
// the administrator adds it (epoch 1: [0,1,2,3]) and, once it serves, removes replica 0 (epoch 2:
// [1,2,3]). Not durable: the spare comes up from a checkpoint the members vouched for.
TEST_F(ByzantineReconfigurationTest, AnAdministratorAddsASpareAndRemovesAMemberUnderLoad) {
  const auto started = Clock::now();
  start_members(/*spares=*/1);
  const ReplicaId spare{3};
  const ReplicaId leaving{0};
  const std::vector<ReplicaId> final_members = {ReplicaId{1}, ReplicaId{2}, spare};
  const workload::Options load = load_options(/*duration_s=*/10);
  std::future<workload::Report> running =
      std::async(std::launch::async, [&load] { return workload::run(load); });
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  cluster_->start_joining(spare);
  cluster_->wait_until_listening();
  // At once: the spare may not take inputs yet (its peers redial it with a backoff); it holds
  // the administrator's request until it does, and so still learns the change before its
  // boundary (it loads exactly there, checked below).

  const auto add_started = Clock::now();
  std::string added;
  ASSERT_EQ(admin("add-replica", spare, cluster_->admin_key_path(), added), runtime::kAdminDone)
      << added << cluster_->log_tail(spare, 40);
  const double add_s = seconds_since(add_started);
  EXPECT_NE(added.find("replicas: epoch 1: members [0,1,2,3] from "), std::string::npos) << added;
  EXPECT_NE(added.find("members: [0, 1, 2, 3] (epoch 1)"), std::string::npos) << added;

  const auto remove_started = Clock::now();
  std::string removed;
  ASSERT_EQ(admin("remove-replica", leaving, cluster_->admin_key_path(), removed),
            runtime::kAdminDone)
      << removed << cluster_->log_tail(leaving, 40);
  const double remove_s = seconds_since(remove_started);
  EXPECT_NE(removed.find("current configuration: epoch 1, members [0, 1, 2, 3]"), std::string::npos)
      << removed;
  EXPECT_NE(removed.find("replicas: epoch 2: members [1,2,3] from "), std::string::npos) << removed;
  EXPECT_NE(removed.find("members: [1, 2, 3] (epoch 2)"), std::string::npos) << removed;
  const double changes_done_s = seconds_since(started);
  // Both changes took effect while the workload ran (from 1 s of 10 s).
  EXPECT_EQ(running.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the membership changed only after the workload, at " << changes_done_s << " s";

  const workload::Report report = running.get();
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u);
  EXPECT_EQ(report.certified, report.completed);
  EXPECT_GE(report.fewest_certificate_proofs, 2u);
  EXPECT_TRUE(report.dissented.empty()) << workload::format_votes(report);
  // The spare signed accepted outputs once it was a member.
  const auto spare_agreed = report.agreed.find(spare.value);
  EXPECT_TRUE(spare_agreed != report.agreed.end() && spare_agreed->second > 0)
      << workload::format_votes(report);

  // The removed member halted (exit 3) once the change took effect.
  const std::optional<int> status = cluster_->wait(leaving, 10'000);
  ASSERT_TRUE(status.has_value()) << "replica 0 still runs after its removal\n"
                                  << cluster_->log_tail(leaving, 20);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == runtime::kExitHalted)
      << runtime::describe_wait_status(*status);
  EXPECT_NE(log_of(leaving).find("removed from the membership by an administrator's change"),
            std::string::npos)
      << cluster_->log_tail(leaving, 20);

  check_history(load, report);
  const auto statuses = converged_statuses(final_members);
  ASSERT_EQ(statuses.size(), final_members.size()) << "the members of epoch 2 did not all answer";
  EXPECT_TRUE(workload::digests_equal(statuses));
  for (const auto& [id, replica_status] : statuses) {
    EXPECT_EQ(replica_status.epoch, 2u) << "replica " << id;
    EXPECT_EQ(replica_status.members, final_members) << "replica " << id << "; its log ends with:\n"
                                                     << cluster_->log_tail(ReplicaId{id});
    EXPECT_FALSE(replica_status.halted) << "replica " << id;
    EXPECT_EQ(replica_status.executed, statuses.begin()->second.executed) << "replica " << id;
    EXPECT_TRUE(cluster_->running(ReplicaId{id})) << "replica " << id << " exited";
  }

  // The spare came up from a checkpoint t+1 members vouched for, not from replaying the order.
  const std::string log = log_of(spare);
  EXPECT_NE(log.find("catching up: t+1 replicas signed the same digest"), std::string::npos) << log;
  EXPECT_NE(log.find("loaded the state: the snapshot of the checkpoint at boundary"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("could not load a state transfer"), std::string::npos) << log;
  // It learnt the change from the administrator's request itself, so it could load the first
  // checkpoint where it is a member: the one at the change's boundary, or (should the votes for
  // that one come before the state below it is decided here) a later one.
  const uint64_t effective_us = number_after(added, "replicas: epoch 1: members [0,1,2,3] from ");
  const uint64_t loaded_us =
      number_after(log, "loaded the state: the snapshot of the checkpoint at boundary ");
  EXPECT_GE(loaded_us, effective_us);
  std::cerr << "epoch 1 from " << effective_us << " us; the spare loaded the checkpoint at "
            << loaded_us << " us (+" << (loaded_us - effective_us) / 1000 << " ms)\n";
  RecordProperty("loaded_after_effective_ms", static_cast<int>((loaded_us - effective_us) / 1000));
  std::cerr << "add " << add_s << " s, remove " << remove_s << " s, both done at " << changes_done_s
            << " s; " << report.completed << " operations; wall time " << seconds_since(started)
            << " s\n";
  RecordProperty("add_ms", static_cast<int>(add_s * 1000));
  RecordProperty("remove_ms", static_cast<int>(remove_s * 1000));
  RecordProperty("changes_done_at_ms", static_cast<int>(changes_done_s * 1000));
  RecordProperty("wall_ms", static_cast<int>(seconds_since(started) * 1000));
}

// A key that is not the cluster's byzantine.admin_public_key: the tool stops before sending
// anything (exit 2, saying so); and the same change signed with that key and sent anyway, as a
// forger would, is not obeyed by the replicas.
TEST_F(ByzantineReconfigurationTest, RefusesAChangeWithoutTheAdministratorsKey) {
  start_members(/*spares=*/1);
  const ReplicaId spare{3};
  cluster_->start_joining(spare);
  cluster_->wait_until_listening();
  // The forged change below must reach the spare too: it is the one replica that takes a change
  // on the strength of its signature alone.
  ASSERT_TRUE(wait_until_taking_inputs(spare, 5000)) << cluster_->log_tail(spare, 20);
  // A key pair of its own (written here: the sanitizer build has no `lockstep keygen`).
  const std::filesystem::path wrong_key = dir_ / "not-the-admin.key";
  std::array<uint8_t, 32> seed{};
  seed.fill(0x5a);
  crypto::write_key_file(wrong_key.string(),
                         crypto::derive_key_pair(crypto::Scheme::kEd25519, seed));

  std::string output;
  EXPECT_EQ(admin("add-replica", spare, wrong_key, output), runtime::kAdminUsage);
  EXPECT_NE(output.find("is not the cluster's byzantine.admin_public_key"), std::string::npos)
      << output;
  EXPECT_NE(output.find("wrong key file"), std::string::npos) << output;
  // The client principal's key is not the administrator's either.
  output.clear();
  EXPECT_EQ(admin("remove-replica", ReplicaId{0}, cluster_->client_key_path(), output),
            runtime::kAdminUsage);
  EXPECT_NE(output.find("wrong key file"), std::string::npos) << output;
  // No key at all.
  output.clear();
  EXPECT_EQ(
      run_tool("admin --config " + cluster_->config_path().string() + " add-replica 3", output),
      runtime::kAdminUsage)
      << output;
  EXPECT_NE(output.find("signed by its administrator: give the administrator's key file"),
            std::string::npos)
      << output;

  // The forger's change: signed as the administrator's principal with the wrong key.
  const runtime::ClusterConfig& config = cluster_->config();
  runtime::ClientCredentials forger;
  forger.principal = kAdminPrincipal;
  forger.signer =
      crypto::make_signer(crypto::Scheme::kEd25519, crypto::read_key_file(wrong_key.string()));
  forger.verifier = crypto::make_verifier(crypto::Scheme::kEd25519, config.key_directory());
  NetworkClientOptions client_options = runtime::network_client_options(config, &forger);
  client_options.session.deadline_ns = 3'000'000'000;
  const uint64_t grid_us = config.byzantine->checkpoint_interval_ms * 1000;
  const uint64_t effective_us = (net::wall_now_us() + 2'000'000 + grid_us - 1) / grid_us * grid_us;
  const ConfigurationChange forged{
      1, {ReplicaId{0}, ReplicaId{1}, ReplicaId{2}, spare}, effective_us};
  BlockingClient client(client_options);
  const BlockingClient::Outcome outcome = client.call(encode_configuration_change(forged));
  const std::string result(outcome.result.begin(), outcome.result.end());
  std::cerr << "the forged change: " << (outcome.ok ? "answered: " + result : outcome.error)
            << "\n";
  EXPECT_TRUE(!outcome.ok || result.rfind("refused", 0) == 0)
      << "the replicas obeyed a forged change: " << result;

  // Nothing changed, even after the forged change's boundary: epoch 0, the same three members,
  // serving alike, and the spare still outside.
  while (net::wall_now_us() < effective_us + 2 * grid_us)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const workload::Report report = workload::run(load_options(/*duration_s=*/1));
  EXPECT_GT(report.completed, 10u);
  EXPECT_EQ(report.unknown, 0u);
  EXPECT_EQ(report.agreed.count(spare.value), 0u) << workload::format_votes(report);
  const auto statuses = converged_statuses(members_of_epoch_0());
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_TRUE(workload::digests_equal(statuses));
  for (const auto& [id, status] : statuses) {
    EXPECT_EQ(status.epoch, 0u) << "replica " << id;
    EXPECT_EQ(status.members, members_of_epoch_0()) << "replica " << id;
    EXPECT_FALSE(status.halted) << "replica " << id;
  }
  std::string error;
  const std::optional<StatusReply> spare_status =
      query_status(config.replicas[spare.value].address, 2000, error);
  ASSERT_TRUE(spare_status.has_value()) << error;
  EXPECT_EQ(spare_status->epoch, 0u);
  EXPECT_EQ(std::find(spare_status->members.begin(), spare_status->members.end(), spare),
            spare_status->members.end())
      << "the spare serves as a member";
  EXPECT_TRUE(cluster_->running(spare));
}

}  // namespace
}  // namespace lockstep
