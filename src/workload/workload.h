// Concurrent KV clients against a cluster, recording every operation in the history format of
// check/history.h, with throughput and latency figures. Used by `lockstep workload`, the demo and
// the integration tests.
//
// Each of `clients` sessions runs one operation at a time (what the history format requires of
// a client): a get, put or append on one of `keys` keys, chosen at random. Every written value is
// unique (it names the session and its operation number), so a read tells which write it saw and
// histories stay cheap to check. Put values are padded to `value_bytes`; append values are short
// tokens, so that appended keys stay small.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "check/history.h"
#include "client/client.h"

namespace lockstep::workload {

struct Options {
  NetworkClientOptions client;
  uint32_t clients = 8;
  uint32_t keys = 100;
  uint32_t key_bytes = 16;
  uint32_t value_bytes = 100;
  double duration_s = 10;
  uint32_t get_percent = 50;  // the rest splits between put and append
  uint32_t append_percent = 25;
  uint64_t seed = 1;
  bool progress = true;  // a line per second on stderr
  // Runs once on the workload's thread when half of `duration_s` has passed (the demo kills a
  // replica there).
  std::function<void()> midway;
};

struct LatencySummary {
  uint64_t p50_ns = 0, p90_ns = 0, p99_ns = 0, p999_ns = 0, max_ns = 0;
};

struct Report {
  uint64_t completed = 0;  // ok
  uint64_t unknown = 0;    // timed out or still running at the end
  double elapsed_s = 0;
  double ops_per_s = 0;
  LatencySummary latency;
  std::vector<check::Operation> history;
  // Appended tokens whose append was acknowledged, per key: every one must be in the final value.
  std::vector<std::pair<std::string, std::string>> acknowledged_appends;

  // Byzantine mode. Per replica id: in how many completed operations its signed reply was part
  // of the accepted output's certificate (`agreed`), and how many replies it sent that differed
  // from the accepted output (`dissented`). Only replies that arrived before the operation
  // completed are counted: a client stops listening once t+1 agree.
  std::map<uint32_t, uint64_t> agreed;
  std::map<uint32_t, uint64_t> dissented;
  uint64_t certified = 0;  // completions carrying a certificate
  // Fewest proofs from distinct replicas in any certificate (0 when none): at least t+1 when
  // every accepted output was vouched for by t+1 replicas.
  uint64_t fewest_certificate_proofs = 0;
  // One certificate, preferably of an operation some replica dissented on (for the demo to save
  // and check offline).
  std::optional<ReplyCertificate> sample_certificate;
};

// Runs the workload to completion (duration, then draining outstanding operations up to the
// client deadline). Throws std::runtime_error when no replica can be reached at all.
Report run(const Options& options);

// The key names the workload uses ("key-000042" padded to key_bytes).
std::string key_name(uint32_t index, uint32_t key_bytes);

std::string format_report(const Report& report, uint32_t clients);
// Byzantine mode: per replica, agreed and dissenting replies; empty when nothing was certified.
std::string format_votes(const Report& report);

}  // namespace lockstep::workload
