// The replicated state as lockstep sees it: the user's state machine plus the session table that
// makes execution exactly-once. Both change only through `execute`, in the agreed order, so every
// replica holds the same table; a snapshot covers both.
//
// Session table: per client, the replies of its executed requests whose sequence number is at or
// above the client's `acked_below` watermark (the client has not yet seen their replies, so a
// retry may ask again). A request whose sequence is in the table is a duplicate: it is not
// executed again and gets the cached reply. A request below the watermark is stale: the client has
// its reply already, so it is dropped. The table holds at most `replies_per_client_max` replies
// per client (a client pipelines at most that many requests).
//
// Session expiry (ServiceOptions): the table does not grow with every client that ever spoke.
// Every request executes with its order time: the physical time of its timestamp in the agreed
// order (Replica::order_time_us), the same number on every replica. A session whose last request
// in the order is more than `session_idle_expiry_us` older than the request executing now is
// forgotten; so is the least recently active session when a new client's request arrives with
// `sessions_max` sessions in the table. Both depend only on the executed sequence and its
// timestamps, so every replica forgets the same sessions at the same point and states (and
// digests) stay equal.
//
// The price: a client that stays silent past the expiry and then retries an old request may see
// it executed a second time, because nothing remembers that it ran. Clients must therefore give up
// on a request well before the expiry: the client library's deadline (5 s by default) is far
// below the default expiry (10 minutes), and a deadline is the point after which the client
// treats the outcome as unknown and never retries. A table that overflows `sessions_max` has the
// same consequence for its least recently active client, which is why the limit should be far
// above the number of clients active within one deadline.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>

#include "core/messages.h"
#include "statemachine/state_machine.h"

namespace lockstep {

// Limits of the session table. Every replica of a cluster must use the same values: they decide
// which sessions are forgotten, which is part of the replicated state.
struct ServiceOptions {
  // A session with no request in the order for longer than this (µs of order time) is forgotten.
  uint64_t session_idle_expiry_us = 10ull * 60 * 1'000'000;
  // Sessions held at most; beyond it a new client's first request evicts the least recently
  // active session.
  size_t sessions_max = size_t{1} << 20;
};

class Service {
 public:
  static constexpr size_t kRepliesPerClientMax = 4096;
  // Idle sessions forgotten per executed request at most (besides the requesting client's own),
  // so that one request never pays for a long backlog; each request adds at most one session, so
  // the backlog still shrinks.
  static constexpr size_t kExpiriesPerExecuteMax = 8;

  explicit Service(std::unique_ptr<StateMachine> machine, ServiceOptions options = {});

  enum class Outcome : uint8_t {
    kExecuted,   // ran now; `reply` is its output
    kDuplicate,  // ran before; `reply` is the cached output
    kStale,      // below the client's watermark; nobody waits for it; `reply` is empty
  };
  struct Result {
    Outcome outcome;
    Bytes reply;
  };

  // Executes `request` exactly once (see above) at order time `order_time_us` (µs; the agreed
  // time of its place in the order, non-decreasing from one call to the next; an earlier value is
  // treated as the latest seen). Expires idle sessions first. Deterministic.
  // `system_output`: the request is the replication layer's own (an administrator's membership
  // change, crypto/membership.h), already carried out there: its output is recorded as the reply
  // instead of running the state machine, so retries and duplicates are answered alike.
  Result execute(const ClientRequest& request, uint64_t order_time_us = 0,
                 std::optional<Bytes> system_output = std::nullopt);

  // For requests arriving at a replica before ordering: the cached reply when the request already
  // ran, so a retry is answered at once and never ordered again.
  std::optional<Bytes> cached_reply(ClientId client, Sequence sequence) const;
  // True when the request already ran or is below the client's watermark.
  bool already_executed_or_stale(ClientId client, Sequence sequence) const;

  // Whole replicated state (session table + machine), and its inverse. restore throws
  // SnapshotError on malformed input and leaves the service unchanged.
  //
  // Snapshot layout (integers are LEB128 varints unless stated):
  //   magic          4 bytes "LSSV"
  //   version        1 byte, 2; any other value is rejected (1 had no last_activity)
  //   session_count (at most sessions_max), then per session, client ids strictly ascending:
  //     client, acked_below, last_activity (order time µs of its latest request),
  //     reply_count (at most kRepliesPerClientMax),
  //     then per reply, sequences strictly ascending and each >= acked_below:
  //       sequence, reply (varint length + bytes)
  //   executed_count
  //   machine        varint length + the StateMachine's own snapshot
  //   nothing after.
  // The order is fixed, so equal states give equal bytes (and equal digests) on every replica;
  // restore refuses anything the writer would not produce, so an accepted snapshot has exactly
  // one meaning.
  Bytes snapshot() const;
  void restore(std::span<const uint8_t> snapshot);

  // A 64-bit digest of snapshot(): equal digests on two replicas mean equal states.
  uint64_t digest() const;

  // Test-only (a planted bug for the simulator's self-test): forgets a client's session, which
  // breaks exactly-once. Never called outside tests.
  void forget_session_for_testing(ClientId client);

  const ServiceOptions& options() const { return options_; }
  uint64_t executed_count() const { return executed_count_; }
  size_t session_count() const { return sessions_.size(); }
  // Sessions forgotten by expiry or by the sessions_max limit since this object was made or
  // restored (not replicated state: for logs and tests).
  uint64_t sessions_expired() const { return sessions_expired_; }
  // Order time of a client's latest request, if it has a session.
  std::optional<uint64_t> last_activity_us(ClientId client) const;

 private:
  struct Session {
    Sequence acked_below{};
    uint64_t last_activity_us = 0;
    std::map<Sequence, Bytes> replies;
  };
  using ActivityKey = std::pair<uint64_t, ClientId>;  // (last_activity_us, client)

  // Raises the watermark (never lowers it) and forgets the replies below it.
  static void advance_watermark(Session& session, Sequence acked_below);
  bool idle_at(const Session& session, uint64_t now_us) const;
  void forget(std::map<ClientId, Session>::iterator session);
  // The requesting client's session at `now_us`, created (evicting the least recently active
  // session at the limit) or refreshed; expires idle sessions on the way.
  Session& session_for(ClientId client, uint64_t now_us);

  std::unique_ptr<StateMachine> machine_;
  ServiceOptions options_;
  std::map<ClientId, Session> sessions_;
  // Every session by last activity, oldest first: expiry and eviction take from the front.
  std::set<ActivityKey> by_activity_;
  uint64_t executed_count_ = 0;
  uint64_t sessions_expired_ = 0;
};

}  // namespace lockstep
