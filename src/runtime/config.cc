#include "runtime/config.h"

#include <fcntl.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "core/assert.h"
#include "crypto/membership.h"

namespace lockstep::runtime {
namespace {

const char* type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// Builds error messages of the form "<source>: <field>: <what>".
class Errors {
 public:
  explicit Errors(const std::string& source) : source_(source) {}
  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw ConfigError(source_ + ": " + field + ": " + what);
  }
  void reject_unknown_keys(const toml::table& table, const std::string& prefix,
                           std::initializer_list<std::string_view> known) const {
    for (auto&& [key, node] : table) {
      if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
        fail(prefix + std::string(key.str()), "unknown key");
      }
    }
  }
  // A non-negative integer in [min, max]; `fallback` when absent.
  uint64_t integer(const toml::table& table, std::string_view key, const std::string& field,
                   uint64_t fallback, uint64_t min, uint64_t max) const {
    const toml::node* node = table.get(key);
    if (node == nullptr) return fallback;
    std::optional<int64_t> value = node->value_exact<int64_t>();
    if (!node->is_integer() || !value) {
      fail(field, std::string("expected an integer, got ") + type_name(node->type()));
    }
    if (*value < 0 || static_cast<uint64_t>(*value) < min || static_cast<uint64_t>(*value) > max) {
      fail(field, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                      std::to_string(*value));
    }
    return static_cast<uint64_t>(*value);
  }
  // A required string of exactly 64 hex digits: an Ed25519 public key.
  crypto::PublicKey public_key(const toml::table& table, const std::string& field) const {
    return public_key(table.get("public_key"), field);
  }
  crypto::PublicKey public_key(const toml::node* node, const std::string& field) const {
    if (node == nullptr) fail(field, "missing (byzantine mode needs every key)");
    if (!node->is_string()) {
      fail(field,
           std::string("expected a string of 64 hex digits, got ") + type_name(node->type()));
    }
    const std::string text = node->value_or(std::string());
    std::optional<crypto::PublicKey> key = crypto::array_from_hex<32>(text);
    if (!key) {
      fail(field, "expected 64 hex digits (a 32-byte Ed25519 public key), got \"" + text + "\"");
    }
    return *key;
  }
  const toml::table* optional_table(const toml::table& table, std::string_view key) const {
    const toml::node* node = table.get(key);
    if (node == nullptr) return nullptr;
    if (!node->is_table()) {
      fail(std::string(key), std::string("expected a table, got ") + type_name(node->type()));
    }
    return node->as_table();
  }

 private:
  const std::string& source_;
};

// The [limits] keys with their ranges, for the parser, the validator and the formatter alike.
struct LimitField {
  std::string_view key;
  uint64_t LimitsConfig::*member;
  uint64_t min;
  uint64_t max;
};
constexpr std::array<LimitField, 6> kLimitFields{{
    {"session_idle_expiry_ms", &LimitsConfig::session_idle_expiry_ms, 1, kSessionIdleExpiryMsMax},
    {"sessions_max", &LimitsConfig::sessions_max, 1, kSessionsMax},
    {"pending_requests_max", &LimitsConfig::pending_requests_max, 1, kPendingRequestsMax},
    {"connections_max", &LimitsConfig::connections_max, 1, kConnectionsMax},
    {"client_output_bytes_max", &LimitsConfig::client_output_bytes_max, kClientOutputBytesMin,
     kClientOutputBytesMax},
    {"peer_resend_bytes_max", &LimitsConfig::peer_resend_bytes_max, kPeerResendBytesMin,
     kPeerResendBytesMax},
}};

// A file without [limits] must mean the same limits as code that never heard of the file.
static_assert(LimitsConfig{}.session_idle_expiry_ms * 1000 ==
              ServiceOptions{}.session_idle_expiry_us);
static_assert(LimitsConfig{}.sessions_max == ServiceOptions{}.sessions_max);
static_assert(LimitsConfig{}.pending_requests_max == ReplicaLimits{}.pending_requests_max);
static_assert(LimitsConfig{}.connections_max == net::AcceptorLimits{}.connections_max);
static_assert(LimitsConfig{}.client_output_bytes_max ==
              net::AcceptorLimits{}.client_output_bytes_max);

// Microseconds as milliseconds with one decimal: 24100 -> "24.1".
std::string format_ms(uint64_t us) {
  return std::to_string(us / 1000) + "." + std::to_string(us % 1000 / 100);
}

}  // namespace

std::string_view mode_name(Mode mode) {
  return mode == Mode::kFailstop ? "failstop" : "byzantine";
}

