#include "runtime/config.h"

#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <string>

#include "crypto/crypto.h"
#include "crypto/membership.h"
#include "crypto/signing.h"
#include "net/acceptor.h"
#include "net/peer_channel.h"
#include "replica/replica.h"
#include "runtime/credentials.h"

namespace lockstep::runtime {
namespace {

const std::string kValid = R"(
mode = "failstop"
t = 2

[[replicas]]
id = 0
address = "127.0.0.1:7000"

[[replicas]]
id = 2
address = "127.0.0.1:7002"

[[replicas]]
id = 1
address = "[::1]:7001"

[timeouts]
heartbeat_interval_ms = 10
failure_timeout_ms = 300

[client]
deadline_ms = 1500
)";

// The text of kValid with `from` replaced by `to` (which must occur).
std::string with(const std::string& from, const std::string& to) {
  std::string text = kValid;
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  text.replace(at, from.size(), to);
  return text;
}

// `text` cut just before `marker`.
std::string without_tables_from(const std::string& marker, const std::string& text) {
  return text.substr(0, text.find(marker));
}

std::string error_of(const std::string& text) {
  try {
    parse_config(text, "cluster.toml");
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "(no error)";
}

TEST(ConfigTest, ParsesAValidFile) {
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  EXPECT_EQ(config.mode, Mode::kFailstop);
  EXPECT_EQ(config.t, 2u);
  ASSERT_EQ(config.replica_count(), 3u);
  // Sorted by id whatever the order in the file.
  EXPECT_EQ(config.replicas[0], (ReplicaConfig{ReplicaId{0}, net::Address{"127.0.0.1", 7000}}));
  EXPECT_EQ(config.replicas[1], (ReplicaConfig{ReplicaId{1}, net::Address{"::1", 7001}}));
  EXPECT_EQ(config.replicas[2], (ReplicaConfig{ReplicaId{2}, net::Address{"127.0.0.1", 7002}}));
  EXPECT_EQ(config.timeouts.heartbeat_interval_ms, 10u);
  EXPECT_EQ(config.timeouts.failure_timeout_ms, 300u);
  EXPECT_EQ(config.timeouts.relay_timeout_ms, 50u);  // default
  EXPECT_EQ(config.client.retry_interval_ms, 200u);  // default
  EXPECT_EQ(config.client.deadline_ms, 1500u);

  failstop::Options options = config.failstop_options(ReplicaId{1}, 99);
  EXPECT_EQ(options.self, ReplicaId{1});
  EXPECT_EQ(options.replica_count, 3u);
  EXPECT_EQ(options.incarnation, 99u);
  EXPECT_EQ(options.heartbeat_interval_ns, 10'000'000u);
  EXPECT_EQ(options.failure_timeout_ns, 300'000'000u);
  ClientOptions client = config.client_options();
  EXPECT_EQ(client.replica_count, 3u);
  EXPECT_EQ(client.deadline_ns, 1'500'000'000u);
}

// A byzantine cluster of 3 replicas (t = 1) with one client principal; keys derived from fixed
// seeds so the text is the same every run.
std::string key_hex(uint8_t seed) {
  std::array<uint8_t, 32> bytes{};
  bytes.fill(seed);
  return crypto::to_hex(crypto::derive_key_pair(crypto::Scheme::kEd25519, bytes).public_key);
}

std::string byzantine_text() {
  return R"(
mode = "byzantine"
t = 1

[[replicas]]
id = 0
address = "127.0.0.1:7000"
public_key = ")" +
         key_hex(1) + R"("

[[replicas]]
id = 1
address = "127.0.0.1:7001"
public_key = ")" +
         key_hex(2) + R"("

[[replicas]]
id = 2
address = "127.0.0.1:7002"
public_key = ")" +
         key_hex(3) + R"("

[byzantine]
delta_ms = 8
epsilon_ms = 1

[[clients]]
principal = 7
public_key = ")" +
         key_hex(9) + R"("

[[clients]]
principal = 3
public_key = ")" +
         key_hex(10) + R"("
)";
}

std::string byzantine_with(const std::string& from, const std::string& to) {
  std::string text = byzantine_text();
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  text.replace(at, from.size(), to);
  return text;
}

TEST(ConfigTest, ParsesAByzantineFile) {
  ClusterConfig config = parse_config(byzantine_text(), "b.toml");
  EXPECT_EQ(config.mode, Mode::kByzantine);
  ASSERT_EQ(config.replica_count(), 3u);
  ASSERT_TRUE(config.byzantine.has_value());
  EXPECT_EQ(config.byzantine->delta_ms, 8u);
  EXPECT_EQ(config.byzantine->epsilon_ms, 1u);
  EXPECT_EQ(config.byzantine->relay_timeout_ms, 0u);  // default: the core computes it
  ASSERT_TRUE(config.replicas[1].public_key.has_value());
  EXPECT_EQ(crypto::to_hex(*config.replicas[1].public_key), key_hex(2));
  // Sorted by principal.
  ASSERT_EQ(config.clients.size(), 2u);
  EXPECT_EQ(config.clients[0].principal, 3u);
  EXPECT_EQ(crypto::to_hex(config.clients[0].public_key), key_hex(10));
  EXPECT_EQ(config.clients[1].principal, 7u);

  const crypto::KeyDirectory directory = config.key_directory();
  ASSERT_EQ(directory.replicas.size(), 3u);
  EXPECT_EQ(crypto::to_hex(directory.replicas[2]), key_hex(3));
  ASSERT_EQ(directory.clients.size(), 2u);
  EXPECT_EQ(crypto::to_hex(directory.clients.at(7)), key_hex(9));

  std::array<uint8_t, 32> seed{};
  seed.fill(3);
  const auto signer = crypto::make_signer(crypto::Scheme::kEd25519,
                                          crypto::derive_key_pair(crypto::Scheme::kEd25519, seed));
  const auto verifier = crypto::make_verifier(crypto::Scheme::kEd25519, directory);
  byzantine::Options options = config.byzantine_options(ReplicaId{2}, signer.get(), verifier.get());
  EXPECT_EQ(options.self, ReplicaId{2});
  EXPECT_EQ(options.replica_count, 3u);
  EXPECT_EQ(options.t, 1u);
  EXPECT_EQ(options.delta_us, 8'000u);
  EXPECT_EQ(options.epsilon_us, 1'000u);
  EXPECT_EQ(options.relay_timeout_us, 0u);
  // Checkpoints every second by default; join is the replica's own (--join), never the file's.
  EXPECT_EQ(config.byzantine->checkpoint_interval_ms, 1000u);
  EXPECT_EQ(options.checkpoint_interval_us, 1'000'000u);
  EXPECT_FALSE(options.join);
  EXPECT_EQ(options.signer, signer.get());
  EXPECT_EQ(options.verifier, verifier.get());

  EXPECT_EQ(config.client_options().reply_quorum, 2u);  // t + 1
  EXPECT_EQ(parse_config(kValid, "f.toml").client_options().reply_quorum, 1u);
}

TEST(ConfigTest, ByzantineFileRoundTrips) {
  ClusterConfig config = parse_config(
      byzantine_with("epsilon_ms = 1",
                     "epsilon_ms = 1\nrelay_timeout_ms = 77\ncheckpoint_interval_ms = 250"),
      "b");
  EXPECT_EQ(config.byzantine->relay_timeout_ms, 77u);
  EXPECT_EQ(config.byzantine->checkpoint_interval_ms, 250u);
  EXPECT_EQ(config.byzantine_options(ReplicaId{0}, nullptr, nullptr).checkpoint_interval_us,
            250'000u);
  EXPECT_EQ(parse_config(format_config(config), "again.toml"), config);
}

// The interval must leave room for a boundary's votes and snapshot transfer before the next one:
// at least 4 decision latencies σ + (t+1)·(Δ+ε). With Δ = 8 ms, ε = 1 ms, t = 1 that is 18.1 ms,
// so the minimum is 72.4 ms, rounded up to 73.
TEST(ConfigTest, CheckpointIntervalMustBeWellAboveTheDecisionLatency) {
  const auto interval = [](uint64_t ms) {
    return byzantine_with("epsilon_ms = 1",
                          "epsilon_ms = 1\ncheckpoint_interval_ms = " + std::to_string(ms));
  };
  const ClusterConfig config = parse_config(interval(73), "b.toml");
  EXPECT_EQ(config.byzantine_decision_latency_us(), 18'100u);
  EXPECT_EQ(config.byzantine->checkpoint_interval_ms, 73u);
  std::string message = "(no error)";
  try {
    parse_config(interval(72), "b.toml");
  } catch (const ConfigError& error) {
    message = error.what();
  }
  EXPECT_EQ(message,
            "b.toml: byzantine.checkpoint_interval_ms: must be at least 4 times the decision "
            "latency σ + (t+1)·(Δ+ε) = 18.1 ms, i.e. at least 73, got 72 (1000 when not given)");
  message = "(no error)";
  try {
    parse_config(interval(0), "b.toml");
  } catch (const ConfigError& error) {
    message = error.what();
  }
  EXPECT_EQ(message, "b.toml: byzantine.checkpoint_interval_ms: must be in [1, 86400000], got 0");

  // The default (1000) is checked too: with Δ = 200 ms it is too short, and the error says so.
  message = "(no error)";
  try {
    parse_config(byzantine_with("delta_ms = 8", "delta_ms = 200"), "b.toml");
  } catch (const ConfigError& error) {
    message = error.what();
  }
  EXPECT_EQ(message,
            "b.toml: byzantine.checkpoint_interval_ms: must be at least 4 times the decision "
            "latency σ + (t+1)·(Δ+ε) = 402.1 ms, i.e. at least 1609, got 1000 (1000 when not "
            "given)");

  // A configuration built in code is held to the same rules.
  ClusterConfig built = config;
  built.byzantine->checkpoint_interval_ms = 0;
  EXPECT_THROW(validate_config(built, "built"), ConfigError);
  built.byzantine->checkpoint_interval_ms = 72;
  EXPECT_THROW(validate_config(built, "built"), ConfigError);
  built.byzantine->checkpoint_interval_ms = 73;
  validate_config(built, "built");
  built.byzantine->delta_ms = kTimeoutMsMax + 1;
  EXPECT_THROW(validate_config(built, "built"), ConfigError);
}

TEST(ConfigTest, ByzantineErrorsNameTheirField) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::string first_key = "public_key = \"" + key_hex(1) + "\"";
  const std::vector<Case> cases = {
      // n must be exactly 2t+1.
      {byzantine_with("t = 1", "t = 2"),
       "b.toml: replicas: byzantine mode with t = 2 needs 5 replicas, got 3"},
      {byzantine_with("t = 1", "t = 0"), "b.toml: t: byzantine mode needs t >= 1, got 0"},
      {byzantine_with(first_key, ""), "b.toml: replicas[0].public_key: missing (byzantine mode)"},
      {byzantine_with(first_key, "public_key = \"abcd\""),
       "b.toml: replicas[0].public_key: expected 64 hex digits (a 32-byte Ed25519 public key), "
       "got \"abcd\""},
      {byzantine_with(first_key, "public_key = \"" + std::string(64, 'g') + "\""),
       "b.toml: replicas[0].public_key: expected 64 hex digits (a 32-byte Ed25519 public key), "
       "got \"" +
           std::string(64, 'g') + "\""},
      {byzantine_with(first_key, "public_key = 5"),
       "b.toml: replicas[0].public_key: expected a string of 64 hex digits, got an integer"},
      {byzantine_with(key_hex(2), key_hex(1)),
       "b.toml: replicas[1].public_key: same key as replicas[0]"},
      {byzantine_with("[byzantine]\ndelta_ms = 8\nepsilon_ms = 1\n", ""),
       "b.toml: byzantine: missing (byzantine mode needs a [byzantine] table with delta_ms and "
       "epsilon_ms)"},
      {byzantine_with("delta_ms = 8\n", ""), "b.toml: byzantine.delta_ms: missing"},
      {byzantine_with("delta_ms = 8", "delta_ms = 0"),
       "b.toml: byzantine.delta_ms: must be in [1, 86400000], got 0"},
      {byzantine_with("delta_ms = 8", "delta_ms = 8\ndelta = 3"),
       "b.toml: byzantine.delta: unknown key"},
      {byzantine_with("principal = 3", "principal = 7"),
       "b.toml: clients[1].principal: duplicate principal 7 (also clients[0])"},
      {byzantine_with("principal = 3", "principal = 0"),
       "b.toml: clients[1].principal: must be in [1, 4294967295], got 0"},
      {byzantine_with("principal = 3", "principal = 4294967296"),
       "b.toml: clients[1].principal: must be in [1, 4294967295], got 4294967296"},
      {byzantine_with("principal = 3\n", ""), "b.toml: clients[1].principal: missing"},
      {byzantine_with("public_key = \"" + key_hex(10) + "\"", ""),
       "b.toml: clients[1].public_key: missing (byzantine mode needs every key)"},
      {byzantine_text().substr(0, byzantine_text().find("[[clients]]")),
       "b.toml: clients: missing (byzantine mode accepts only requests signed by a [[clients]] "
       "principal; list at least one)"},
      // Byzantine-only settings in a failstop file are mistakes, not silently ignored.
      {with("t = 2", "t = 2\n[byzantine]\ndelta_ms = 1\nepsilon_ms = 1\n"),
       "cluster.toml: byzantine: only in byzantine mode"},
      {with("address = \"127.0.0.1:7000\"", "address = \"127.0.0.1:7000\"\n" + first_key),
       "cluster.toml: replicas[0].public_key: only in byzantine mode"},
      {kValid + "\n[[clients]]\nprincipal = 1\npublic_key = \"" + key_hex(1) + "\"\n",
       "cluster.toml: clients: only in byzantine mode"},
  };
  for (const Case& c : cases) {
    std::string message = "(no error)";
    try {
      parse_config(c.text,
                   c.text.find("byzantine\"") != std::string::npos ? "b.toml" : "cluster.toml");
    } catch (const ConfigError& error) {
      message = error.what();
    }
    EXPECT_EQ(message, c.message);
  }
}

TEST(ConfigTest, ValidateChecksByzantineConfigsBuiltInCode) {
  ClusterConfig config = parse_config(byzantine_text(), "b.toml");
  validate_config(config, "built");
  ClusterConfig unsorted = config;
  std::swap(unsorted.clients[0], unsorted.clients[1]);
  EXPECT_THROW(validate_config(unsorted, "built"), ConfigError);
  ClusterConfig keyless = config;
  keyless.replicas[2].public_key.reset();
  EXPECT_THROW(validate_config(keyless, "built"), ConfigError);
  ClusterConfig no_timing = config;
  no_timing.byzantine.reset();
  EXPECT_THROW(validate_config(no_timing, "built"), ConfigError);
}

TEST(ConfigTest, FormatThenParseGivesTheSameConfig) {
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  EXPECT_EQ(parse_config(format_config(config), "again.toml"), config);
}

TEST(ConfigTest, WriteThenLoad) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("lockstep-config-test-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  write_config(dir / "cluster.toml", config);
  EXPECT_EQ(load_config(dir / "cluster.toml"), config);
  EXPECT_FALSE(std::filesystem::exists(dir / "cluster.toml.tmp"));
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, MissingFileIsAnError) {
  try {
    load_config("/nonexistent/cluster.toml");
    FAIL() << "no error";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("/nonexistent/cluster.toml: cannot read"),
              std::string::npos)
        << error.what();
  }
}

// Every error names the file and the field, and says what was wrong.
TEST(ConfigTest, EachErrorNamesItsField) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {with("127.0.0.1:7002", "abc"),
       R"(cluster.toml: replicas[1].address: expected "host:port", got "abc")"},
      {with("127.0.0.1:7002", "127.0.0.1:99999"),
       R"(cluster.toml: replicas[1].address: expected "host:port", got "127.0.0.1:99999")"},
      {with("address = \"127.0.0.1:7002\"", "address = 7002"),
       "cluster.toml: replicas[1].address: expected a string \"host:port\", got an integer"},
      {with("address = \"127.0.0.1:7002\"", ""), "cluster.toml: replicas[1].address: missing"},
      {with("address = \"127.0.0.1:7002\"", "address = \"127.0.0.1:7000\""),
       "cluster.toml: replicas[2].address: same address as replicas[0] (127.0.0.1:7000)"},
      {with("id = 2", "id = 0"), "cluster.toml: replicas[1].id: duplicate id 0 (also replicas[0])"},
      {with("id = 2", "id = 5"), "cluster.toml: replicas[1].id: must be in [0, 2], got 5"},
      {with("id = 2", "id = \"two\""),
       "cluster.toml: replicas[1].id: expected an integer, got a string"},
      {with("id = 2", "ide = 2"), "cluster.toml: replicas[1].ide: unknown key"},
      {with("mode = \"failstop\"", "mode = \"paxos\""),
       "cluster.toml: mode: expected \"failstop\" or \"byzantine\", got \"paxos\""},
      {with("mode = \"failstop\"", ""),
       "cluster.toml: mode: missing (expected \"failstop\" or \"byzantine\")"},
      {with("t = 2", "t = 1"),
       "cluster.toml: replicas: failstop mode with t = 1 needs 2 replicas, got 3"},
      {with("t = 2", "t = -1"), "cluster.toml: t: must be in [0, 32], got -1"},
      {with("t = 2", "t = 2.5"), "cluster.toml: t: expected an integer, got a float"},
      {with("t = 2", ""), "cluster.toml: t: missing"},
      {with("heartbeat_interval_ms = 10", "heartbeat_interval_ms = 0"),
       "cluster.toml: timeouts.heartbeat_interval_ms: must be in [1, 86400000], got 0"},
      {with("failure_timeout_ms = 300", "failure_timeout_ms = 20"),
       "cluster.toml: timeouts.failure_timeout_ms: must exceed 2 x heartbeat_interval_ms (20), "
       "got 20"},
      {with("failure_timeout_ms = 300", "failure_timeout = 300"),
       "cluster.toml: timeouts.failure_timeout: unknown key"},
      {with("deadline_ms = 1500", "deadline_ms = 0"),
       "cluster.toml: client.deadline_ms: must be in [1, 86400000], got 0"},
      // A top-level `timeouts = 3` (the [timeouts] table cut off, or TOML rejects the
      // redefinition).
      {without_tables_from("[timeouts]", with("t = 2", "t = 2\ntimeouts = 3")),
       "cluster.toml: timeouts: expected a table, got an integer"},
      {with("t = 2", "t = 2\nport = 1"), "cluster.toml: port: unknown key"},
  };
  for (const Case& c : cases)
    EXPECT_EQ(error_of(c.text), c.message);
}

// kValid with a [limits] table appended.
std::string with_limits(const std::string& body) {
  return kValid + "\n[limits]\n" + body + "\n";
}

TEST(ConfigTest, LimitsDefaultToTheLibraryDefaults) {
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  EXPECT_EQ(config.limits, LimitsConfig{});
  // Without [limits], a replica and its listener get what code that never read a file gets.
  const ReplicaLimits replica = config.replica_limits();
  EXPECT_EQ(replica.service.session_idle_expiry_us, ServiceOptions{}.session_idle_expiry_us);
  EXPECT_EQ(replica.service.sessions_max, ServiceOptions{}.sessions_max);
  EXPECT_EQ(replica.pending_requests_max, ReplicaLimits{}.pending_requests_max);
  const net::AcceptorLimits acceptor = config.acceptor_limits();
  EXPECT_EQ(acceptor.connections_max, net::AcceptorLimits{}.connections_max);
  EXPECT_EQ(acceptor.client_output_bytes_max, net::AcceptorLimits{}.client_output_bytes_max);
  EXPECT_EQ(config.limits.peer_resend_bytes_max, net::PeerChannelOptions{}.resend_bytes_max);
  // The values the documentation (config.h, README) shows.
  EXPECT_EQ(config.limits.session_idle_expiry_ms, 600'000u);
  EXPECT_EQ(config.limits.sessions_max, 1'048'576u);
  EXPECT_EQ(config.limits.pending_requests_max, 100'000u);
  EXPECT_EQ(config.limits.connections_max, 4096u);
  EXPECT_EQ(config.limits.client_output_bytes_max, 8'388'608u);
  EXPECT_EQ(config.limits.peer_resend_bytes_max, 268'435'456u);
}

TEST(ConfigTest, ParsesLimits) {
  ClusterConfig config = parse_config(with_limits(R"(
session_idle_expiry_ms = 120000
sessions_max = 5000
pending_requests_max = 300
connections_max = 64
client_output_bytes_max = 1048576
peer_resend_bytes_max = 33554432
)"),
                                      "cluster.toml");
  EXPECT_EQ(config.limits.session_idle_expiry_ms, 120'000u);
  EXPECT_EQ(config.limits.peer_resend_bytes_max, 33'554'432u);
  const ReplicaLimits replica = config.replica_limits();
  EXPECT_EQ(replica.service.session_idle_expiry_us, 120'000'000u);
  EXPECT_EQ(replica.service.sessions_max, 5000u);
  EXPECT_EQ(replica.pending_requests_max, 300u);
  const net::AcceptorLimits acceptor = config.acceptor_limits();
  EXPECT_EQ(acceptor.connections_max, 64u);
  EXPECT_EQ(acceptor.client_output_bytes_max, 1'048'576u);

  // Only the keys given change; the rest keep their defaults.
  ClusterConfig partial = parse_config(with_limits("sessions_max = 77"), "cluster.toml");
  LimitsConfig expected;
  expected.sessions_max = 77;
  EXPECT_EQ(partial.limits, expected);
}

TEST(ConfigTest, LimitsRoundTrip) {
  ClusterConfig config = parse_config(with_limits(R"(
session_idle_expiry_ms = 90000
pending_requests_max = 12
peer_resend_bytes_max = 20000000
)"),
                                      "cluster.toml");
  const std::string text = format_config(config);
  EXPECT_NE(text.find("\n[limits]\n"), std::string::npos) << text;
  EXPECT_NE(text.find("pending_requests_max = 12\n"), std::string::npos) << text;
  EXPECT_EQ(parse_config(text, "again.toml"), config);
  // The defaults round-trip too (the section is always written, like [timeouts]).
  ClusterConfig defaults = parse_config(kValid, "cluster.toml");
  EXPECT_EQ(parse_config(format_config(defaults), "again.toml"), defaults);
  // And a byzantine file with limits.
  ClusterConfig byzantine =
      parse_config(byzantine_text() + "\n[limits]\nconnections_max = 9\n", "cluster.toml");
  EXPECT_EQ(byzantine.limits.connections_max, 9u);
  EXPECT_EQ(parse_config(format_config(byzantine), "again.toml"), byzantine);
}

TEST(ConfigTest, EachLimitErrorNamesItsField) {
  struct Case {
    std::string body;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"session_idle_expiry_ms = 0",
       "cluster.toml: limits.session_idle_expiry_ms: must be in [1, 2592000000], got 0"},
      {"session_idle_expiry_ms = 2592000001",
       "cluster.toml: limits.session_idle_expiry_ms: must be in [1, 2592000000], got 2592000001"},
      {"sessions_max = 0", "cluster.toml: limits.sessions_max: must be in [1, 67108864], got 0"},
      {"sessions_max = -3", "cluster.toml: limits.sessions_max: must be in [1, 67108864], got -3"},
      {"sessions_max = 67108865",
       "cluster.toml: limits.sessions_max: must be in [1, 67108864], got 67108865"},
      {"pending_requests_max = 0",
       "cluster.toml: limits.pending_requests_max: must be in [1, 16777216], got 0"},
      {"pending_requests_max = 16777217",
       "cluster.toml: limits.pending_requests_max: must be in [1, 16777216], got 16777217"},
      {"connections_max = 0",
       "cluster.toml: limits.connections_max: must be in [1, 1048576], got 0"},
      {"connections_max = 1048577",
       "cluster.toml: limits.connections_max: must be in [1, 1048576], got 1048577"},
      {"client_output_bytes_max = 1000",
       "cluster.toml: limits.client_output_bytes_max: must be in [65536, 1073741824], got 1000"},
      {"client_output_bytes_max = 1073741825",
       "cluster.toml: limits.client_output_bytes_max: must be in [65536, 1073741824], got "
       "1073741825"},
      {"peer_resend_bytes_max = 1048576",
       "cluster.toml: limits.peer_resend_bytes_max: must be in [16777216, 17179869184], got "
       "1048576"},
      {"peer_resend_bytes_max = 17179869185",
       "cluster.toml: limits.peer_resend_bytes_max: must be in [16777216, 17179869184], got "
       "17179869185"},
      {"connections_max = \"many\"",
       "cluster.toml: limits.connections_max: expected an integer, got a string"},
      {"session_expiry_ms = 1000", "cluster.toml: limits.session_expiry_ms: unknown key"},
      // kValid's client deadline is 1500 ms: an expiry at or below it is refused.
      {"session_idle_expiry_ms = 1500",
       "cluster.toml: client.deadline_ms: must be below limits.session_idle_expiry_ms (1500), got "
       "1500: a client retrying a request after its session expired could see it executed twice"},
      {"session_idle_expiry_ms = 1000",
       "cluster.toml: client.deadline_ms: must be below limits.session_idle_expiry_ms (1000), got "
       "1500: a client retrying a request after its session expired could see it executed twice"},
  };
  for (const Case& c : cases)
    EXPECT_EQ(error_of(with_limits(c.body)), c.message) << c.body;
  // Strictly below is enough for the check (the documentation asks for far below).
  EXPECT_EQ(parse_config(with_limits("session_idle_expiry_ms = 1501"), "cluster.toml")
                .limits.session_idle_expiry_ms,
            1501u);
  // A deadline raised past the default expiry is refused just the same.
  EXPECT_EQ(error_of(with("deadline_ms = 1500", "deadline_ms = 600000")),
            "cluster.toml: client.deadline_ms: must be below limits.session_idle_expiry_ms "
            "(600000), got 600000: a client retrying a request after its session expired could "
            "see it executed twice");
  // `limits = 3` at the top level is not a table.
  EXPECT_EQ(error_of(with("t = 2", "t = 2\nlimits = 3")),
            "cluster.toml: limits: expected a table, got an integer");
}

TEST(ConfigTest, ValidateChecksLimitsOfConfigsBuiltInCode) {
  const ClusterConfig config = parse_config(kValid, "cluster.toml");
  validate_config(config, "built");
  ClusterConfig zero = config;
  zero.limits.pending_requests_max = 0;
  EXPECT_THROW(validate_config(zero, "built"), ConfigError);
  ClusterConfig tiny_resend = config;
  tiny_resend.limits.peer_resend_bytes_max = 1024;
  EXPECT_THROW(validate_config(tiny_resend, "built"), ConfigError);
  ClusterConfig expiry_below_deadline = config;
  expiry_below_deadline.limits.session_idle_expiry_ms = config.client.deadline_ms;
  try {
    validate_config(expiry_below_deadline, "built");
    FAIL() << "no error";
  } catch (const ConfigError& error) {
    EXPECT_EQ(std::string(error.what()).rfind("built: client.deadline_ms: ", 0), 0u)
        << error.what();
  }
}

TEST(ConfigTest, SyntaxErrorsGiveLineAndColumn) {
  const std::string message = error_of("mode = \"failstop\"\nt = = 1\n");
  EXPECT_EQ(message.rfind("cluster.toml:2:", 0), 0u) << message;
}

TEST(ConfigTest, ValidateRejectsCodeBuiltConfigsToo) {
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  config.replicas.pop_back();
  EXPECT_THROW(validate_config(config, "built"), ConfigError);
}

TEST(ConfigTest, NoStorageTableMeansNoDurability) {
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  EXPECT_FALSE(config.storage.enabled());
  EXPECT_FALSE(config.storage.durable());
  EXPECT_FALSE(config.failstop_options(ReplicaId{0}, 1).durable);
  EXPECT_EQ(format_config(config).find("[storage]"), std::string::npos);
}

TEST(ConfigTest, ParsesStorageWithDefaults) {
  ClusterConfig config = parse_config(kValid + "\n[storage]\ndata_dir = \"/var/lib/ls\"\n", "c");
  EXPECT_EQ(config.storage.data_dir, "/var/lib/ls");
  EXPECT_EQ(config.storage.sync, storage::SyncPolicy::kAlways);
  EXPECT_EQ(config.storage.batch_interval_ms, 2u);
  EXPECT_EQ(config.storage.checkpoint_entries, 100'000u);
  EXPECT_EQ(config.storage.segment_mb, 64u);
  EXPECT_TRUE(config.storage.durable());
  EXPECT_TRUE(config.failstop_options(ReplicaId{2}, 1).durable);
  EXPECT_EQ(config.storage.replica_dir(ReplicaId{2}),
            std::filesystem::path("/var/lib/ls/replica-2"));
  const storage::WalOptions wal = config.storage.wal_options();
  EXPECT_EQ(wal.segment_bytes, uint64_t{64} << 20);
  EXPECT_EQ(wal.sync_policy, storage::SyncPolicy::kAlways);
  EXPECT_EQ(wal.batch_interval_ns, 2'000'000u);
}

TEST(ConfigTest, ParsesEveryStorageKey) {
  ClusterConfig config = parse_config(kValid + R"(
[storage]
data_dir = "d"
sync = "batch-interval"
batch_interval_ms = 7
checkpoint_entries = 200
segment_mb = 1
)",
                                      "c");
  EXPECT_EQ(config.storage.data_dir, "d");  // parse_config keeps it as written
  EXPECT_EQ(config.storage.sync, storage::SyncPolicy::kBatchInterval);
  EXPECT_EQ(config.storage.batch_interval_ms, 7u);
  EXPECT_EQ(config.storage.checkpoint_entries, 200u);
  EXPECT_EQ(config.storage.segment_mb, 1u);
  EXPECT_EQ(config.storage.wal_options().segment_bytes, uint64_t{1} << 20);
  EXPECT_EQ(config.storage.wal_options().batch_interval_ns, 7'000'000u);
  // Only a sync before every output lets a restarted replica rejoin as the same member.
  EXPECT_TRUE(config.storage.enabled());
  EXPECT_FALSE(config.storage.durable());
  EXPECT_FALSE(config.failstop_options(ReplicaId{0}, 1).durable);
  EXPECT_EQ(parse_config(format_config(config), "again").storage, config.storage);
  config.storage.sync = storage::SyncPolicy::kNone;
  EXPECT_FALSE(config.failstop_options(ReplicaId{0}, 1).durable);
  EXPECT_EQ(parse_config(format_config(config), "again").storage, config.storage);
}

TEST(ConfigTest, StorageDataDirWithQuotesRoundTrips) {
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  config.storage.data_dir = "/tmp/it's \"here\"";
  EXPECT_EQ(parse_config(format_config(config), "again"), config);
}

TEST(ConfigTest, LoadResolvesARelativeDataDirAgainstTheFilesDirectory) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("lockstep-config-storage-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir / "sub");
  {
    std::ofstream out(dir / "sub" / "cluster.toml");
    out << kValid << "\n[storage]\ndata_dir = \"../data\"\n";
  }
  const ClusterConfig config = load_config(dir / "sub" / "cluster.toml");
  EXPECT_EQ(config.storage.data_dir, (std::filesystem::absolute(dir) / "data").string());
  {
    std::ofstream out(dir / "abs.toml");
    out << kValid << "\n[storage]\ndata_dir = \"/srv/x\"\n";
  }
  EXPECT_EQ(load_config(dir / "abs.toml").storage.data_dir, "/srv/x");
  std::filesystem::remove_all(dir);
}

TEST(ConfigTest, EachStorageErrorNamesItsField) {
  struct Case {
    std::string table;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"sync = \"always\"", "cluster.toml: storage.data_dir: missing"},
      {"data_dir = 3", "cluster.toml: storage.data_dir: expected a string, got an integer"},
      {"data_dir = \"\"", "cluster.toml: storage.data_dir: must not be empty"},
      {"data_dir = \"d\"\nsync = \"sometimes\"",
       "cluster.toml: storage.sync: expected \"always\", \"batch-interval\" or \"none\", got "
       "\"sometimes\""},
      {"data_dir = \"d\"\nsync = 1", "cluster.toml: storage.sync: expected a string"},
      {"data_dir = \"d\"\nbatch_interval_ms = 0",
       "cluster.toml: storage.batch_interval_ms: must be in [1, 86400000], got 0"},
      {"data_dir = \"d\"\ncheckpoint_entries = 0",
       "cluster.toml: storage.checkpoint_entries: must be in [1, 1099511627776], got 0"},
      {"data_dir = \"d\"\nsegment_mb = 0",
       "cluster.toml: storage.segment_mb: must be in [1, 1024], got 0"},
      {"data_dir = \"d\"\nsegment_mb = 1025",
       "cluster.toml: storage.segment_mb: must be in [1, 1024], got 1025"},
      {"data_dir = \"d\"\nfsync = \"always\"", "cluster.toml: storage.fsync: unknown key"},
  };
  for (const Case& c : cases) {
    const std::string message = error_of(kValid + "\n[storage]\n" + c.table + "\n");
    EXPECT_EQ(message.rfind(c.message, 0), 0u) << c.table << "\n  gave: " << message;
  }
  EXPECT_EQ(error_of("storage = 1\n" + kValid).rfind("cluster.toml: storage: expected a table", 0),
            0u);
}

// [storage] applies to the byzantine mode too: with sync = "always" the core certifies every
// certify_interval_ms (default 2), under any other policy or without a table it is not durable.
TEST(ConfigTest, ByzantineModeIsDurableExactlyWhenTheStorageIs) {
  const auto certify_us = [](const std::string& text) {
    return parse_config(text, "b.toml")
        .byzantine_options(ReplicaId{1}, nullptr, nullptr)
        .certify_interval_us;
  };
  const ClusterConfig durable =
      parse_config(byzantine_text() + "\n[storage]\ndata_dir = \"d\"\n", "b.toml");
  EXPECT_TRUE(durable.storage.durable());
  EXPECT_EQ(durable.byzantine->certify_interval_ms, 2u);
  EXPECT_EQ(certify_us(byzantine_text() + "\n[storage]\ndata_dir = \"d\"\n"), 2'000u);
  EXPECT_EQ(certify_us(byzantine_with("epsilon_ms = 1", "epsilon_ms = 1\ncertify_interval_ms = 5") +
                       "\n[storage]\ndata_dir = \"d\"\nsync = \"always\"\n"),
            5'000u);
  EXPECT_EQ(certify_us(byzantine_text()), 0u);
  EXPECT_EQ(certify_us(byzantine_with("epsilon_ms = 1", "epsilon_ms = 1\ncertify_interval_ms = 5")),
            0u);
  EXPECT_EQ(certify_us(byzantine_text() + "\n[storage]\ndata_dir = \"d\"\nsync = \"none\"\n"), 0u);
  EXPECT_EQ(
      certify_us(byzantine_text() + "\n[storage]\ndata_dir = \"d\"\nsync = \"batch-interval\"\n"),
      0u);
  // Every other option is the same durable or not.
  byzantine::Options with_disk = durable.byzantine_options(ReplicaId{1}, nullptr, nullptr);
  with_disk.certify_interval_us = 0;
  const byzantine::Options without_disk =
      parse_config(byzantine_text(), "b.toml").byzantine_options(ReplicaId{1}, nullptr, nullptr);
  EXPECT_EQ(with_disk.checkpoint_interval_us, without_disk.checkpoint_interval_us);
  EXPECT_EQ(with_disk.delta_us, without_disk.delta_us);
  EXPECT_FALSE(with_disk.join);
  // And the file says it back.
  ClusterConfig tuned =
      parse_config(byzantine_with("epsilon_ms = 1", "epsilon_ms = 1\ncertify_interval_ms = 4") +
                       "\n[storage]\ndata_dir = \"/srv/d\"\n",
                   "b.toml");
  EXPECT_EQ(tuned.byzantine->certify_interval_ms, 4u);
  EXPECT_EQ(parse_config(format_config(tuned), "again.toml"), tuned);
}

TEST(ConfigTest, CertifyIntervalIsPositiveAndDividesTheCheckpointInterval) {
  const auto error_in = [](const std::string& text) {
    try {
      parse_config(text, "b.toml");
    } catch (const ConfigError& error) {
      return std::string(error.what());
    }
    return std::string("(no error)");
  };
  const std::string durable = "\n[storage]\ndata_dir = \"d\"\n";
  EXPECT_EQ(error_in(byzantine_with("epsilon_ms = 1", "epsilon_ms = 1\ncertify_interval_ms = 0")),
            "b.toml: byzantine.certify_interval_ms: must be in [1, 86400000], got 0");
  EXPECT_EQ(
      error_in(byzantine_with("epsilon_ms = 1", "epsilon_ms = 1\ncertify_interval_ms = \"2\"")),
      "b.toml: byzantine.certify_interval_ms: expected an integer, got a string");
  // 1001 ms is not a multiple of the default 2 ms: refused once durable.
  const std::string odd =
      byzantine_with("epsilon_ms = 1", "epsilon_ms = 1\ncheckpoint_interval_ms = 1001");
  EXPECT_EQ(error_in(odd + durable),
            "b.toml: byzantine.checkpoint_interval_ms: must be a multiple of "
            "byzantine.certify_interval_ms (2) in a durable cluster ([storage] with sync = "
            "\"always\"), got 1001");
  // A cluster that certifies nothing keeps the intervals it had.
  EXPECT_EQ(error_in(odd), "(no error)");
  EXPECT_EQ(error_in(odd + "\n[storage]\ndata_dir = \"d\"\nsync = \"none\"\n"), "(no error)");
  EXPECT_EQ(error_in(byzantine_with("epsilon_ms = 1",
                                    "epsilon_ms = 1\ncheckpoint_interval_ms = 1001\n"
                                    "certify_interval_ms = 7") +
                     durable),
            "(no error)");
  EXPECT_EQ(error_in(byzantine_with("epsilon_ms = 1", "epsilon_ms = 1\ncertify_interval_ms = 3") +
                     durable),
            "b.toml: byzantine.checkpoint_interval_ms: must be a multiple of "
            "byzantine.certify_interval_ms (3) in a durable cluster ([storage] with sync = "
            "\"always\"), got 1000");
  // A failstop file has no [byzantine] table to put it in.
  EXPECT_EQ(error_in(with("t = 2", "t = 2\n[byzantine]\ncertify_interval_ms = 2\n")),
            "b.toml: byzantine: only in byzantine mode");

  // Configurations built in code are held to the same rules.
  ClusterConfig built = parse_config(byzantine_text() + durable, "b.toml");
  validate_config(built, "built");
  built.byzantine->certify_interval_ms = 0;
  EXPECT_THROW(validate_config(built, "built"), ConfigError);
  built.byzantine->certify_interval_ms = 3;
  EXPECT_THROW(validate_config(built, "built"), ConfigError);
  built.storage.sync = storage::SyncPolicy::kBatchInterval;
  validate_config(built, "built");
  built.byzantine->certify_interval_ms = kTimeoutMsMax + 1;
  EXPECT_THROW(validate_config(built, "built"), ConfigError);
}

TEST(ConfigTest, ValidateChecksStorageOfConfigsBuiltInCode) {
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  config.storage.data_dir = "/d";
  config.storage.segment_mb = 0;
  EXPECT_THROW(validate_config(config, "built"), ConfigError);
}

// ---- spares (member = false; failstop reconfiguration) ----------------------------------------

// kValid with a spare: replica 3, listed but not a member of view 0.
std::string with_spare(const std::string& member_line = "member = false") {
  return with("[timeouts]", "[[replicas]]\nid = 3\naddress = \"127.0.0.1:7003\"\n" + member_line +
                                "\n\n[timeouts]");
}

TEST(ConfigTest, EveryReplicaIsAMemberByDefault) {
  const ClusterConfig config = parse_config(kValid, "cluster.toml");
  for (const ReplicaConfig& replica : config.replicas)
    EXPECT_TRUE(replica.member);
  EXPECT_FALSE(config.has_spares());
  EXPECT_EQ(config.initial_members(),
            (std::vector<ReplicaId>{ReplicaId{0}, ReplicaId{1}, ReplicaId{2}}));
  // Empty: the core's default, every listed replica.
  EXPECT_TRUE(config.failstop_options(ReplicaId{0}, 1).initial_members.empty());
  // `member = true` is the default said out loud.
  EXPECT_EQ(parse_config(with("id = 2\n", "id = 2\nmember = true\n"), "c"),
            parse_config(kValid, "c"));
}

TEST(ConfigTest, ParsesASpare) {
  const ClusterConfig config = parse_config(with_spare(), "cluster.toml");
  ASSERT_EQ(config.replica_count(), 4u);
  EXPECT_TRUE(config.replicas[2].member);
  EXPECT_FALSE(config.replicas[3].member);
  EXPECT_EQ(config.replicas[3].address, (net::Address{"127.0.0.1", 7003}));
  EXPECT_TRUE(config.has_spares());
  const std::vector<ReplicaId> members{ReplicaId{0}, ReplicaId{1}, ReplicaId{2}};
  EXPECT_EQ(config.initial_members(), members);
  // Every replica, the spare too, gets the same view 0 and knows every address.
  for (uint32_t id = 0; id < 4; ++id) {
    const failstop::Options options = config.failstop_options(ReplicaId{id}, 5);
    EXPECT_EQ(options.replica_count, 4u);
    EXPECT_EQ(options.initial_members, members);
    EXPECT_FALSE(options.join);
  }
  EXPECT_EQ(config.addresses().size(), 4u);
  EXPECT_EQ(config.client_options().replica_count, 4u);
}

TEST(ConfigTest, ASpareRoundTrips) {
  const ClusterConfig config = parse_config(with_spare(), "cluster.toml");
  const std::string text = format_config(config);
  EXPECT_NE(text.find("member = false"), std::string::npos) << text;
  EXPECT_EQ(parse_config(text, "again.toml"), config);
  // Members are not marked: files without spares look as before.
  EXPECT_EQ(format_config(parse_config(kValid, "c")).find("member"), std::string::npos);
}

TEST(ConfigTest, SpareErrorsNameTheirField) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {with_spare("member = \"no\""),
       "cluster.toml: replicas[3].member: expected true or false, got a string"},
      {with_spare("member = 0"),
       "cluster.toml: replicas[3].member: expected true or false, got an integer"},
      {with_spare("membr = false"), "cluster.toml: replicas[3].membr: unknown key"},
      // t counts the members of view 0; a spare does not make up for a missing member.
      {with("id = 2\naddress = \"127.0.0.1:7002\"",
            "id = 2\naddress = \"127.0.0.1:7002\"\nmember = false"),
       "cluster.toml: replicas: failstop mode with t = 2 needs 3 replicas that are members "
       "(spares, member = false, not counted), got 2 (and 1 spares)"},
      {with_spare("member = true"),
       "cluster.toml: replicas: failstop mode with t = 2 needs 3 replicas, got 4"},
  };
  for (const Case& c : cases)
    EXPECT_EQ(error_of(c.text), c.message);
}

TEST(ConfigTest, AtLeastOneReplicaIsAMember) {
  const std::string text = R"(
mode = "failstop"
t = 0
[[replicas]]
id = 0
address = "127.0.0.1:7000"
member = false
)";
  EXPECT_EQ(error_of(text),
            "cluster.toml: replicas: no member: every replica says member = false, but view 0 "
            "needs at least one");
  // One member and one spare is fine with t = 0.
  const ClusterConfig config =
      parse_config(text + "[[replicas]]\nid = 1\naddress = \"127.0.0.1:7001\"\n", "cluster.toml");
  EXPECT_EQ(config.initial_members(), std::vector<ReplicaId>{ReplicaId{1}});
}

// ---- byzantine membership changes (docs/DESIGN.md §11.9) -------------------------------------

// byzantine_text() with replicas 3 and 4 listed as spares.
std::string byzantine_with_spares() {
  std::string text = byzantine_text();
  const std::string spares = "[[replicas]]\nid = 3\naddress = \"127.0.0.1:7003\"\npublic_key = \"" +
                             key_hex(4) +
                             "\"\nmember = false\n\n[[replicas]]\nid = 4\naddress = "
                             "\"127.0.0.1:7004\"\npublic_key = \"" +
                             key_hex(5) + "\"\nmember = false\n\n";
  text.insert(text.find("[byzantine]"), spares);
  return text;
}

std::string admin_key_line(uint8_t seed = 20) {
  return "admin_public_key = \"" + key_hex(seed) + "\"\n";
}

TEST(ConfigTest, ByzantineSparesAndAnAdministrator) {
  std::string text = byzantine_with_spares();
  text.insert(text.find("delta_ms = 8"), admin_key_line());
  const ClusterConfig config = parse_config(text, "b.toml");
  EXPECT_EQ(config.replica_count(), 5u);
  EXPECT_EQ(config.initial_members(),
            (std::vector<ReplicaId>{ReplicaId{0}, ReplicaId{1}, ReplicaId{2}}));
  ASSERT_TRUE(config.byzantine->admin_public_key.has_value());
  std::array<uint8_t, 32> seed{};
  seed.fill(20);
  const crypto::KeyPair admin = crypto::derive_key_pair(crypto::Scheme::kEd25519, seed);
  EXPECT_EQ(*config.byzantine->admin_public_key, admin.public_key);

  // The administrator signs as client principal kAdminPrincipal.
  const crypto::KeyDirectory keys = config.key_directory();
  ASSERT_TRUE(keys.clients.contains(kAdminPrincipal));
  EXPECT_EQ(keys.clients.at(kAdminPrincipal), admin.public_key);
  EXPECT_EQ(keys.replicas.size(), 5u);

  // The core runs epoch 0 with the members, over every listed replica; clients count likewise.
  const byzantine::Options options = config.byzantine_options(ReplicaId{3}, nullptr, nullptr);
  EXPECT_EQ(options.replica_count, 5u);
  EXPECT_EQ(options.t, 1u);
  EXPECT_EQ(options.members, config.initial_members());
  const ClientOptions client = config.client_options();
  EXPECT_EQ(client.replica_count, 5u);
  EXPECT_EQ(client.reply_quorum, 2u);
  EXPECT_EQ(client.initial_members, config.initial_members());

  // Written out and read back the same.
  EXPECT_EQ(parse_config(format_config(config), "again"), config);
  // Without an administrator there is none in the key directory.
  const ClusterConfig plain = parse_config(byzantine_text(), "b.toml");
  EXPECT_FALSE(plain.byzantine->admin_public_key.has_value());
  EXPECT_FALSE(plain.key_directory().clients.contains(kAdminPrincipal));
  EXPECT_EQ(parse_config(format_config(plain), "again"), plain);
}

TEST(ConfigTest, ByzantineMembershipErrorsNameTheirField) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::string with_admin = byzantine_with("delta_ms = 8", admin_key_line() + "delta_ms = 8");
  const std::string durable = "\n[storage]\ndata_dir = \"data\"\nsync = \"always\"\n";
  const std::vector<Case> cases = {
      // Spares are extra: the members must still be 2t+1.
      {byzantine_with("id = 2\n", "id = 2\nmember = false\n"),
       "b.toml: replicas: byzantine mode with t = 1 needs 3 replicas that are members (spares, "
       "member = false, not counted), got 2 (and 1 spares)"},
      {byzantine_with("delta_ms = 8", "admin_public_key = \"abc\"\ndelta_ms = 8"),
       "b.toml: byzantine.admin_public_key: expected 64 hex digits (a 32-byte Ed25519 public "
       "key), got \"abc\""},
      {byzantine_with("delta_ms = 8", "admin_public_key = 7\ndelta_ms = 8"),
       "b.toml: byzantine.admin_public_key: expected a string of 64 hex digits, got an integer"},
      {with_admin + durable,
       "b.toml: byzantine.admin_public_key: membership changes are not built for durable "
       "byzantine clusters yet ([storage] with sync = \"always\"): remove one or the other"},
      {byzantine_with("delta_ms = 8", admin_key_line(2) + "delta_ms = 8"),
       "b.toml: byzantine.admin_public_key: same key as replicas[1]"},
      {byzantine_with("principal = 3", "principal = 4294967295"),
       "b.toml: clients[1].principal: 4294967295 is reserved for the administrator "
       "(byzantine.admin_public_key)"},
      {with("t = 2", "t = 2\n[byzantine]\nadmin_public_key = \"" + key_hex(20) + "\"\n"),
       "cluster.toml: byzantine: only in byzantine mode"},
  };
  for (const Case& c : cases) {
    std::string message = "(no error)";
    try {
      parse_config(c.text,
                   c.text.find("byzantine\"") != std::string::npos ? "b.toml" : "cluster.toml");
    } catch (const ConfigError& error) {
      message = error.what();
    }
    EXPECT_EQ(message, c.message);
  }
  // A durable cluster without an administrator, or an administrator without durability
  // ("batch-interval" is not durable), are fine.
  EXPECT_NO_THROW(parse_config(byzantine_text() + durable, "b.toml"));
  EXPECT_NO_THROW(parse_config(
      with_admin + "\n[storage]\ndata_dir = \"data\"\nsync = \"batch-interval\"\n", "b.toml"));
  // `member = true` says nothing new and is accepted.
  EXPECT_NO_THROW(parse_config(byzantine_with("id = 2\n", "id = 2\nmember = true\n"), "b"));
  // Built in code, the same checks.
  ClusterConfig config = parse_config(with_admin, "b.toml");
  config.storage.data_dir = "/tmp/x";
  config.storage.sync = storage::SyncPolicy::kAlways;
  try {
    validate_config(config, "built");
    ADD_FAILURE() << "accepted an administrator in a durable cluster";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("built: byzantine.admin_public_key: membership"),
              std::string::npos)
        << error.what();
  }
}

