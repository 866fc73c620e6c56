#include "workload/workload.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>
#include <stdexcept>

#include "apps/kv/kv_machine.h"
#include "net/event_loop.h"

namespace lockstep::workload {
namespace {

uint64_t percentile(const std::vector<uint64_t>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  const size_t index = std::min(sorted.size() - 1, static_cast<size_t>(fraction * sorted.size()));
  return sorted[index];
}

// Byzantine mode: who vouched for the accepted output and who said something else.
// `sample_has_dissent` says whether the sample kept so far shows a dissent.
void tally_votes(const CallResult& result, Report& report, bool& sample_has_dissent) {
  for (const ClientSession::Dissent& dissent : result.dissent)
    ++report.dissented[dissent.replica.value];
  if (!result.certificate) return;
  std::set<uint32_t> provers;
  for (const ReplyProof& proof : result.certificate->proofs)
    provers.insert(proof.replica.value);
  for (uint32_t replica : provers)
    ++report.agreed[replica];
  report.fewest_certificate_proofs =
      report.certified == 0 ? provers.size()
                            : std::min<uint64_t>(report.fewest_certificate_proofs, provers.size());
  ++report.certified;
  if (!report.sample_certificate || (!sample_has_dissent && !result.dissent.empty())) {
    report.sample_certificate = result.certificate;
    sample_has_dissent = !result.dissent.empty();
  }
}

}  // namespace

std::string key_name(uint32_t index, uint32_t key_bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "key-%06u", index);
  std::string key(buffer);
  if (key.size() < key_bytes) key.resize(key_bytes, '.');
  return key;
}

Report run(const Options& options) {
  if (options.clients == 0 || options.keys == 0) {
    throw std::invalid_argument("a workload needs at least one client and one key");
  }
  if (options.get_percent + options.append_percent > 100) {
    throw std::invalid_argument("get and append percentages add up to more than 100");
  }
  net::EventLoop loop;
  Client client(loop, options.client);
  check::HistoryRecorder recorder;
  Report report;
  std::vector<uint64_t> latencies;
  std::mt19937_64 random(options.seed);
  std::vector<ClientId> sessions;
  for (uint32_t s = 0; s < options.clients; ++s)
    sessions.push_back(client.open_session());
  std::vector<uint64_t> operation_counts(options.clients, 0);
  bool sample_has_dissent = false;

  const uint64_t start_ns = net::monotonic_now_ns();
  const uint64_t stop_issuing_ns = start_ns + static_cast<uint64_t>(options.duration_s * 1e9);
  uint32_t active = options.clients;
  const std::string padding(options.value_bytes, 'x');

  std::function<void(uint32_t)> issue = [&](uint32_t s) {
    const uint64_t now_ns = net::monotonic_now_ns();
    if (now_ns >= stop_issuing_ns) {
      if (--active == 0) loop.stop();
      return;
    }
    const uint64_t n = ++operation_counts[s];
    const uint32_t roll = static_cast<uint32_t>(random() % 100);
    const std::string key =
        key_name(static_cast<uint32_t>(random() % options.keys), options.key_bytes);
    // Unique per write: the session index and its operation number.
    std::string token = "c" + std::to_string(s) + "-" + std::to_string(n) + ";";
    kv::Command command;
    check::OpKind kind;
    if (roll < options.get_percent) {
      command = kv::Command{kv::Op::kGet, key, {}, {}, 0};
      kind = check::OpKind::kGet;
      token.clear();
    } else if (roll < options.get_percent + options.append_percent) {
      command = kv::Command{kv::Op::kAppend, key, token, {}, 0};
      kind = check::OpKind::kAppend;
    } else {
      if (token.size() < padding.size()) token += padding.substr(token.size());
      command = kv::Command{kv::Op::kPut, key, token, {}, 0};
      kind = check::OpKind::kPut;
    }
    const uint64_t id = recorder.invoke(s, kind, key, token, {}, now_ns);
    auto on_done = [&, s, id, kind, key, token, now_ns](CallResult result) {
      const uint64_t return_ns = net::monotonic_now_ns();
      if (result.ok()) tally_votes(result, report, sample_has_dissent);
      std::optional<kv::Result> decoded;
      if (result.ok()) decoded = kv::decode_result(result.result);
      if (!decoded || decoded->code == kv::ResultCode::kError) {
        recorder.complete_unknown(id);
        ++report.unknown;
      } else {
        std::optional<std::string> output;
        if (kind == check::OpKind::kGet) {
          output = decoded->code == kv::ResultCode::kOk ? decoded->value : std::string();
        }
        recorder.complete_ok(id, std::move(output), return_ns);
        latencies.push_back(return_ns - now_ns);
        ++report.completed;
        if (kind == check::OpKind::kAppend) report.acknowledged_appends.emplace_back(key, token);
      }
      issue(s);
    };
    if (!client.submit(sessions[s], kv::encode_command(command), std::move(on_done))) {
      throw std::logic_error("a workload session had a request in flight already");
    }
  };
  for (uint32_t s = 0; s < options.clients; ++s)
    loop.post([&issue, s] { issue(s); });
  if (options.midway) {
    loop.schedule(static_cast<uint64_t>(options.duration_s * 0.5e9), options.midway);
  }
  uint64_t last_completed = 0;
  if (options.progress) {
    loop.schedule_every(1'000'000'000, [&] {
      const double elapsed = static_cast<double>(net::monotonic_now_ns() - start_ns) / 1e9;
      std::fprintf(stderr, "  %5.1f s  %8llu ops/s  (%llu done, %llu unknown, %zu replicas up)\n",
                   elapsed, static_cast<unsigned long long>(report.completed - last_completed),
                   static_cast<unsigned long long>(report.completed),
                   static_cast<unsigned long long>(report.unknown), client.connected_replicas());
      last_completed = report.completed;
    });
  }
  loop.run();

  report.elapsed_s = static_cast<double>(net::monotonic_now_ns() - start_ns) / 1e9;
  report.ops_per_s = static_cast<double>(report.completed) / std::max(report.elapsed_s, 1e-9);
  std::sort(latencies.begin(), latencies.end());
  report.latency = LatencySummary{percentile(latencies, 0.50), percentile(latencies, 0.90),
                                  percentile(latencies, 0.99), percentile(latencies, 0.999),
                                  latencies.empty() ? 0 : latencies.back()};
  report.history = recorder.operations();
  if (report.completed == 0 && client.connected_replicas() == 0) {
    throw std::runtime_error("no replica could be reached:\n" + client.connection_summary());
  }
  return report;
}