uint32_t ClusterConfig::replicas_needed(Mode mode, uint32_t t) {
  return mode == Mode::kFailstop ? t + 1 : 2 * t + 1;
}

failstop::Options ClusterConfig::failstop_options(ReplicaId self, uint64_t incarnation) const {
  failstop::Options options;
  options.self = self;
  options.replica_count = replica_count();
  options.incarnation = incarnation;
  options.heartbeat_interval_ns = timeouts.heartbeat_interval_ms * 1'000'000;
  options.failure_timeout_ns = timeouts.failure_timeout_ms * 1'000'000;
  options.relay_timeout_ns = timeouts.relay_timeout_ms * 1'000'000;
  // A view change that stalls is retried well within the failure timeout's order of magnitude.
  options.view_change_retry_ns = std::max<uint64_t>(options.failure_timeout_ns / 2, 1'000'000);
  options.durable = storage.durable();
  if (has_spares()) options.initial_members = initial_members();
  return options;
}

std::vector<ReplicaId> ClusterConfig::initial_members() const {
  std::vector<ReplicaId> members;
  for (const ReplicaConfig& replica : replicas) {
    if (replica.member) members.push_back(replica.id);
  }
  return members;
}

std::filesystem::path StorageConfig::replica_dir(ReplicaId id) const {
  return std::filesystem::path(data_dir) / ("replica-" + std::to_string(id.value));
}

storage::WalOptions StorageConfig::wal_options() const {
  storage::WalOptions options;
  options.segment_bytes = segment_mb << 20;
  options.sync_policy = sync;
  options.batch_interval_ns = batch_interval_ms * 1'000'000;
  return options;
}

byzantine::Options ClusterConfig::byzantine_options(ReplicaId self, const crypto::Signer* signer,
                                                    const crypto::Verifier* verifier) const {
  LOCKSTEP_ASSERT(mode == Mode::kByzantine && byzantine.has_value(),
                  "byzantine_options of a failstop configuration");
  byzantine::Options options;
  options.self = self;
  options.replica_count = replica_count();
  options.t = t;
  options.delta_us = byzantine->delta_ms * 1000;
  options.epsilon_us = byzantine->epsilon_ms * 1000;
  options.relay_timeout_us = byzantine->relay_timeout_ms * 1000;  // 0: the core's default
  options.checkpoint_interval_us = byzantine->checkpoint_interval_ms * 1000;
  // The same switch as failstop::Options::durable: a disk that may lag what was sent is no
  // ground for certifying anything.
  options.certify_interval_us = storage.durable() ? byzantine->certify_interval_ms * 1000 : 0;
  options.signer = signer;
  options.verifier = verifier;
  options.members = initial_members();
  return options;
}

uint64_t ClusterConfig::byzantine_decision_latency_us() const {
  LOCKSTEP_ASSERT(mode == Mode::kByzantine && byzantine.has_value(),
                  "byzantine_decision_latency_us of a failstop configuration");
  return byzantine::Options{}.slot_us +
         uint64_t{t + 1} * (byzantine->delta_ms + byzantine->epsilon_ms) * 1000;
}

crypto::KeyDirectory ClusterConfig::key_directory() const {
  LOCKSTEP_ASSERT(mode == Mode::kByzantine, "key_directory of a failstop configuration");
  crypto::KeyDirectory directory;
  for (const ReplicaConfig& replica : replicas) {
    LOCKSTEP_ASSERT(replica.public_key.has_value(), "a byzantine replica without a key");
    directory.replicas.push_back(*replica.public_key);
  }
  for (const ClientPrincipalConfig& principal : clients)
    directory.clients.emplace(principal.principal, principal.public_key);
  if (byzantine && byzantine->admin_public_key) {
    directory.clients.emplace(kAdminPrincipal, *byzantine->admin_public_key);
  }
  return directory;
}

ClientOptions ClusterConfig::client_options() const {
  ClientOptions options;
  options.replica_count = replica_count();
  options.retry_interval_ns = client.retry_interval_ms * 1'000'000;
  options.deadline_ns = client.deadline_ms * 1'000'000;
  // t+1 matching replies include at least one from an honest replica (byzantine mode).
  options.reply_quorum = mode == Mode::kByzantine ? t + 1 : 1;
  if (mode == Mode::kByzantine) options.initial_members = initial_members();
  return options;
}

