// The byzantine mode with real replica processes on loopback: 3 replicas (t = 1), one of them
// faulty on purpose (`lockstep replica --misbehave ...`) or killed and restarted without its state
// (`lockstep replica --join`, docs/DESIGN.md §11.7), under a workload of several clients. Each
// test checks what the mode promises: the history is linearizable, no acknowledged append is
// lost, the honest replicas hold identical state, and (for a liar) the clients' dissent names
// exactly the replica that lied while no accepted output carries its signature.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "client/certificate.h"
#include "cluster_fixture.h"

namespace lockstep {
namespace {

class ByzantineTest : public integration::ClusterTest {
 protected:
  ByzantineTest() : ClusterTest("lockstep-byzantine") {}

  // No replica faulty on purpose.
  void start_cluster() { start_cluster(ReplicaId{0}, runtime::Misbehaviour::kNone); }

  void start_cluster(ReplicaId faulty, runtime::Misbehaviour misbehaviour) {
    runtime::LocalClusterOptions options = cluster_options();
    options.mode = runtime::Mode::kByzantine;
    options.replicas = 3;
    options.client.retry_interval_ms = 200;
    options.misbehave[faulty.value] = misbehaviour;
    options.byzantine.delta_ms = integration::kByzantineTestDeltaMs;
    start_cluster_with(options);
  }

  workload::Report run_load(double duration_s, uint32_t clients = 8) {
    return workload::run(load_options(duration_s, clients));
  }

  workload::Options load_options(double duration_s, uint32_t clients = 8) const {
    workload::Options load = ClusterTest::load_options(duration_s, clients);
    load.append_percent = 50;
    return load;
  }

  // The history's checks (check_history), and equal digests among `honest`.
  void check_outcome(const workload::Report& report, const std::vector<ReplicaId>& honest) {
    check_history(load_options(/*duration_s=*/0), report);  // the keys of every load here
    const auto statuses = converged_statuses(honest);
    ASSERT_EQ(statuses.size(), honest.size()) << "honest replicas did not all answer";
    EXPECT_TRUE(workload::digests_equal(statuses));
    for (const auto& [id, status] : statuses) {
      EXPECT_GE(status.executed, report.completed) << "replica " << id;
      EXPECT_FALSE(status.halted);
    }
  }
};

TEST_F(ByzantineTest, ClientsOutvoteAReplicaThatLiesAboutEveryOutput) {
  const ReplicaId liar{1};
  start_cluster(liar, runtime::Misbehaviour::kWrongOutput);
  const workload::Report report = run_load(3);
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u);

  // Every accepted output was signed by t+1 = 2 replicas, never by the liar; the liar's replies
  // that reached a vote in time are all dissent, and nobody else's are.
  EXPECT_EQ(report.certified, report.completed);
  EXPECT_GE(report.fewest_certificate_proofs, 2u);
  EXPECT_EQ(report.agreed.count(liar.value), 0u) << "a lie made it into a certificate";
  ASSERT_EQ(report.dissented.size(), 1u) << workload::format_votes(report);
  EXPECT_EQ(report.dissented.begin()->first, liar.value);
  EXPECT_GT(report.dissented.begin()->second, 0u);

  // A certificate checks offline against the cluster's keys, and stops checking when tampered.
  ASSERT_TRUE(report.sample_certificate.has_value());
  const auto verifier =
      crypto::make_verifier(crypto::Scheme::kEd25519, cluster_->config().key_directory());
  std::string why;
  EXPECT_TRUE(verify_certificate(*report.sample_certificate, *verifier, 2, &why)) << why;
  ReplyCertificate forged = *report.sample_certificate;
  forged.reply.result.push_back('!');
  EXPECT_FALSE(verify_certificate(forged, *verifier, 2, &why));