std::string format_report(const Report& report, uint32_t clients) {
  char buffer[512];
  auto ms = [](uint64_t ns) { return static_cast<double>(ns) / 1e6; };
  std::snprintf(buffer, sizeof buffer,
                "%u clients: %llu ops completed, %llu unknown, in %.1f s: %.0f ops/s\n"
                "latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
                clients, static_cast<unsigned long long>(report.completed),
                static_cast<unsigned long long>(report.unknown), report.elapsed_s, report.ops_per_s,
                ms(report.latency.p50_ns), ms(report.latency.p90_ns), ms(report.latency.p99_ns),
                ms(report.latency.p999_ns), ms(report.latency.max_ns));
  return buffer;
}

std::string format_votes(const Report& report) {
  if (report.certified == 0) return {};
  std::set<uint32_t> replicas;
  for (const auto& [replica, count] : report.agreed)
    replicas.insert(replica);
  for (const auto& [replica, count] : report.dissented)
    replicas.insert(replica);
  std::string text;
  for (uint32_t replica : replicas) {
    const auto agreed = report.agreed.find(replica);
    const auto dissented = report.dissented.find(replica);
    const uint64_t yes = agreed == report.agreed.end() ? 0 : agreed->second;
    const uint64_t no = dissented == report.dissented.end() ? 0 : dissented->second;
    text += "replica " + std::to_string(replica) + ": " + std::to_string(yes) +
            " replies matched the accepted output, " + std::to_string(no) + " differed\n";
  }
  text += std::to_string(report.certified) + " outputs certified, each by at least " +
          std::to_string(report.fewest_certificate_proofs) + " replicas' signatures\n";
  return text;
}

}  // namespace lockstep::workload
