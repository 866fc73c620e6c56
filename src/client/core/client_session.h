// One client session's protocol logic, with no I/O and no clock: sequence numbers, the
// acknowledgement watermark, retries and the deadline. The networked Client (client/client.h)
// and the simulator both drive it.
//
// failstop mode: a request is broadcast to every replica; the first reply with status kOk
// completes it. With no answer after `retry_interval_ns` the request is broadcast again with the
// same (client, sequence), which the replicas' session table turns into "the first reply again",
// never a second execution. With no answer by `deadline_ns` after submission the request completes
// with kTimedOut: its outcome is unknown (it may still take effect).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "core/messages.h"

namespace lockstep {

struct ClientOptions {
  uint32_t replica_count = 0;
  uint64_t retry_interval_ns = 200'000'000;
  uint64_t deadline_ns = 5'000'000'000;
  uint32_t outstanding_max = 1024;  // pipelined requests in flight
};

class ClientSession {
 public:
  enum class Status : uint8_t { kOk, kTimedOut };
  struct Completion {
    Sequence sequence;
    Status status;
    Bytes result;  // the state machine's output when kOk
    ReplicaId replied_by;
  };
  struct Send {
    ReplicaId to;
    ClientRequest request;
  };

  ClientSession(ClientId id, ClientOptions options);

  // Starts a request; returns its sequence number. Precondition: can_submit().
  Sequence submit(uint64_t now_ns, Bytes command);
  bool can_submit() const { return pending_.size() < options_.outstanding_max; }

  void on_reply(uint64_t now_ns, const ClientReply& reply);
  void tick(uint64_t now_ns);

  std::vector<Send> take_sends();
  std::vector<Completion> take_completions();

  ClientId id() const { return id_; }
  size_t outstanding() const { return pending_.size(); }
  // Earliest time tick() has something to do, for the event loop's timer.
  std::optional<uint64_t> next_deadline_ns() const;

 private:
  struct Pending {
    ClientRequest request;
    uint64_t submitted_ns;
    uint64_t next_retry_ns;
  };
  void broadcast(const ClientRequest& request);
  Sequence acked_below() const;

  ClientId id_;
  ClientOptions options_;
  uint64_t next_sequence_ = 1;
  std::map<Sequence, Pending> pending_;
  std::vector<Send> sends_;
  std::vector<Completion> completions_;
};

}  // namespace lockstep