TEST(ConfigTest, AdministratorCredentialsMustBeTheListedKey) {
  std::array<uint8_t, 32> seed{};
  seed.fill(20);
  const crypto::KeyPair admin = crypto::derive_key_pair(crypto::Scheme::kEd25519, seed);
  seed.fill(21);
  const crypto::KeyPair other = crypto::derive_key_pair(crypto::Scheme::kEd25519, seed);
  const ClusterConfig config =
      parse_config(byzantine_with("delta_ms = 8", admin_key_line() + "delta_ms = 8"), "b.toml");
  const ClientCredentials credentials = admin_credentials(config, admin, "admin.key");
  EXPECT_EQ(credentials.principal, kAdminPrincipal);
  ASSERT_TRUE(credentials.signer && credentials.verifier);
  // What it signs checks under the cluster's keys as the administrator's.
  ClientRequest request{client_id_of(kAdminPrincipal, 9), Sequence{1}, Sequence{1}, {1, 2}, {}};
  crypto::sign_request(*credentials.signer, request);
  EXPECT_TRUE(crypto::verify_request(*credentials.verifier, request));

  auto error_of_credentials = [](const ClusterConfig& c, const crypto::KeyPair& keys) {
    try {
      admin_credentials(c, keys, "k.key");
    } catch (const std::runtime_error& error) {
      return std::string(error.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(error_of_credentials(config, other)
                .find("is not the cluster's "
                      "byzantine.admin_public_key"),
            std::string::npos);
  EXPECT_NE(error_of_credentials(parse_config(byzantine_text(), "b.toml"), admin)
                .find("the cluster file names no administrator"),
            std::string::npos);
  EXPECT_NE(error_of_credentials(parse_config(kValid, "c.toml"), admin).find("byzantine clusters"),
            std::string::npos);
}

}  // namespace
}  // namespace lockstep::runtime
