// End to end: real `lockstep replica` processes on loopback, started and stopped through
// runtime::LocalCluster, driven by the networked client and the CLI.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "apps/kv/kv_machine.h"
#include "client/client.h"
#include "cluster_fixture.h"
#include "core/codec.h"

namespace lockstep::runtime {
namespace {

Bytes command(kv::Op op, const std::string& key, const std::string& value = {},
              const std::string& expected = {}, int64_t delta = 0) {
  return kv::encode_command(kv::Command{op, key, value, expected, delta});
}

class RuntimeBasicTest : public integration::ClusterTest {
 protected:
  RuntimeBasicTest() : ClusterTest("lockstep-it") {}

  void start_cluster(uint32_t replicas, uint64_t failure_timeout_ms = 500) {
    LocalClusterOptions options = cluster_options();
    options.replicas = replicas;
    options.timeouts.failure_timeout_ms = failure_timeout_ms;
    start_cluster_with(options);
  }

  // A call that must succeed; returns the decoded KV result.
  kv::Result call(BlockingClient& client, Bytes request) {
    BlockingClient::Outcome outcome = client.call(std::move(request));
    EXPECT_TRUE(outcome.ok) << outcome.error;
    if (!outcome.ok) return kv::Result{kv::ResultCode::kError, outcome.error};
    return kv::decode_result(outcome.result).value_or(kv::Result{kv::ResultCode::kError, "?"});
  }
};

TEST_F(RuntimeBasicTest, PutsAndGetsThroughThreeReplicas) {
  start_cluster(3);
  EXPECT_EQ(cluster_->config().t, 2u);
  BlockingClient client(cluster_->client_options());
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(call(client, command(kv::Op::kPut, "k" + std::to_string(i), "v" + std::to_string(i))),
              (kv::Result{kv::ResultCode::kOk, ""}));
  }
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(call(client, command(kv::Op::kGet, "k" + std::to_string(i))),
              (kv::Result{kv::ResultCode::kOk, "v" + std::to_string(i)}));
  }
  EXPECT_EQ(call(client, command(kv::Op::kGet, "absent")),
            (kv::Result{kv::ResultCode::kNotFound, ""}));
  EXPECT_EQ(call(client, command(kv::Op::kIncr, "n", {}, {}, 5)),
            (kv::Result{kv::ResultCode::kOk, "5"}));
  EXPECT_EQ(call(client, command(kv::Op::kCas, "k1", "new", "v1")),
            (kv::Result{kv::ResultCode::kOk, "true"}));
  // A second client (new session, new connections) sees what the first wrote.
  BlockingClient other(cluster_->client_options());
  EXPECT_EQ(call(other, command(kv::Op::kGet, "k1")), (kv::Result{kv::ResultCode::kOk, "new"}));

  // Every replica executed the same requests into the same state.
  std::optional<StatusReply> first = client.status(ReplicaId{0});
  ASSERT_TRUE(first);
  EXPECT_EQ(first->view, ViewNumber{0});
  EXPECT_EQ(first->members.size(), 3u);
  EXPECT_FALSE(first->halted);
  for (uint32_t r = 1; r < 3; ++r) {
    // Replicas execute in step but not at the same instant: retry briefly until equal.
    std::optional<StatusReply> status;
    for (int attempt = 0; attempt < 100; ++attempt) {
      status = client.status(ReplicaId{r});
      ASSERT_TRUE(status);
      if (status->executed == first->executed) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(status->replica, ReplicaId{r});
    EXPECT_EQ(status->executed, first->executed);
    EXPECT_EQ(status->digest, first->digest);
  }

  // SIGTERM: every replica exits cleanly.
  for (const std::optional<int>& status : cluster_->stop_all()) {
    ASSERT_TRUE(status);
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << describe_wait_status(*status);
  }
}

TEST_F(RuntimeBasicTest, CorruptedFrameClosesOnlyThatConnection) {
  start_cluster(3);
  BlockingClient client(cluster_->client_options());
  EXPECT_EQ(call(client, command(kv::Op::kPut, "before", "1")).code, kv::ResultCode::kOk);

  // A raw connection to replica 0: a valid client Hello, then a frame with a flipped byte.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(cluster_->config().replicas[0].address.port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  Bytes bytes;
  encode_frame(Hello{PeerRole::kClient, 1234, 1, 0}, bytes);
  const size_t corrupt_at = bytes.size() + kFrameHeaderBytes + 2;
  encode_frame(
      ClientRequest{
          ClientId{1234}, Sequence{1}, Sequence{1}, command(kv::Op::kPut, "evil", "x"), {}},
      bytes);
  bytes[corrupt_at] ^= 0x5a;
  ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  // The replica answers the Hello, then closes the connection: read until EOF.
  std::array<uint8_t, 4096> buffer{};
  ssize_t n = 0;
  while ((n = read(fd, buffer.data(), buffer.size())) > 0) {
  }
  EXPECT_EQ(n, 0) << "the replica did not close the connection";
  close(fd);

  EXPECT_TRUE(cluster_->running(ReplicaId{0}));
  EXPECT_NE(log_of(ReplicaId{0}).find("malformed frame: bad checksum"), std::string::npos);
  // It still serves, and the corrupted request never ran.
  EXPECT_EQ(call(client, command(kv::Op::kPut, "after", "2")).code, kv::ResultCode::kOk);
  EXPECT_EQ(call(client, command(kv::Op::kGet, "after")), (kv::Result{kv::ResultCode::kOk, "2"}));
  EXPECT_EQ(call(client, command(kv::Op::kGet, "evil")).code, kv::ResultCode::kNotFound);
}

TEST_F(RuntimeBasicTest, SurvivorsKeepServingAfterSigkill) {
  start_cluster(3);
  BlockingClient client(cluster_->client_options());
  EXPECT_EQ(call(client, command(kv::Op::kPut, "a", "1")).code, kv::ResultCode::kOk);

  cluster_->kill(ReplicaId{1});
  ASSERT_TRUE(cluster_->last_status(ReplicaId{1}));
  EXPECT_TRUE(WIFSIGNALED(*cluster_->last_status(ReplicaId{1})));

  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(
        call(client, command(kv::Op::kPut, "after-" + std::to_string(i), std::to_string(i))).code,
        kv::ResultCode::kOk);
  }
  BlockingClient fresh(cluster_->client_options());
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(call(fresh, command(kv::Op::kGet, "after-" + std::to_string(i))),
              (kv::Result{kv::ResultCode::kOk, std::to_string(i)}));
  }
  EXPECT_EQ(call(fresh, command(kv::Op::kGet, "a")), (kv::Result{kv::ResultCode::kOk, "1"}));
  EXPECT_TRUE(cluster_->running(ReplicaId{0}));
  EXPECT_TRUE(cluster_->running(ReplicaId{2}));
  EXPECT_NE(log_of(ReplicaId{0}).find("installed view 1: members [0, 2]"), std::string::npos);
  std::optional<StatusReply> zero = fresh.status(ReplicaId{0});
  std::optional<StatusReply> two = fresh.status(ReplicaId{2});
  ASSERT_TRUE(zero && two);
  EXPECT_EQ(zero->members, (std::vector<ReplicaId>{ReplicaId{0}, ReplicaId{2}}));
  EXPECT_EQ(zero->digest, two->digest);
}

