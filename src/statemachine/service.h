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
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>

#include "core/messages.h"
#include "statemachine/state_machine.h"

namespace lockstep {

class Service {
 public:
  static constexpr size_t kRepliesPerClientMax = 4096;

  explicit Service(std::unique_ptr<StateMachine> machine);

  enum class Outcome : uint8_t {
    kExecuted,   // ran now; `reply` is its output
    kDuplicate,  // ran before; `reply` is the cached output
    kStale,      // below the client's watermark; nobody waits for it; `reply` is empty
  };
  struct Result {
    Outcome outcome;
    Bytes reply;
  };

  // Executes `request` exactly once (see above). Deterministic.
  Result execute(const ClientRequest& request);

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
  //   version        1 byte, 1; any other value is rejected
  //   session_count, then per session, client ids strictly ascending:
  //     client, acked_below, reply_count (at most kRepliesPerClientMax),
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
  void forget_session_for_testing(ClientId client) { sessions_.erase(client); }

  uint64_t executed_count() const { return executed_count_; }
  size_t session_count() const { return sessions_.size(); }

 private:
  struct Session {
    Sequence acked_below{};
    std::map<Sequence, Bytes> replies;
  };
  // Raises the watermark (never lowers it) and forgets the replies below it.
  static void advance_watermark(Session& session, Sequence acked_below);

  std::unique_ptr<StateMachine> machine_;
  std::map<ClientId, Session> sessions_;
  uint64_t executed_count_ = 0;
};

}  // namespace lockstep
