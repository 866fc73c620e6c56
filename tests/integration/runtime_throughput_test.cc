// Throughput smoke test: 3 replica processes on loopback, 64 closed-loop sessions multiplexed
// over one Client (one connection per replica). Prints the rate; fails only if the runtime is
// grossly slow (a floor far below the target, so that a loaded CI machine does not flake), or if
// any request fails or reads back a wrong value.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "apps/kv/kv_machine.h"
#include "client/client.h"
#include "runtime/local_cluster.h"

namespace lockstep::runtime {
namespace {

constexpr size_t kSessions = 64;
constexpr uint64_t kMeasureNs = 2'000'000'000;
// The design target is 30k ops/s on 2 cores; this floor only catches pathological regressions
// (a lost batching, a per-message sleep) even under sanitizers or a busy machine.
constexpr double kOpsPerSecondFloor = 300;

TEST(RuntimeThroughputTest, SixtyFourSessionsOverThreeReplicas) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("lockstep-it-" + std::to_string(getpid()) + "-tp");
  std::filesystem::remove_all(dir);
  LocalClusterOptions options;
  options.replicas = 3;
  options.dir = dir;
  options.binary = LOCKSTEP_BINARY;
  options.log_level = "warn";
  auto cluster = std::make_unique<LocalCluster>(options);
  cluster->start_all();
  cluster->wait_until_listening();

  net::EventLoop loop;
  Client client(loop, cluster->client_options());
  uint64_t completed = 0;
  uint64_t failures = 0;
  bool measuring = true;
  std::vector<ClientId> sessions;
  std::vector<uint64_t> counters(kSessions, 0);
  std::vector<std::string> last_value(kSessions);
  size_t in_flight = 0;
  std::function<void(size_t)> issue = [&](size_t s) {
    if (!measuring) return;
    const std::string key = "key-" + std::to_string(s);
    const uint64_t n = ++counters[s];
    kv::Command put{kv::Op::kPut, key, std::to_string(n) + std::string(100, 'v'), {}, 0};
    last_value[s] = put.value;
    ++in_flight;
    client.submit(sessions[s], kv::encode_command(put), [&, s](CallResult result) {
      if (!result.ok()) ++failures;
      --in_flight;
      ++completed;
      issue(s);
    });
  };
  for (size_t s = 0; s < kSessions; ++s)
    sessions.push_back(client.open_session());
  for (size_t s = 0; s < kSessions; ++s)
    issue(s);
  const uint64_t start = net::monotonic_now_ns();
  double seconds = 0;
  loop.schedule(kMeasureNs, [&] {
    measuring = false;
    seconds = static_cast<double>(net::monotonic_now_ns() - start) / 1e9;
  });
  // Then the requests in flight finish, and every key must read as its session last wrote it.
  size_t verified = 0;
  net::EventLoop::TimerId drain = loop.schedule_every(1'000'000, [&] {
    if (measuring || in_flight > 0) return;
    loop.cancel(drain);
    for (size_t s = 0; s < kSessions; ++s) {
      kv::Command get{kv::Op::kGet, "key-" + std::to_string(s), {}, {}, 0};
      client.submit(sessions[s], kv::encode_command(get), [&, s](CallResult result) {
        EXPECT_TRUE(result.ok());
        EXPECT_EQ(kv::decode_result(result.result),
                  (kv::Result{kv::ResultCode::kOk, last_value[s]}));
        if (++verified == kSessions) loop.stop();
      });
    }
  });
  loop.run();
  const double rate = static_cast<double>(completed) / seconds;  // includes the drained ones
  std::cout << "throughput: " << completed << " puts in " << seconds << " s = " << rate
            << " ops/s (" << kSessions << " sessions, 3 replicas)\n";
  EXPECT_EQ(failures, 0u);
  EXPECT_GE(rate, kOpsPerSecondFloor);
  cluster.reset();
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace lockstep::runtime
