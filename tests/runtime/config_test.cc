#include "runtime/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

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

TEST(ConfigTest, ByzantineNeedsTwoTPlusOneReplicas) {
  ClusterConfig config = parse_config(with("failstop\"\nt = 2", "byzantine\"\nt = 1"), "c.toml");
  EXPECT_EQ(config.mode, Mode::kByzantine);
  EXPECT_EQ(config.replica_count(), 3u);
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

TEST(ConfigTest, SyntaxErrorsGiveLineAndColumn) {
  const std::string message = error_of("mode = \"failstop\"\nt = = 1\n");
  EXPECT_EQ(message.rfind("cluster.toml:2:", 0), 0u) << message;
}

TEST(ConfigTest, ValidateRejectsCodeBuiltConfigsToo) {
  ClusterConfig config = parse_config(kValid, "cluster.toml");
  config.replicas.pop_back();
  EXPECT_THROW(validate_config(config, "built"), ConfigError);
}

}  // namespace
}  // namespace lockstep::runtime
