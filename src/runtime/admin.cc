#include "runtime/admin.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "client/blocking_exchange.h"
#include "client/client.h"
#include "client/status.h"
#include "crypto/membership.h"
#include "net/event_loop.h"
#include "runtime/credentials.h"

namespace lockstep::runtime {
namespace {

uint64_t random_nonce() {
  std::random_device device;
  return (uint64_t{device()} << 32) ^ device() ^ 1;
}

std::string format_members(const std::vector<ReplicaId>& members) {
  std::string text = "[";
  for (ReplicaId member : members)
    text += (text.size() > 1 ? ", " : "") + std::to_string(member.value);
  return text + "]";
}

bool lists(const std::vector<ReplicaId>& members, ReplicaId replica) {
  return std::find(members.begin(), members.end(), replica) != members.end();
}

// One poll of every listed replica: has the change become visible? `summary` says what was seen
// (the agreed membership, or why not yet).
bool change_visible(const ClusterConfig& config, MembershipChange change, ReplicaId replica,
                    uint64_t timeout_ms, std::string& summary) {
  std::optional<StatusReply> agreed;
  bool target_serving = false;
  for (const ReplicaConfig& listed : config.replicas) {
    std::string error;
    std::optional<StatusReply> status = query_status(listed.address, timeout_ms, error);
    // Only serving members speak for the membership: a replica still joining reports the members
    // without itself, a halted one its last view.
    if (!status || status->halted || !lists(status->members, listed.id)) continue;
    if (listed.id == replica) target_serving = true;
    if (agreed && (agreed->members != status->members || agreed->view != status->view)) {
      summary = "replicas " + std::to_string(agreed->replica.value) + " and " +
                std::to_string(listed.id.value) + " disagree: " + format_members(agreed->members) +
                " in view " + std::to_string(agreed->view.value) + " vs " +
                format_members(status->members) + " in view " + std::to_string(status->view.value);
      return false;
    }
    agreed = status;
  }
  if (!agreed) {
    summary = "no serving member answered";
    return false;
  }
  summary = format_members(agreed->members) + " (view " + std::to_string(agreed->view.value) + ")";
  if (change == MembershipChange::kRemove) return !lists(agreed->members, replica);
  return lists(agreed->members, replica) && target_serving;
}

// ---- byzantine mode ------------------------------------------------------------------------

struct ReportedConfiguration {
  uint64_t epoch = 0;
  std::vector<ReplicaId> members;
  std::vector<ReplicaId> reporters;
};

// The highest configuration that enough replicas report alike: max(its t, the file's t) + 1,
// so that at least one honest replica vouches for it. nullopt, with what was seen in
// `summary`, when none does.
std::optional<ReportedConfiguration> agreed_configuration(const ClusterConfig& config,
                                                          const AdminOptions& options,
                                                          std::ostream& out, std::string& summary) {
  std::vector<ReportedConfiguration> reports;
  for (const ReplicaConfig& listed : config.replicas) {
    std::string error;
    std::optional<StatusReply> status =
        query_status(listed.address, options.connect_timeout_ms, error);
    if (!status) {
      out << "replica " << listed.id.value << ": no status (" << error << ")\n";
      continue;
    }
    if (status->replica != listed.id) continue;
    out << "replica " << listed.id.value << ": epoch " << status->epoch << ", members "
        << format_members(status->members) << (status->halted ? " (halted)" : "") << "\n";
    if (status->halted) continue;
    auto same = std::find_if(reports.begin(), reports.end(), [&](const auto& report) {
      return report.epoch == status->epoch && report.members == status->members;
    });
    if (same == reports.end()) {
      reports.push_back(ReportedConfiguration{status->epoch, status->members, {}});
      same = std::prev(reports.end());
    }
    same->reporters.push_back(listed.id);
  }
  std::optional<ReportedConfiguration> best;
  summary.clear();
  for (const ReportedConfiguration& report : reports) {
    const uint32_t faults = std::max(config.t, faults_tolerated(report.members.size()));
    if (!summary.empty()) summary += "; ";
    summary += "epoch " + std::to_string(report.epoch) + " " + format_members(report.members) +
               " from " + format_members(report.reporters);
    if (report.reporters.size() < uint64_t{faults} + 1) continue;
    if (!best || report.epoch > best->epoch) best = report;
  }
  if (summary.empty()) summary = "no replica answered";
  return best;
}

uint64_t round_up(uint64_t value, uint64_t multiple) {
  return multiple == 0 ? value : (value + multiple - 1) / multiple * multiple;
}

// Whether every member of `epoch`'s configuration reports that epoch (or a later one) and serves.
bool new_epoch_visible(const ClusterConfig& config, uint64_t epoch,
                       const std::vector<ReplicaId>& members, uint64_t timeout_ms,
                       std::string& summary) {
  summary.clear();
  bool visible = true;
  for (ReplicaId member : members) {
    std::string error;
    std::optional<StatusReply> status =
        query_status(config.replicas[member.value].address, timeout_ms, error);
    std::string seen;
    if (!status) {
      seen = "no status";
      visible = false;
    } else if (status->halted) {
      seen = "halted";
      visible = false;
    } else if (status->epoch < epoch || !lists(status->members, member)) {
      // A replica catching up reports the members without itself until it serves.
      seen = "epoch " + std::to_string(status->epoch) +
             (lists(status->members, member) ? "" : ", not serving yet");
      visible = false;
    } else {
      seen = "epoch " + std::to_string(status->epoch);
    }
    summary +=
        (summary.empty() ? "" : "; ") + ("replica " + std::to_string(member.value) + ": " + seen);
  }
  return visible;
}

int run_byzantine_admin(const ClusterConfig& config, MembershipChange change, ReplicaId replica,
                        const AdminOptions& options, std::ostream& out, std::ostream& err) {
  const bool add = change == MembershipChange::kAdd;
  const std::string verb = add ? "add-replica" : "remove-replica";
  if (options.key_file.empty()) {
    err << verb
        << ": a byzantine cluster's membership changes are signed by its administrator: give "
           "the administrator's key file (--key FILE)\n";
    return kAdminUsage;
  }
  ClientCredentials credentials;
  try {
    credentials = admin_credentials(config, crypto::read_key_file(options.key_file.string()),
                                    options.key_file.string());
  } catch (const std::exception& error) {
    err << verb << ": " << error.what() << "\n";
    return kAdminUsage;
  }

  std::string summary;
  std::optional<ReportedConfiguration> current =
      agreed_configuration(config, options, out, summary);
  if (!current) {
    err << verb << " " << replica.value
        << ": no configuration is reported alike by enough replicas (t+1 of it) to act on; "
           "seen: "
        << summary << "\n";
    return kAdminRefused;
  }
  out << "current configuration: epoch " << current->epoch << ", members "
      << format_members(current->members) << " (reported by " << format_members(current->reporters)
      << ")\n";
  std::vector<ReplicaId> members = current->members;
  if (add) {
    if (lists(members, replica)) {
      err << verb << ": replica " << replica.value << " is already a member of epoch "
          << current->epoch << " " << format_members(members) << "\n";
      return kAdminUsage;
    }
    members.push_back(replica);
  } else {
    if (!lists(members, replica)) {
      err << verb << ": replica " << replica.value << " is not a member of epoch " << current->epoch
          << " " << format_members(members) << "\n";
      return kAdminUsage;
    }
    std::erase(members, replica);
  }
  std::sort(members.begin(), members.end());
  if (members.size() < 3) {
    err << verb << " " << replica.value << ": would leave " << members.size()
        << " members; a byzantine cluster needs at least 3 (2t+1 with t >= 1)\n";
    return kAdminUsage;
  }
  const uint64_t grid_us = config.byzantine->checkpoint_interval_ms * 1000;
  const uint64_t effective_us =
      round_up(net::wall_now_us() + options.effective_in_ms * 1000, grid_us);
  const ConfigurationChange configuration{current->epoch + 1, members, effective_us};
  out << "signing epoch " << configuration.epoch << ": members " << format_members(members)
      << " from " << effective_us << " us (in about " << options.effective_in_ms
      << " ms, on the checkpoint grid of " << grid_us / 1000 << " ms)\n";

  BlockingClient client(network_client_options(config, &credentials));
  BlockingClient::Outcome outcome = client.call(encode_configuration_change(configuration));
  if (!outcome.ok) {
    err << verb << " " << replica.value
        << ": the signed change got no t+1 matching replies: " << outcome.error << "\n";
    return kAdminRefused;
  }
  const std::string output(outcome.result.begin(), outcome.result.end());
  out << "replicas: " << output << "\n";
  for (const ClientSession::Dissent& dissent : outcome.dissent) {
    out << "replica " << dissent.replica.value
        << " said otherwise: " << std::string(dissent.result.begin(), dissent.result.end()) << "\n";
  }
  if (output.rfind("refused", 0) == 0) {
    err << verb << " " << replica.value << ": " << output << "\n";
    return kAdminRefused;
  }

  out << "waiting until " << options.wait_ms << " ms after it takes effect for every member of "
      << "epoch " << configuration.epoch << " to report it"
      << (add ? " (replica " + std::to_string(replica.value) + " serving)" : std::string()) << "\n";
  const uint64_t now_us = net::wall_now_us();
  const uint64_t until_effective_ms = effective_us > now_us ? (effective_us - now_us) / 1000 : 0;
  const uint64_t deadline_ns =
      net::monotonic_now_ns() + (until_effective_ms + options.wait_ms) * 1'000'000;
  for (;;) {
    if (new_epoch_visible(config, configuration.epoch, members, options.connect_timeout_ms,
                          summary)) {
      out << "members: " << format_members(members) << " (epoch " << configuration.epoch << ")\n";
      return kAdminDone;
    }
    if (net::monotonic_now_ns() >= deadline_ns) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(options.poll_interval_ms));
  }
  err << verb << " " << replica.value << ": ordered, but epoch " << configuration.epoch
      << " not reported by every new member after it took effect + " << options.wait_ms
      << " ms; last seen: " << summary;
  if (add) {
    err << " (is replica " << replica.value
        << " running? start it with `lockstep replica --config F --id " << replica.value
        << " --key ITS_KEY --join`)";
  }
  err << "\n";
  return kAdminNotVisible;
}

}  // namespace