ReplicaLimits ClusterConfig::replica_limits() const {
  ReplicaLimits result;
  result.service.session_idle_expiry_us = limits.session_idle_expiry_ms * 1000;
  result.service.sessions_max = static_cast<size_t>(limits.sessions_max);
  result.pending_requests_max = static_cast<size_t>(limits.pending_requests_max);
  if (mode == Mode::kByzantine && byzantine) {
    // Keep a step's signature checks (about 40 µs each, for this replica's admitted requests and
    // the others' proposals of theirs: about n times as many) within a quarter of Δ.
    constexpr uint64_t kCheckUs = 40;
    const uint64_t budget = byzantine->delta_ms * 1000 / (4 * kCheckUs * replica_count());
    result.client_requests_per_step_max = static_cast<size_t>(std::max<uint64_t>(8, budget));
  }
  return result;
}

net::AcceptorLimits ClusterConfig::acceptor_limits() const {
  net::AcceptorLimits result;
  result.connections_max = static_cast<size_t>(limits.connections_max);
  result.client_output_bytes_max = static_cast<size_t>(limits.client_output_bytes_max);
  return result;
}

std::vector<net::Address> ClusterConfig::addresses() const {
  std::vector<net::Address> result;
  for (const ReplicaConfig& replica : replicas)
    result.push_back(replica.address);
  return result;
}

