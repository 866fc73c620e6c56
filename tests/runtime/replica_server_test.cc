// Whole replicas in one process: three ReplicaServers and a networked Client sharing one event
// loop over loopback TCP. The same code paths as separate processes (sockets, channels,
// batching), but deterministic enough to run under the sanitizers quickly.
#include "runtime/replica_server.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "apps/kv/kv_machine.h"
#include "client/client.h"
#include "runtime/local_cluster.h"

namespace lockstep::runtime {
namespace {

template <typename Predicate>
bool run_until(net::EventLoop& loop, Predicate done, uint64_t timeout_ns = 20'000'000'000) {
  const uint64_t deadline = net::monotonic_now_ns() + timeout_ns;
  net::EventLoop::TimerId tick = loop.schedule_every(1'000'000, [&] {
    if (done() || net::monotonic_now_ns() > deadline) loop.stop();
  });
  loop.run();
  loop.cancel(tick);
  return done();
}

ClusterConfig loopback_cluster(uint32_t replicas) {
  ClusterConfig config;
  config.mode = Mode::kFailstop;
  config.t = replicas - 1;
  std::vector<uint16_t> ports = pick_free_ports(replicas);
  for (uint32_t i = 0; i < replicas; ++i) {
    config.replicas.push_back(ReplicaConfig{ReplicaId{i}, net::Address{"127.0.0.1", ports[i]}});
  }
  config.timeouts.heartbeat_interval_ms = 5;
  config.timeouts.failure_timeout_ms = 150;
  config.client.retry_interval_ms = 50;
  config.client.deadline_ms = 10'000;
  validate_config(config, "test");
  return config;
}

NetworkClientOptions client_options(const ClusterConfig& config) {
  NetworkClientOptions options;
  options.replicas = config.addresses();
  options.session = config.client_options();
  return options;
}

Bytes put(const std::string& key, const std::string& value) {
  return kv::encode_command(kv::Command{kv::Op::kPut, key, value, {}, 0});
}
Bytes get(const std::string& key) {
  return kv::encode_command(kv::Command{kv::Op::kGet, key, {}, {}, 0});
}
kv::Result result_of(const CallResult& result) {
  EXPECT_TRUE(result.ok());
  return kv::decode_result(result.result)
      .value_or(kv::Result{kv::ResultCode::kError, "undecodable"});
}

class InProcessClusterTest : public ::testing::Test {
 protected:
  void start(uint32_t replicas) {
    config_ = loopback_cluster(replicas);
    for (uint32_t i = 0; i < replicas; ++i) {
      servers_.push_back(std::make_unique<ReplicaServer>(loop_, config_, ReplicaId{i}));
      servers_.back()->start();
    }
    client_ = std::make_unique<Client>(loop_, client_options(config_));
  }

  // One closed-loop workload: every session writes its own key `rounds` times, reading it back
  // after each write. Returns the number of mismatches (0 when everything read what was written).
  int run_sessions(size_t sessions, int rounds, const std::string& prefix) {
    struct State {
      ClientId id;
      int round = 0;
      bool done = false;
    };
    std::vector<State> states(sessions);
    int mismatches = 0;
    size_t finished = 0;
    std::function<void(size_t)> next = [&](size_t s) {
      State& state = states[s];
      if (state.round == rounds) {
        state.done = true;
        ++finished;
        return;
      }
      const std::string key = prefix + std::to_string(s);
      const std::string value = "v" + std::to_string(state.round);
      client_->submit(state.id, put(key, value), [&, s, key, value](CallResult written) {
        if (result_of(written).code != kv::ResultCode::kOk) ++mismatches;
        client_->submit(states[s].id, get(key), [&, s, value](CallResult read) {
          if (result_of(read) != kv::Result{kv::ResultCode::kOk, value}) ++mismatches;
          ++states[s].round;
          next(s);
        });
      });
    };
    for (size_t s = 0; s < sessions; ++s) {
      states[s].id = client_->open_session();
      next(s);
    }
    EXPECT_TRUE(run_until(loop_, [&] { return finished == sessions; }))
        << finished << " of " << sessions << " sessions finished";
    for (State& state : states)
      client_->close_session(state.id);
    return mismatches;
  }

  net::EventLoop loop_;
  ClusterConfig config_;
  std::vector<std::unique_ptr<ReplicaServer>> servers_;
  std::unique_ptr<Client> client_;
};

TEST_F(InProcessClusterTest, ManySessionsShareOneConnectionPerReplica) {
  start(3);
  EXPECT_EQ(run_sessions(64, 10, "key-"), 0);
  // 64 sessions, one connection to each replica: replies were routed by client id.
  for (auto& server : servers_)
    EXPECT_EQ(server->client_connections(), 1u);
  EXPECT_EQ(client_->connected_replicas(), 3u);
  // Every replica executed every request (1280 of them) in the same order: same state.
  ASSERT_TRUE(run_until(loop_, [&] {
    return servers_[0]->replica().service().executed_count() == 64 * 10 * 2 &&
           servers_[1]->replica().service().digest() == servers_[0]->replica().service().digest() &&
           servers_[2]->replica().service().digest() == servers_[0]->replica().service().digest();
  }));
}

TEST_F(InProcessClusterTest, SurvivorsServeAfterAReplicaDisappears) {
  start(3);
  EXPECT_EQ(run_sessions(8, 3, "before-"), 0);
  servers_[2].reset();  // its sockets close; the others detect the failure and remove it
  EXPECT_EQ(run_sessions(8, 3, "after-"), 0);
  ASSERT_TRUE(run_until(loop_, [&] { return servers_[0]->replica().core().view().value >= 1; }));
  EXPECT_EQ(servers_[0]->replica().core().members().size(), 2u);
  EXPECT_EQ(servers_[0]->exit_code(), kExitStopped);
}

TEST(ReplicaServerTest, RefusesByzantineMode) {
  net::EventLoop loop;
  ClusterConfig config = loopback_cluster(3);
  config.mode = Mode::kByzantine;
  config.t = 1;
  try {
    ReplicaServer server(loop, config, ReplicaId{0});
    FAIL() << "started in byzantine mode";
  } catch (const std::runtime_error& error) {
    EXPECT_STREQ(error.what(), "byzantine mode is not implemented yet");
  }
}

TEST(ReplicaServerTest, RefusesAnIdOutsideTheConfiguration) {
  net::EventLoop loop;
  EXPECT_THROW(ReplicaServer(loop, loopback_cluster(2), ReplicaId{2}), std::runtime_error);
}

TEST(BlockingClientTest, FailsClearlyWhenNoReplicaAnswers) {
  ClusterConfig config = loopback_cluster(2);  // free ports: nothing listens there
  config.client.deadline_ms = 300;
  BlockingClient client(client_options(config));
  const uint64_t start = net::monotonic_now_ns();
  BlockingClient::Outcome outcome = client.call(get("k"));
  const uint64_t elapsed_ms = (net::monotonic_now_ns() - start) / 1'000'000;
  EXPECT_FALSE(outcome.ok);
  EXPECT_NE(outcome.error.find("no replica answered within 300 ms"), std::string::npos)
      << outcome.error;
  EXPECT_NE(outcome.error.find("refused"), std::string::npos) << outcome.error;
  EXPECT_GE(elapsed_ms, 300u);
  EXPECT_LT(elapsed_ms, 2000u);
  // The client stays usable: a second call fails the same way instead of hanging.
  EXPECT_FALSE(client.call(get("k")).ok);
}

}  // namespace
}  // namespace lockstep::runtime
