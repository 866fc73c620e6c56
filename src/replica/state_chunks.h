// A state transfer in pieces (docs/DESIGN.md §12.6). A joiner's state (failstop) or a checkpoint's
// snapshot (byzantine) can be far larger than one frame (kFrameBytesMax), and queueing all of it
// for one peer at once would grow the donor's send buffers by the whole state. So the donor encodes
// the StateTransfer once, keeps the bytes, and sends one StateChunk; the joiner asks for each next
// one (StateChunkRequest) when the previous is in. At most one piece per joiner is in flight, and a
// joiner that stops asking costs the donor one copy of the state until it expires.
//
// The joiner checks the whole (BLAKE2b against the digest every chunk names) before decoding it,
// then hands the StateTransfer to the core as if it had come in one message: the core's own checks
// (the failstop view, the byzantine digest vouched for by t+1 votes) are unchanged.
//
// Pure: no I/O, no clock; times come from the caller.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <variant>

#include "core/messages.h"

namespace lockstep {

struct StateChunkOptions {
  // Transfers whose encoding is larger than this go in pieces of this size.
  size_t chunk_bytes = size_t{1} << 20;
  // The joiner gives up on a donor that sent nothing for this long: it asks again, or takes
  // another donor's offer (byzantine: every signer of the checkpoint offers it).
  uint64_t stall_ns = 500'000'000;
  // The donor drops a transfer nobody asked a piece of for this long.
  uint64_t idle_ns = 5'000'000'000;
};

// The donor's side: one transfer in progress per joiner.
class StateSender {
 public:
  explicit StateSender(StateChunkOptions options) : options_(options) {}

  // The core addressed `transfer` (blobs filled) to `to`. Returns what to send instead: the
  // transfer itself when it is small, else its first chunk; or nothing when a transfer of the same
  // view is already going to `to` (the failstop core answers every retry interval; the one in
  // progress is as good, and starting over would never finish a large state).
  std::optional<ReplicaMessage> start(uint64_t now_ns, ReplicaId to, const StateTransfer& transfer);
  // The next chunk `from` asks for, if this replica is sending it that transfer.
  std::optional<StateChunk> on_request(uint64_t now_ns, ReplicaId from,
                                       const StateChunkRequest& request);
  // Drops transfers idle for StateChunkOptions::idle_ns.
  void expire(uint64_t now_ns);
  size_t in_progress() const { return outgoing_.size(); }

 private:
  struct Outgoing {
    uint64_t view = 0;
    Digest digest{};
    Bytes encoded;
    uint64_t last_activity_ns = 0;
  };
  StateChunk chunk_at(const Outgoing& outgoing, uint64_t offset) const;

  StateChunkOptions options_;
  std::map<ReplicaId, Outgoing> outgoing_;
};

// The joiner's side: assembles one transfer at a time; offers from other donors wait (first
// chunk only) until the one in progress stalls.
class StateReceiver {
 public:
  explicit StateReceiver(StateChunkOptions options) : options_(options) {}

  struct Ask {
    ReplicaId donor;
    StateChunkRequest request;
  };
  struct Malformed {};  // the pieces did not make the transfer they named, or did not decode
  // What a chunk leads to: nothing (ignored), a request for the next one, the whole transfer, or a
  // transfer that failed its checks (the core keeps asking for another).
  using Outcome = std::variant<std::monostate, Ask, StateTransfer, Malformed>;

  Outcome on_chunk(uint64_t now_ns, ReplicaId from, StateChunk chunk);
  // Called every tick: asks a stalled donor again, or moves on to a waiting offer.
  Outcome on_tick(uint64_t now_ns);
  // The state is loaded (or no longer wanted): forget every transfer.
  void reset();
  // The donor whose transfer is being assembled, for progress reports.
  std::optional<ReplicaId> donor() const;
  uint64_t bytes_held() const;

 private:
  struct Incoming {
    ReplicaId donor{};
    Digest digest{};
    uint64_t total = 0;
    Bytes bytes;
    uint64_t progress_ns = 0;
  };
  Outcome begin(uint64_t now_ns, ReplicaId from, StateChunk chunk);
  Outcome continue_or_finish();

  StateChunkOptions options_;
  std::optional<Incoming> active_;
  std::map<ReplicaId, StateChunk> offers_;  // first chunks from other donors
};

}  // namespace lockstep