void validate_config(const ClusterConfig& config, const std::string& source) {
  Errors errors(source);
  if (config.t > kFaultsTolerableMax) {
    errors.fail("t", "must be at most " + std::to_string(kFaultsTolerableMax) + ", got " +
                         std::to_string(config.t));
  }
  const bool byzantine = config.mode == Mode::kByzantine;
  // With t = 0 there is nobody to outvote and no round of Dolev–Strong to run.
  if (byzantine && config.t == 0) errors.fail("t", "byzantine mode needs t >= 1, got 0");
  const uint32_t needed = ClusterConfig::replicas_needed(config.mode, config.t);
  const size_t members = config.initial_members().size();
  if (!config.replicas.empty() && members == 0) {
    errors.fail("replicas",
                "no member: every replica says member = false, but view 0 needs at least one");
  }
  if (members != needed) {
    const size_t spares = config.replicas.size() - members;
    errors.fail("replicas",
                std::string(mode_name(config.mode)) + " mode with t = " + std::to_string(config.t) +
                    " needs " + std::to_string(needed) + " replicas" +
                    (spares == 0 ? std::string()
                                 : " that are members (spares, member = false, not counted)") +
                    ", got " + std::to_string(members) +
                    (spares == 0 ? std::string() : " (and " + std::to_string(spares) + " spares)"));
  }
  for (size_t i = 0; i < config.replicas.size(); ++i) {
    const std::string field = "replicas[" + std::to_string(i) + "]";
    if (config.replicas[i].id.value != i) {
      errors.fail(field + ".id",
                  "replica ids must be 0.." + std::to_string(config.replicas.size() - 1) +
                      " in order, got " + std::to_string(config.replicas[i].id.value));
    }
    for (size_t j = 0; j < i; ++j) {
      if (config.replicas[j].address == config.replicas[i].address) {
        errors.fail(field + ".address", "same address as replicas[" + std::to_string(j) + "] (" +
                                            net::format_address(config.replicas[i].address) + ")");
      }
    }
    const std::optional<crypto::PublicKey>& key = config.replicas[i].public_key;
    if (byzantine && !key) errors.fail(field + ".public_key", "missing (byzantine mode)");
    if (!byzantine && key) errors.fail(field + ".public_key", "only in byzantine mode");
    for (size_t j = 0; key && j < i; ++j) {
      // One key for two replicas would let one process sign as both: two of the t faults.
      if (config.replicas[j].public_key == key) {
        errors.fail(field + ".public_key", "same key as replicas[" + std::to_string(j) + "]");
      }
    }
  }
  if (byzantine) {
    if (!config.byzantine) {
      errors.fail("byzantine",
                  "missing (byzantine mode needs a [byzantine] table with delta_ms "
                  "and epsilon_ms)");
    }
    if (config.byzantine->delta_ms == 0) errors.fail("byzantine.delta_ms", "must be positive");
    if (config.byzantine->checkpoint_interval_ms == 0) {
      errors.fail("byzantine.checkpoint_interval_ms",
                  "must be positive (without checkpoints a restarted replica can never catch up)");
    }
    // Parsed files are bounded already; configurations built in code are checked here, so that
    // the latency below cannot overflow.
    for (const auto& [field, value] : {std::pair{"delta_ms", config.byzantine->delta_ms},
                                       std::pair{"epsilon_ms", config.byzantine->epsilon_ms}}) {
      if (value > kTimeoutMsMax) {
        errors.fail(
            std::string("byzantine.") + field,
            "must be at most " + std::to_string(kTimeoutMsMax) + ", got " + std::to_string(value));
      }
    }
    if (config.byzantine->certify_interval_ms == 0 ||
        config.byzantine->certify_interval_ms > kTimeoutMsMax) {
      errors.fail("byzantine.certify_interval_ms",
                  "must be in [1, " + std::to_string(kTimeoutMsMax) + "], got " +
                      std::to_string(config.byzantine->certify_interval_ms));
    }
    // Only a durable replica certifies; a cluster without one keeps whatever intervals it had.
    if (config.storage.durable() &&
        config.byzantine->checkpoint_interval_ms % config.byzantine->certify_interval_ms != 0) {
      errors.fail("byzantine.checkpoint_interval_ms",
                  "must be a multiple of byzantine.certify_interval_ms (" +
                      std::to_string(config.byzantine->certify_interval_ms) +
                      ") in a durable cluster ([storage] with sync = \"always\"), got " +
                      std::to_string(config.byzantine->checkpoint_interval_ms));
    }
    const uint64_t latency_us = config.byzantine_decision_latency_us();
    const uint64_t minimum_ms = (kCheckpointIntervalLatencies * latency_us + 999) / 1000;
    if (config.byzantine->checkpoint_interval_ms < minimum_ms) {
      errors.fail("byzantine.checkpoint_interval_ms",
                  "must be at least " + std::to_string(kCheckpointIntervalLatencies) +
                      " times the decision latency σ + (t+1)·(Δ+ε) = " + format_ms(latency_us) +
                      " ms, i.e. at least " + std::to_string(minimum_ms) + ", got " +
                      std::to_string(config.byzantine->checkpoint_interval_ms) +
                      " (1000 when not given)");
    }
    if (config.byzantine->admin_public_key) {
      if (config.storage.durable()) {
        errors.fail("byzantine.admin_public_key",
                    "membership changes are not built for durable byzantine clusters yet "
                    "([storage] with sync = \"always\"): remove one or the other");
      }
      for (size_t i = 0; i < config.replicas.size(); ++i) {
        // One key for two roles would let a replica sign membership changes.
        if (config.replicas[i].public_key == config.byzantine->admin_public_key) {
          errors.fail("byzantine.admin_public_key",
                      "same key as replicas[" + std::to_string(i) + "]");
        }
      }
    }
    if (config.clients.empty()) {
      errors.fail("clients",
                  "missing (byzantine mode accepts only requests signed by a "
                  "[[clients]] principal; list at least one)");
    }
    if (config.clients.size() > kClientPrincipalsMax) {
      errors.fail("clients", "at most " + std::to_string(kClientPrincipalsMax) +
                                 " principals, got " + std::to_string(config.clients.size()));
    }
    for (size_t i = 0; i < config.clients.size(); ++i) {
      const std::string field = "clients[" + std::to_string(i) + "]";
      if (config.clients[i].principal == 0) {
        errors.fail(field + ".principal", "must be in [1, 4294967295], got 0");
      }
      if (config.clients[i].principal == kAdminPrincipal) {
        errors.fail(field + ".principal",
                    "4294967295 is reserved for the administrator (byzantine.admin_public_key)");
      }
      if (i > 0 && config.clients[i - 1].principal >= config.clients[i].principal) {
        errors.fail(field + ".principal", "principals must be unique and ascending, got " +
                                              std::to_string(config.clients[i].principal) +
                                              " after " +
                                              std::to_string(config.clients[i - 1].principal));
      }
    }
  } else {
    if (config.byzantine) errors.fail("byzantine", "only in byzantine mode");
    if (!config.clients.empty()) errors.fail("clients", "only in byzantine mode");
  }
  const TimeoutConfig& timeouts = config.timeouts;
  if (timeouts.heartbeat_interval_ms == 0) {
    errors.fail("timeouts.heartbeat_interval_ms", "must be positive");
  }
  if (timeouts.relay_timeout_ms == 0) errors.fail("timeouts.relay_timeout_ms", "must be positive");
  // The failure detector must not fire between two heartbeats of a live replica; twice the
  // interval is the least margin, for one late heartbeat.
  if (timeouts.failure_timeout_ms <= 2 * timeouts.heartbeat_interval_ms) {
    errors.fail("timeouts.failure_timeout_ms",
                "must exceed 2 x heartbeat_interval_ms (" +
                    std::to_string(2 * timeouts.heartbeat_interval_ms) + "), got " +
                    std::to_string(timeouts.failure_timeout_ms));
  }
  if (config.client.retry_interval_ms == 0) {
    errors.fail("client.retry_interval_ms", "must be positive");
  }
  if (config.client.deadline_ms == 0) errors.fail("client.deadline_ms", "must be positive");
  for (const LimitField& limit : kLimitFields) {
    const uint64_t value = config.limits.*limit.member;
    if (value < limit.min || value > limit.max) {
      errors.fail("limits." + std::string(limit.key), "must be in [" + std::to_string(limit.min) +
                                                          ", " + std::to_string(limit.max) +
                                                          "], got " + std::to_string(value));
    }
  }
  const StorageConfig& disk = config.storage;
  if (disk.batch_interval_ms == 0 || disk.batch_interval_ms > kTimeoutMsMax) {
    errors.fail("storage.batch_interval_ms", "must be in [1, " + std::to_string(kTimeoutMsMax) +
                                                 "], got " +
                                                 std::to_string(disk.batch_interval_ms));
  }
  if (disk.checkpoint_entries == 0 || disk.checkpoint_entries > kCheckpointEntriesMax) {
    errors.fail("storage.checkpoint_entries",
                "must be in [1, " + std::to_string(kCheckpointEntriesMax) + "], got " +
                    std::to_string(disk.checkpoint_entries));
  }
  if (disk.segment_mb == 0 || disk.segment_mb > kSegmentMbMax) {
    errors.fail("storage.segment_mb", "must be in [1, " + std::to_string(kSegmentMbMax) +
                                          "], got " + std::to_string(disk.segment_mb));
  }
  // Session expiry runs on order time, the same on every replica, so it cannot wait for a client
  // that is still retrying: a retry ordered after the session expired runs again. A client stops
  // retrying at its deadline, which therefore has to come first (docs/DESIGN.md §8).
  if (config.client.deadline_ms >= config.limits.session_idle_expiry_ms) {
    errors.fail("client.deadline_ms",
                "must be below limits.session_idle_expiry_ms (" +
                    std::to_string(config.limits.session_idle_expiry_ms) + "), got " +
                    std::to_string(config.client.deadline_ms) +
                    ": a client retrying a request after its session expired could see it "
                    "executed twice");
  }
}

