#include "workload/verify.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "apps/kv/kv_machine.h"
#include "client/status.h"
#include "net/event_loop.h"

namespace lockstep::workload {

FinalState read_final_state(const NetworkClientOptions& client,
                            const std::vector<std::string>& keys,
                            std::vector<check::Operation>& history, uint64_t reader_client) {
  FinalState state;
  BlockingClient reader(client);
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    check::Operation op{
        reader_client,           check::OpKind::kGet, key, {}, {}, {}, net::monotonic_now_ns(), {},
        check::Outcome::kUnknown};
    BlockingClient::Outcome outcome =
        reader.call(kv::encode_command(kv::Command{kv::Op::kGet, key, {}, {}, 0}));
    std::optional<kv::Result> result;
    if (outcome.ok) result = kv::decode_result(outcome.result);
    if (!result || result->code == kv::ResultCode::kError) {
      state.errors.push_back(key + ": " + (outcome.ok ? "bad reply" : outcome.error));
      history.push_back(op);  // outcome unknown: a read has no effect either way
      if (outcome.ok) continue;
      // No answer within the client's deadline: the cluster is down or stalled, and waiting a
      // deadline for every other key would only delay the report.
      if (i + 1 < keys.size()) {
        state.errors.push_back(std::to_string(keys.size() - i - 1) +
                               " more keys not read: the cluster did not answer");
      }
      break;
    }
    op.return_ns = net::monotonic_now_ns();
    op.outcome = check::Outcome::kOk;
    op.output = result->code == kv::ResultCode::kOk ? result->value : std::string();
    state.values[key] = *op.output;
    history.push_back(op);
  }
  return state;
}

AppendAudit audit_appends(std::span<const check::Operation> history,
                          const std::map<std::string, std::string>& final_values) {
  std::map<std::string, uint64_t> last_put_return;
  for (const check::Operation& op : history) {
    if (op.kind != check::OpKind::kPut || op.outcome == check::Outcome::kFailed) continue;
    uint64_t& latest = last_put_return[op.key];
    latest = std::max(latest, op.return_ns.value_or(UINT64_MAX));
  }
  AppendAudit audit;
  for (const check::Operation& op : history) {
    if (op.kind != check::OpKind::kAppend || op.outcome != check::Outcome::kOk) continue;
    auto put = last_put_return.find(op.key);
    if (put != last_put_return.end() && put->second >= op.call_ns) continue;
    auto value = final_values.find(op.key);
    if (value == final_values.end()) continue;  // the key was not read back: nothing to check
    ++audit.checked;
    const std::string& text = value->second;
    const size_t at = text.find(op.value);
    if (at == std::string::npos || text.find(op.value, at + 1) != std::string::npos) {
      audit.lost.push_back(op.key + " <- " + op.value);
    }
  }
  return audit;
}

std::map<uint32_t, StatusReply> converged_statuses(
    const std::vector<std::pair<uint32_t, net::Address>>& replicas, uint64_t timeout_ms) {
  const uint64_t deadline_ns = net::monotonic_now_ns() + timeout_ms * 1'000'000;
  std::map<uint32_t, StatusReply> statuses;
  for (;;) {
    statuses.clear();
    for (const auto& [id, address] : replicas) {
      std::string error;
      if (auto status = query_status(address, 1000, error)) statuses[id] = *status;
    }
    bool same = statuses.size() == replicas.size();
    for (const auto& [id, status] : statuses) {
      same &= status.executed == statuses.begin()->second.executed;
    }
    if (same || net::monotonic_now_ns() >= deadline_ns) return statuses;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

bool digests_equal(const std::map<uint32_t, StatusReply>& statuses) {
  return std::all_of(statuses.begin(), statuses.end(), [&](const auto& entry) {
    return entry.second.digest == statuses.begin()->second.digest;
  });
}

}  // namespace lockstep::workload