  // Lying about outputs leaves the state untouched, but only the honest replicas are judged.
  check_outcome(report, {ReplicaId{0}, ReplicaId{2}});
}

TEST_F(ByzantineTest, ASilentReplicaDoesNotStopTheService) {
  const ReplicaId mute{0};
  start_cluster(mute, runtime::Misbehaviour::kSilent);
  // Sessions are owned by rendezvous hashing of random ids: with 24 of them, the chance that the
  // mute replica owns none is (2/3)^24 < 1e-4.
  const workload::Report report = run_load(3, 24);
  // The mute replica's clients get their requests proposed by the others after the relay
  // timeout (2·(t+1)·(Δ+ε), 208 ms here): slower, but every request completes.
  ASSERT_GT(report.completed, 50u);
  EXPECT_EQ(report.unknown, 0u);
  const uint64_t relay_timeout_ns =
      2 * 2 * (cluster_->config().byzantine->delta_ms + cluster_->config().byzantine->epsilon_ms) *
      1'000'000;
  EXPECT_GE(report.latency.max_ns, relay_timeout_ns)
      << "no request waited for the relay timeout: the owner-fallback path was not exercised";
  EXPECT_EQ(report.certified, report.completed);
  EXPECT_EQ(report.agreed.count(mute.value), 0u);
  EXPECT_TRUE(report.dissented.empty()) << workload::format_votes(report);
  check_outcome(report, {ReplicaId{1}, ReplicaId{2}});
}

// A replica killed mid-workload and restarted with --join: the other two carry the service
// (t+1 = 2 matching replies) while it catches up, it loads a checkpoint that both vouched for
// (one every 1000 ms, the default), executes the rest, and ends with the same state, serving.
TEST_F(ByzantineTest, AReplicaRestartedWithoutItsStateCatchesUpUnderLoad) {
  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  start_cluster();
  ASSERT_EQ(cluster_->config().byzantine->checkpoint_interval_ms, 1000u);
  const ReplicaId victim{2};
  std::future<workload::Report> running =
      std::async(std::launch::async, [load = load_options(8)] { return workload::run(load); });
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  cluster_->kill(victim);
  // Restarted without its state: the mode keeps nothing on disk.
  cluster_->start(victim, runtime::Misbehaviour::kNone, /*join=*/true);
  const auto restarted = Clock::now();
  EXPECT_TRUE(wait_until_serving(victim, 15'000)) << cluster_->log_tail(victim, 40);
  const double catch_up_s = std::chrono::duration<double>(Clock::now() - restarted).count();
  // It caught up while the workload still ran (from 2 s of 8 s).
  EXPECT_EQ(running.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "caught up only after the workload, in " << catch_up_s << " s";
  const workload::Report report = running.get();
  ASSERT_GT(report.completed, 100u);
  EXPECT_EQ(report.unknown, 0u);
  EXPECT_EQ(report.certified, report.completed);
  EXPECT_TRUE(report.dissented.empty()) << workload::format_votes(report);
  EXPECT_TRUE(cluster_->running(victim)) << cluster_->log_tail(victim, 40);

  check_outcome(report, {ReplicaId{0}, ReplicaId{1}, victim});

  const std::string log = log_of(victim);
  EXPECT_NE(log.find("restarted without its state (--join): catching up"), std::string::npos)
      << log;
  EXPECT_NE(log.find("catching up: t+1 replicas signed the same digest"), std::string::npos) << log;
  EXPECT_NE(log.find("loaded the state: the snapshot of the checkpoint at boundary"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("could not load a state transfer"), std::string::npos) << log;
  // It took its first input only once both peers had redialled it (they back off up to 1 s).
  EXPECT_NE(log.find("catching up: every peer connected"), std::string::npos) << log;
  for (size_t at = log.find("catching up"); at != std::string::npos;
       at = log.find("catching up", at + 1)) {
    std::cerr << log.substr(log.rfind('\n', at) + 1, log.find('\n', at) - log.rfind('\n', at));
  }
  const size_t loaded = log.find("loaded the state");
  std::cerr << log.substr(log.rfind('\n', loaded) + 1,
                          log.find('\n', loaded) - log.rfind('\n', loaded));
  const std::string donors = log_of(ReplicaId{0}) + log_of(ReplicaId{1});
  EXPECT_NE(donors.find("sending replica 2 the snapshot of the checkpoint at boundary"),
            std::string::npos);
  std::cerr << "caught up " << catch_up_s << " s after the restart; " << report.completed
            << " operations; wall time "
            << std::chrono::duration<double>(Clock::now() - started).count() << " s\n";
  RecordProperty("catch_up_ms", static_cast<int>(catch_up_s * 1000));
  RecordProperty(
      "wall_ms",
      static_cast<int>(std::chrono::duration<double>(Clock::now() - started).count() * 1000));
}

}  // namespace
}  // namespace lockstep