ClusterConfig parse_config(std::string_view text, const std::string& source) {
  Errors errors(source);
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& error) {
    const toml::source_position& at = error.source().begin;
    throw ConfigError(source + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) +
                      ": " + std::string(error.description()));
  }
  errors.reject_unknown_keys(
      root, "",
      {"mode", "t", "replicas", "timeouts", "client", "byzantine", "clients", "limits", "storage"});

  ClusterConfig config;
  const toml::node* mode = root.get("mode");
  if (mode == nullptr) errors.fail("mode", "missing (expected \"failstop\" or \"byzantine\")");
  if (!mode->is_string()) {
    errors.fail("mode", std::string("expected a string, got ") + type_name(mode->type()));
  }
  const std::string mode_text = mode->value_or(std::string());
  if (mode_text == "failstop") {
    config.mode = Mode::kFailstop;
  } else if (mode_text == "byzantine") {
    config.mode = Mode::kByzantine;
  } else {
    errors.fail("mode", "expected \"failstop\" or \"byzantine\", got \"" + mode_text + "\"");
  }
  if (root.get("t") == nullptr) errors.fail("t", "missing");
  config.t = static_cast<uint32_t>(errors.integer(root, "t", "t", 0, 0, kFaultsTolerableMax));

  const toml::node* replicas = root.get("replicas");
  if (replicas == nullptr) errors.fail("replicas", "missing (expected [[replicas]] tables)");
  const toml::array* array = replicas->as_array();
  if (array == nullptr) {
    errors.fail("replicas",
                std::string("expected an array of tables, got ") + type_name(replicas->type()));
  }
  std::map<uint32_t, size_t> index_of_id;
  for (size_t i = 0; i < array->size(); ++i) {
    const std::string field = "replicas[" + std::to_string(i) + "]";
    const toml::table* table = array->get(i)->as_table();
    if (table == nullptr) {
      errors.fail(field, std::string("expected a table, got ") + type_name(array->get(i)->type()));
    }
    errors.reject_unknown_keys(*table, field + ".", {"id", "address", "public_key", "member"});
    if (table->get("id") == nullptr) errors.fail(field + ".id", "missing");
    const uint64_t id = errors.integer(*table, "id", field + ".id", 0, 0, array->size() - 1);
    auto [previous, inserted] = index_of_id.emplace(static_cast<uint32_t>(id), i);
    if (!inserted) {
      errors.fail(field + ".id", "duplicate id " + std::to_string(id) + " (also replicas[" +
                                     std::to_string(previous->second) + "])");
    }
    const toml::node* address = table->get("address");
    if (address == nullptr) errors.fail(field + ".address", "missing");
    if (!address->is_string()) {
      errors.fail(field + ".address", std::string("expected a string \"host:port\", got ") +
                                          type_name(address->type()));
    }
    const std::string address_text = address->value_or(std::string());
    std::optional<net::Address> parsed = net::parse_address(address_text);
    if (!parsed) {
      errors.fail(field + ".address", "expected \"host:port\", got \"" + address_text + "\"");
    }
    std::optional<crypto::PublicKey> key;
    if (table->get("public_key") != nullptr) {
      if (config.mode != Mode::kByzantine)
        errors.fail(field + ".public_key", "only in byzantine mode");
      key = errors.public_key(*table, field + ".public_key");
    }
    bool member = true;
    if (const toml::node* flag = table->get("member")) {
      if (!flag->is_boolean()) {
        errors.fail(field + ".member",
                    std::string("expected true or false, got ") + type_name(flag->type()));
      }
      member = flag->value_or(true);
    }
    config.replicas.push_back(
        ReplicaConfig{ReplicaId{static_cast<uint32_t>(id)}, *parsed, key, member});
  }
  // Ids are unique and below the count, so sorting yields replicas[i].id == i.
  std::sort(config.replicas.begin(), config.replicas.end(),
            [](const ReplicaConfig& a, const ReplicaConfig& b) { return a.id < b.id; });

  if (const toml::table* timeouts = errors.optional_table(root, "timeouts")) {
    errors.reject_unknown_keys(*timeouts, "timeouts.",
                               {"heartbeat_interval_ms", "failure_timeout_ms", "relay_timeout_ms"});
    TimeoutConfig& out = config.timeouts;
    out.heartbeat_interval_ms =
        errors.integer(*timeouts, "heartbeat_interval_ms", "timeouts.heartbeat_interval_ms",
                       out.heartbeat_interval_ms, 1, kTimeoutMsMax);
    out.failure_timeout_ms =
        errors.integer(*timeouts, "failure_timeout_ms", "timeouts.failure_timeout_ms",
                       out.failure_timeout_ms, 1, kTimeoutMsMax);
    out.relay_timeout_ms =
        errors.integer(*timeouts, "relay_timeout_ms", "timeouts.relay_timeout_ms",
                       out.relay_timeout_ms, 1, kTimeoutMsMax);
  }
  if (const toml::table* byzantine = errors.optional_table(root, "byzantine")) {
    if (config.mode != Mode::kByzantine) errors.fail("byzantine", "only in byzantine mode");
    errors.reject_unknown_keys(
        *byzantine, "byzantine.",
        {"delta_ms", "epsilon_ms", "relay_timeout_ms", "checkpoint_interval_ms",
         "certify_interval_ms", "admin_public_key"});
    // Δ and ε are what the protocol's windows are made of; a default would hide a forgotten
    // measurement, so both must be stated.
    for (const char* key : {"delta_ms", "epsilon_ms"}) {
      if (byzantine->get(key) == nullptr) errors.fail(std::string("byzantine.") + key, "missing");
    }
    ByzantineConfig out;
    out.delta_ms = errors.integer(*byzantine, "delta_ms", "byzantine.delta_ms", out.delta_ms, 1,
                                  kTimeoutMsMax);
    out.epsilon_ms = errors.integer(*byzantine, "epsilon_ms", "byzantine.epsilon_ms",
                                    out.epsilon_ms, 0, kTimeoutMsMax);
    out.relay_timeout_ms =
        errors.integer(*byzantine, "relay_timeout_ms", "byzantine.relay_timeout_ms",
                       out.relay_timeout_ms, 0, kTimeoutMsMax);
    out.checkpoint_interval_ms =
        errors.integer(*byzantine, "checkpoint_interval_ms", "byzantine.checkpoint_interval_ms",
                       out.checkpoint_interval_ms, 1, kTimeoutMsMax);
    out.certify_interval_ms =
        errors.integer(*byzantine, "certify_interval_ms", "byzantine.certify_interval_ms",
                       out.certify_interval_ms, 1, kTimeoutMsMax);
    if (const toml::node* admin = byzantine->get("admin_public_key")) {
      out.admin_public_key = errors.public_key(admin, "byzantine.admin_public_key");
    }
    config.byzantine = out;
  }
  if (const toml::node* clients = root.get("clients")) {
    if (config.mode != Mode::kByzantine) errors.fail("clients", "only in byzantine mode");
    const toml::array* tables = clients->as_array();
    if (tables == nullptr) {
      errors.fail("clients",
                  std::string("expected an array of tables, got ") + type_name(clients->type()));
    }
    std::map<uint32_t, size_t> index_of_principal;
    for (size_t i = 0; i < tables->size(); ++i) {
      const std::string field = "clients[" + std::to_string(i) + "]";
      const toml::table* table = tables->get(i)->as_table();
      if (table == nullptr) {
        errors.fail(field,
                    std::string("expected a table, got ") + type_name(tables->get(i)->type()));
      }
      errors.reject_unknown_keys(*table, field + ".", {"principal", "public_key"});
      if (table->get("principal") == nullptr) errors.fail(field + ".principal", "missing");
      const auto principal = static_cast<uint32_t>(errors.integer(
          *table, "principal", field + ".principal", 0, 1, std::numeric_limits<uint32_t>::max()));
      auto [previous, inserted] = index_of_principal.emplace(principal, i);
      if (!inserted) {
        errors.fail(field + ".principal", "duplicate principal " + std::to_string(principal) +
                                              " (also clients[" + std::to_string(previous->second) +
                                              "])");
      }
      config.clients.push_back(
          ClientPrincipalConfig{principal, errors.public_key(*table, field + ".public_key")});
    }
    std::sort(config.clients.begin(), config.clients.end(),
              [](const ClientPrincipalConfig& a, const ClientPrincipalConfig& b) {
                return a.principal < b.principal;
              });
  }
  if (const toml::table* client = errors.optional_table(root, "client")) {
    errors.reject_unknown_keys(*client, "client.", {"retry_interval_ms", "deadline_ms"});
    config.client.retry_interval_ms =
        errors.integer(*client, "retry_interval_ms", "client.retry_interval_ms",
                       config.client.retry_interval_ms, 1, kTimeoutMsMax);
    config.client.deadline_ms = errors.integer(*client, "deadline_ms", "client.deadline_ms",
                                               config.client.deadline_ms, 1, kTimeoutMsMax);
  }
  if (const toml::table* limits = errors.optional_table(root, "limits")) {
    for (auto&& [key, node] : *limits) {
      const bool known = std::any_of(kLimitFields.begin(), kLimitFields.end(),
                                     [&](const LimitField& f) { return f.key == key.str(); });
      if (!known) errors.fail("limits." + std::string(key.str()), "unknown key");
    }
    for (const LimitField& limit : kLimitFields) {
      uint64_t& value = config.limits.*limit.member;
      value = errors.integer(*limits, limit.key, "limits." + std::string(limit.key), value,
                             limit.min, limit.max);
    }
  }
  if (const toml::table* table = errors.optional_table(root, "storage")) {
    errors.reject_unknown_keys(
        *table, "storage.",
        {"data_dir", "sync", "batch_interval_ms", "checkpoint_entries", "segment_mb"});
    StorageConfig& out = config.storage;
    // The other keys only tune a store; without a directory they would be silently ignored.
    const toml::node* data_dir = table->get("data_dir");
    if (data_dir == nullptr) {
      errors.fail("storage.data_dir", "missing (the [storage] table needs a data_dir)");
    }
    if (!data_dir->is_string()) {
      errors.fail("storage.data_dir",
                  std::string("expected a string, got ") + type_name(data_dir->type()));
    }
    out.data_dir = data_dir->value_or(std::string());
    if (out.data_dir.empty()) errors.fail("storage.data_dir", "must not be empty");
    if (const toml::node* sync = table->get("sync")) {
      if (!sync->is_string()) {
        errors.fail("storage.sync",
                    std::string("expected a string, got ") + type_name(sync->type()));
      }
      const std::string policy_text = sync->value_or(std::string());
      std::optional<storage::SyncPolicy> policy = storage::parse_sync_policy(policy_text);
      if (!policy) {
        errors.fail("storage.sync", "expected \"always\", \"batch-interval\" or \"none\", got \"" +
                                        policy_text + "\"");
      }
      out.sync = *policy;
    }
    out.batch_interval_ms = errors.integer(*table, "batch_interval_ms", "storage.batch_interval_ms",
                                           out.batch_interval_ms, 1, kTimeoutMsMax);
    out.checkpoint_entries =
        errors.integer(*table, "checkpoint_entries", "storage.checkpoint_entries",
                       out.checkpoint_entries, 1, kCheckpointEntriesMax);
    out.segment_mb = errors.integer(*table, "segment_mb", "storage.segment_mb", out.segment_mb, 1,
                                    kSegmentMbMax);
  }
  validate_config(config, source);
  return config;
}

