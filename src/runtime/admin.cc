#include "runtime/admin.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>
#include <vector>

#include "client/blocking_exchange.h"
#include "client/status.h"
#include "net/event_loop.h"

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
  if (config.mode == Mode::kByzantine) {
    err << verb << ": reconfiguration is not supported in byzantine mode (the membership is "
        << "fixed)\n";
    return kAdminUsage;
  }
  if (replica.value >= config.replica_count()) {
    err << verb << ": replica " << replica.value << " is not listed in the cluster file (ids 0.."
        << config.replica_count() - 1
        << "); list it first (as a spare: member = false) in every copy of the file\n";
    return kAdminUsage;
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