TEST_F(RuntimeBasicTest, ReplicaRemovedWhilePausedHaltsWithExitCode3) {
  start_cluster(3, /*failure_timeout_ms=*/300);
  BlockingClient client(cluster_->client_options());
  EXPECT_EQ(call(client, command(kv::Op::kPut, "a", "1")).code, kv::ResultCode::kOk);

  // Paused longer than the failure timeout: the others remove it. Once resumed it reads their
  // decision from its channels and halts.
  cluster_->signal(ReplicaId{2}, SIGSTOP);
  EXPECT_EQ(call(client, command(kv::Op::kPut, "b", "2")).code, kv::ResultCode::kOk);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  cluster_->signal(ReplicaId{2}, SIGCONT);
  std::optional<int> status = cluster_->wait(ReplicaId{2}, 10'000);
  ASSERT_TRUE(status) << "replica 2 did not exit; log:\n" << cluster_->log_tail(ReplicaId{2});
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 3) << describe_wait_status(*status);
  EXPECT_NE(log_of(ReplicaId{2}).find("removed from the membership; halting"), std::string::npos);
  EXPECT_EQ(call(client, command(kv::Op::kGet, "b")), (kv::Result{kv::ResultCode::kOk, "2"}));
}

using integration::run_command;

TEST_F(RuntimeBasicTest, KvCommandLine) {
  start_cluster(2);
  const std::string kv =
      std::string(LOCKSTEP_BINARY) + " kv --config " + cluster_->config_path().string() + " ";
  EXPECT_EQ(run_command(kv + "put greeting hello"), (std::pair<int, std::string>{0, "OK\n"}));
  EXPECT_EQ(run_command(kv + "get greeting"), (std::pair<int, std::string>{0, "hello\n"}));
  EXPECT_EQ(run_command(kv + "append greeting ' world'"), (std::pair<int, std::string>{0, "OK\n"}));
  EXPECT_EQ(run_command(kv + "get greeting"), (std::pair<int, std::string>{0, "hello world\n"}));
  EXPECT_EQ(run_command(kv + "cas greeting nope x"), (std::pair<int, std::string>{0, "false\n"}));
  EXPECT_EQ(run_command(kv + "incr counter"), (std::pair<int, std::string>{0, "1\n"}));
  EXPECT_EQ(run_command(kv + "incr counter 41"), (std::pair<int, std::string>{0, "42\n"}));
  EXPECT_EQ(run_command(kv + "incr greeting 2>/dev/null").first, 1);  // not a number
  EXPECT_EQ(run_command(kv + "del greeting"), (std::pair<int, std::string>{0, "OK\n"}));
  EXPECT_EQ(run_command(kv + "get greeting"), (std::pair<int, std::string>{0, "(not found)\n"}));

  // With every replica gone the command fails by the deadline, saying why.
  cluster_->stop_all();
  auto [code, output] = run_command(kv + "--deadline-ms 300 get greeting 2>&1");
  EXPECT_EQ(code, 1);
  EXPECT_NE(output.find("error: no replica answered within 300 ms"), std::string::npos) << output;
}

}  // namespace
}  // namespace lockstep::runtime