ClusterConfig load_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path.string() + ": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  ClusterConfig config = parse_config(text.str(), path.string());
  // Every process reading the file (replicas started from other directories, tools) must find
  // the same data directory.
  std::filesystem::path data_dir(config.storage.data_dir);
  if (config.storage.enabled() && data_dir.is_relative()) {
    config.storage.data_dir =
        (std::filesystem::absolute(path).parent_path() / data_dir).lexically_normal().string();
  }
  return config;
}

std::string format_config(const ClusterConfig& config) {
  std::ostringstream out;
  out << "# lockstep cluster configuration (see src/runtime/config.h for every key)\n";
  out << "mode = \"" << mode_name(config.mode) << "\"\n";
  out << "t = " << config.t << "\n";
  for (const ReplicaConfig& replica : config.replicas) {
    out << "\n[[replicas]]\n";
    out << "id = " << replica.id.value << "\n";
    out << "address = \"" << net::format_address(replica.address) << "\"\n";
    if (replica.public_key)
      out << "public_key = \"" << crypto::to_hex(*replica.public_key) << "\"\n";
    if (!replica.member) out << "member = false\n";
  }
  if (config.byzantine) {
    out << "\n[byzantine]\n";
    out << "delta_ms = " << config.byzantine->delta_ms << "\n";
    out << "epsilon_ms = " << config.byzantine->epsilon_ms << "\n";
    out << "relay_timeout_ms = " << config.byzantine->relay_timeout_ms << "\n";
    out << "checkpoint_interval_ms = " << config.byzantine->checkpoint_interval_ms << "\n";
    out << "certify_interval_ms = " << config.byzantine->certify_interval_ms << "\n";
    if (config.byzantine->admin_public_key) {
      out << "admin_public_key = \"" << crypto::to_hex(*config.byzantine->admin_public_key)
          << "\"\n";
    }
  }
  for (const ClientPrincipalConfig& principal : config.clients) {
    out << "\n[[clients]]\n";
    out << "principal = " << principal.principal << "\n";
    out << "public_key = \"" << crypto::to_hex(principal.public_key) << "\"\n";
  }
  out << "\n[timeouts]\n";
  out << "heartbeat_interval_ms = " << config.timeouts.heartbeat_interval_ms << "\n";
  out << "failure_timeout_ms = " << config.timeouts.failure_timeout_ms << "\n";
  out << "relay_timeout_ms = " << config.timeouts.relay_timeout_ms << "\n";
  out << "\n[client]\n";
  out << "retry_interval_ms = " << config.client.retry_interval_ms << "\n";
  out << "deadline_ms = " << config.client.deadline_ms << "\n";
  out << "\n[limits]\n";
  for (const LimitField& limit : kLimitFields)
    out << limit.key << " = " << config.limits.*limit.member << "\n";
  if (config.storage.enabled()) {
    const StorageConfig& disk = config.storage;
    out << "\n[storage]\n";
    // A TOML literal string ('...') takes the path as is; one with a quote gets a basic string.
    const bool literal = disk.data_dir.find('\'') == std::string::npos &&
                         disk.data_dir.find('\n') == std::string::npos;
    if (literal) {
      out << "data_dir = '" << disk.data_dir << "'\n";
    } else {
      out << "data_dir = " << toml::value<std::string>(disk.data_dir) << "\n";
    }
    out << "sync = \"" << storage::to_string(disk.sync) << "\"\n";
    out << "batch_interval_ms = " << disk.batch_interval_ms << "\n";
    out << "checkpoint_entries = " << disk.checkpoint_entries << "\n";
    out << "segment_mb = " << disk.segment_mb << "\n";
  }
  return out.str();
}

void write_config(const std::filesystem::path& path, const ClusterConfig& config) {
  const std::string text = format_config(config);
  const std::filesystem::path temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) {
      throw std::runtime_error(temporary.string() + ": cannot write: " + std::strerror(errno));
    }
    out << text;
    out.flush();
    if (!out) throw std::runtime_error(temporary.string() + ": write failed");
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) throw std::runtime_error(path.string() + ": cannot rename: " + error.message());
}

}  // namespace lockstep::runtime