std::optional<AdminReply> send_admin_request(const net::Address& address,
                                             const AdminRequest& request, uint64_t timeout_ms,
                                             std::string& error) {
  return blocking_exchange_for<AdminReply>(address, request.nonce, request, timeout_ms, "answer",
                                           error);
}

int run_admin(const ClusterConfig& config, MembershipChange change, ReplicaId replica,
              const AdminOptions& options, std::ostream& out, std::ostream& err) {
  const bool add = change == MembershipChange::kAdd;
  const std::string verb = add ? "add-replica" : "remove-replica";
  if (replica.value >= config.replica_count()) {
    err << verb << ": replica " << replica.value << " is not listed in the cluster file (ids 0.."
        << config.replica_count() - 1
        << "); list it first (as a spare: member = false) in every copy of the file\n";
    return kAdminUsage;
  }
  if (config.mode == Mode::kByzantine) {
    return run_byzantine_admin(config, change, replica, options, out, err);
  }
  AdminRequest request{random_nonce(), change, replica};
  size_t accepted = 0;
  std::vector<std::string> refusals;
  for (const ReplicaConfig& listed : config.replicas) {
    std::string error;
    std::optional<AdminReply> reply =
        send_admin_request(listed.address, request, options.connect_timeout_ms, error);
    if (!reply) {
      out << "replica " << listed.id.value << ": no answer (" << error << ")\n";
      continue;
    }
    out << "replica " << listed.id.value << ": " << (reply->accepted ? "accepted" : "refused")
        << ": " << reply->detail << "\n";
    if (reply->accepted) {
      ++accepted;
    } else {
      refusals.push_back("replica " + std::to_string(listed.id.value) + ": " + reply->detail);
    }
  }
  if (accepted == 0) {
    err << verb << " " << replica.value << ": refused: no member accepted the change";
    if (refusals.empty()) err << " (no replica answered)";
    for (const std::string& refusal : refusals)
      err << "\n  " << refusal;
    err << "\n";
    return kAdminRefused;
  }
  out << "waiting up to " << options.wait_ms << " ms for the new membership ("
      << (add ? "replica " + std::to_string(replica.value) + " a serving member"
              : "without replica " + std::to_string(replica.value))
      << ")\n";
  const uint64_t deadline_ns = net::monotonic_now_ns() + options.wait_ms * 1'000'000;
  std::string summary;
  for (;;) {
    if (change_visible(config, change, replica, options.connect_timeout_ms, summary)) {
      out << "members: " << summary << "\n";
      return kAdminDone;
    }
    if (net::monotonic_now_ns() >= deadline_ns) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(options.poll_interval_ms));
  }
  err << verb << " " << replica.value << ": accepted, but not visible after " << options.wait_ms
      << " ms; last seen: " << summary;
  if (add) {
    err << " (is replica " << replica.value
        << " running? start it with `lockstep replica --config F --id " << replica.value
        << " --join`)";
  }
  err << "\n";
  return kAdminNotVisible;
}

}  // namespace lockstep::runtime
