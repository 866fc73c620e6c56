#include "client/status.h"

#include <unistd.h>

#include "client/blocking_exchange.h"
#include "net/event_loop.h"

namespace lockstep {

std::optional<StatusReply> query_status(const net::Address& address, uint64_t timeout_ms,
                                        std::string& error) {
  // Unique enough to tell this query's reply from another's on a shared replica.
  const uint64_t nonce =
      (net::monotonic_now_ns() + timeout_ms * 1'000'000) ^ static_cast<uint64_t>(::getpid());
  return blocking_exchange_for<StatusReply>(address, nonce, StatusRequest{nonce}, timeout_ms,
                                            "status reply", error);
}

}  // namespace lockstep
