// Faults while clients run, with real replica processes on loopback: a replica killed by SIGKILL
// in the middle of a workload, and a client that vanishes in the middle of its broadcast. Each
// checks what the seed asks: the history is linearizable (by our checker and by an independent
// one), nothing acknowledged is lost, and the surviving replicas hold identical state.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include "apps/kv/kv_machine.h"
#include "client/client.h"
#include "cluster_fixture.h"
#include "core/codec.h"
#include "protocol/failstop/core.h"

namespace lockstep {
namespace {

class FaultsUnderLoadTest : public integration::ClusterTest {
 protected:
  FaultsUnderLoadTest() : ClusterTest("lockstep-faults") {}

  void start_cluster(uint32_t replicas) {
    runtime::LocalClusterOptions options = cluster_options();
    options.replicas = replicas;
    options.timeouts.failure_timeout_ms = 300;
    options.timeouts.relay_timeout_ms = 30;
    start_cluster_with(options);
  }
};

TEST_F(FaultsUnderLoadTest, SigkillOfAReplicaUnderLoadLosesNothing) {
  start_cluster(3);
  const ReplicaId victim{1};
  workload::Options load;
  load.client = cluster_->client_options();
  load.clients = 16;
  load.keys = 20;
  load.duration_s = 3;
  load.progress = false;
  load.midway = [&] { cluster_->kill(victim); };
  workload::Report report = workload::run(load);
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u) << "survivors answer every request once the view changes";

  const std::vector<check::Operation> history = check_history(load, report);

  // The independent checker agrees. It is slow (plain Python), so it gets the operations on a few
  // keys: each key is an independent register, so a history is linearizable exactly when each
  // key's part is (P-compositionality), and any subset of keys is a valid history to check.
  std::vector<check::Operation> sample;
  for (const check::Operation& op : history) {
    if (op.key <= workload::key_name(3, load.key_bytes)) sample.push_back(op);
  }
  const std::filesystem::path file = dir_ / "history.jsonl";
  ASSERT_FALSE(check::write_history_file(file.string(), sample).has_value());
  const std::string script = std::string(LOCKSTEP_SOURCE_DIR) + "/scripts/check_history.py";
  if (std::system("python3 --version >/dev/null 2>&1") == 0) {
    const int status =
        std::system(("python3 " + script + " " + file.string() + " >/dev/null").c_str());
    EXPECT_EQ(WEXITSTATUS(status), 0) << "scripts/check_history.py disagrees";
  }

  const auto statuses = converged_statuses({ReplicaId{0}, ReplicaId{2}});
  ASSERT_EQ(statuses.size(), 2u);
  EXPECT_EQ(statuses.at(0).digest, statuses.at(2).digest);
  EXPECT_EQ(statuses.at(0).members, (std::vector<ReplicaId>{ReplicaId{0}, ReplicaId{2}}));
}

// Sends raw frames to one replica, as a client that dies after reaching only part of the cluster.
void send_and_vanish(const net::Address& address, const ClientRequest& request) {
  std::string error;
  auto resolved = net::resolve(address, error);
  ASSERT_TRUE(resolved) << error;
  const int fd = ::socket(resolved->family, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&resolved->storage), resolved->length),
            0);
  Bytes out;
  encode_frame(Hello{PeerRole::kClient, request.client.value, 1, 0}, out);
  encode_frame(request, out);
  ASSERT_EQ(::send(fd, out.data(), out.size(), MSG_NOSIGNAL), static_cast<ssize_t>(out.size()));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::close(fd);
}

TEST_F(FaultsUnderLoadTest, ClientThatReachesOnlyANonOwnerStillGetsItsRequestRunEverywhere) {
  start_cluster(3);
  // Pick a client id whose owner is replica 0, and tell only replica 2 about its request.
  failstop::Options probe;
  probe.replica_count = 3;
  failstop::Core core(probe);
  ClientId client{0x5eed};
  while (core.owner_of(client) != ReplicaId{0})
    client = ClientId{client.value + 1};
  const ClientRequest request{client,
                              Sequence{1},
                              Sequence{1},
                              kv::encode_command(kv::Command{kv::Op::kPut, "orphan", "v1", {}, 0}),
                              {}};
  send_and_vanish(cluster_->config().replicas[2].address, request);

  // The request is relayed to its owner and executed by every replica.
  BlockingClient reader(cluster_->client_options());
  std::string value;
  for (int attempt = 0; attempt < 100 && value != "v1"; ++attempt) {
    auto outcome = reader.call(kv::encode_command(kv::Command{kv::Op::kGet, "orphan", {}, {}, 0}));
    ASSERT_TRUE(outcome.ok) << outcome.error;
    value = kv::decode_result(outcome.result).value_or(kv::Result{}).value;
    if (value != "v1") std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(value, "v1");
  const auto statuses = converged_statuses({ReplicaId{0}, ReplicaId{1}, ReplicaId{2}});
  ASSERT_EQ(statuses.size(), 3u);
  EXPECT_EQ(statuses.at(0).digest, statuses.at(1).digest);
  EXPECT_EQ(statuses.at(0).digest, statuses.at(2).digest);
}

TEST_F(FaultsUnderLoadTest, ReplicaRestartedWithoutItsStateHaltsAndTheOthersServeOn) {
  start_cluster(3);
  BlockingClient client(cluster_->client_options());
  auto put = [&](const std::string& value) {
    auto outcome = client.call(kv::encode_command(kv::Command{kv::Op::kPut, "k", value, {}, 0}));
    EXPECT_TRUE(outcome.ok) << outcome.error;
  };
  for (int i = 0; i < 20; ++i)
    put("before-" + std::to_string(i));
  // Restarted at once, before the others could notice the crash: it has lost its state (this
  // mode keeps no disk yet), so it must halt rather than serve or disturb the others.
  cluster_->kill(ReplicaId{2});
  cluster_->start(ReplicaId{2});
  const std::optional<int> status = cluster_->wait(ReplicaId{2}, 10'000);
  ASSERT_TRUE(status.has_value()) << "the restarted replica is still running";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 3)
      << runtime::describe_wait_status(*status);
  put("after");
  auto outcome = client.call(kv::encode_command(kv::Command{kv::Op::kGet, "k", {}, {}, 0}));
  ASSERT_TRUE(outcome.ok) << outcome.error;
  EXPECT_EQ(kv::decode_result(outcome.result).value_or(kv::Result{}).value, "after");
  const auto statuses = converged_statuses({ReplicaId{0}, ReplicaId{1}});
  ASSERT_EQ(statuses.size(), 2u);
  EXPECT_EQ(statuses.at(0).digest, statuses.at(1).digest);
  EXPECT_FALSE(statuses.at(0).halted);
}

}  // namespace
}  // namespace lockstep
