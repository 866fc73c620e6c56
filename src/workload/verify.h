// What every fault test and the demo check after a run, in one place: the final state read back
// into the history, no acknowledged append lost, and replicas that agree once they have executed
// the same requests.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "check/history.h"
#include "client/client.h"
#include "core/messages.h"
#include "net/address.h"

namespace lockstep::workload {

struct FinalState {
  std::map<std::string, std::string> values;  // keys read: "" for an absent key
  std::vector<std::string> errors;            // "key: why" for reads that failed
};

// Reads every key once more and appends the reads to `history` as operations of client
// `reader_client`, so the linearizability checker judges them with everything else. It stops at
// the first read the cluster does not answer (the rest are left out of `values`).
FinalState read_final_state(const NetworkClientOptions& client,
                            const std::vector<std::string>& keys,
                            std::vector<check::Operation>& history,
                            uint64_t reader_client = 999'999);

struct AppendAudit {
  size_t checked = 0;             // acknowledged appends that no put may have overwritten
  std::vector<std::string> lost;  // of those, the ones not in the final value exactly once
};

// Nothing acknowledged lost: every acknowledged append must be in its key's final value exactly
// once, unless a put to that key may have come after it (one that returned, or may still take
// effect, after the append was called). Appends to keys not in `final_values` are not checked.
AppendAudit audit_appends(std::span<const check::Operation> history,
                          const std::map<std::string, std::string>& final_values);

// Polls every replica (id, address) until all answer with the same executed count, or until
// `timeout_ms` passes; returns the statuses of those that answered.
std::map<uint32_t, StatusReply> converged_statuses(
    const std::vector<std::pair<uint32_t, net::Address>>& replicas, uint64_t timeout_ms = 10'000);

// True when every status has the digest of the first.
bool digests_equal(const std::map<uint32_t, StatusReply>& statuses);

}  // namespace lockstep::workload
