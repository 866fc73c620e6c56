// Asking one replica for its status (StatusRequest -> StatusReply): what it has executed and a
// digest of its state. Replicas that have executed the same requests have equal digests, which
// is how the demo and the tests show that survivors agree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/messages.h"
#include "net/address.h"

namespace lockstep {

// Blocking; returns nullopt and sets `error` when the replica does not answer within
// `timeout_ms` (not running, not reachable, or halted before answering).
std::optional<StatusReply> query_status(const net::Address& address, uint64_t timeout_ms,
                                        std::string& error);

}  // namespace lockstep
