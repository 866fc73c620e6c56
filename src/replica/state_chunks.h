// A state transfer in pieces (docs/DESIGN.md §12.6). A joiner's state (failstop) or a checkpoint's
// snapshot (byzantine) can be far larger than one frame (kFrameBytesMax), and queueing all of it
// for one peer at once would grow the donor's send buffers by the whole state. So the donor encodes
// the StateTransfer once, keeps the bytes, and sends one StateChunk; the joiner asks for each next
// one (StateChunkRequest) when the previous is in. At most one piece per joiner is in flight, and a
// joiner that stops asking costs the donor one copy of the state until it expires.
//
// A transfer is named by the BLAKE2b of its encoding. The joiner checks the whole against it
// before decoding it, then hands the StateTransfer to the core as if it had come in one message:
// the core's own checks (the failstop view, the byzantine digest t+1 votes signed) are unchanged.
//
// Every replica must use the same chunk_bytes: a joiner takes only whole pieces (a faulty donor
// cannot dribble a byte at a time). Pure: no I/O, no clock; times come from the caller.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <variant>
#include <vector>

#include "core/messages.h"

namespace lockstep {

struct StateChunkOptions {
  // Transfers whose encoding is larger than this go in pieces of this size.
  size_t chunk_bytes = size_t{1} << 20;
  // A joiner takes no transfer claiming to be larger (a faulty donor's claim costs memory only
  // as far as it really sends).
  uint64_t state_bytes_max = uint64_t{1} << 36;
  // A piece not in this long after the joiner asked: it asks again.
  uint64_t stall_ns = 500'000'000;
  // The donor drops a transfer nobody asked a piece of for this long.
  uint64_t idle_ns = 5'000'000'000;
};

// The donor's side: one transfer in progress per joiner.
class StateSender {
 public:
  // keep_under_way: a transfer being asked for is not replaced by a newer one (byzantine: the
  // joiner can load any boundary t+1 replicas vouched for, and a snapshot that takes longer than
  // an interval to send would otherwise never arrive). Failstop replaces it on a new view, which
  // the joiner needs.
  StateSender(StateChunkOptions options, bool keep_under_way)
      : options_(options), keep_under_way_(keep_under_way) {}

  // Whether a transfer the core now addresses to `to` for `view` is dropped because one is under
  // way (a piece of it asked for within 2·stall_ns); checked before the state is built, which can
  // be costly.
  bool under_way(uint64_t now_ns, ReplicaId to, uint64_t view) const;
  // The core addressed `transfer` (blobs filled) to `to`. Returns what to send instead: the
  // transfer itself when it is small, else its first chunk.
  ReplicaMessage start(uint64_t now_ns, ReplicaId to, StateTransfer transfer);
  // The piece `from` asks for, if this replica is sending it that transfer.
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
  bool keep_under_way_;
  std::map<ReplicaId, Outgoing> outgoing_;
};

// The joiner's side: one transfer per donor, assembled side by side (byzantine: every signer of
// the checkpoint offers it, and a faulty one must not hold up or spoil an honest one's; this is
// the memory the whole snapshots from each of them took before pieces). The first whole one
// that checks out is loaded.
class StateReceiver {
 public:
  explicit StateReceiver(StateChunkOptions options) : options_(options) {}

  struct Ask {
    ReplicaId donor;
    StateChunkRequest request;
    bool operator==(const Ask&) const = default;
  };
  // The pieces did not make the transfer they named, or did not decode.
  struct Malformed {
    bool operator==(const Malformed&) const = default;
  };
  // A piece arrived from `donor` (progress, for the core); `next` asks for the one after it.
  struct Progress {
    ReplicaId donor;
    Ask next;
    bool operator==(const Progress&) const = default;
  };
  // What a piece leads to: nothing (not taken), progress, the whole transfer, or a transfer that
  // failed its checks (that donor's; the others go on, and the core keeps asking).
  using Outcome = std::variant<std::monostate, Progress, StateTransfer, Malformed>;

  Outcome on_chunk(uint64_t now_ns, ReplicaId from, StateChunk chunk);
  // Called every tick: asks again every donor whose piece is late (the request or the answer may
  // have gone with a dropped connection).
  std::vector<Ask> on_tick(uint64_t now_ns);
  // The state is loaded (or no longer wanted): forget every transfer.
  void reset() { incoming_.clear(); }
  uint64_t bytes_held() const;

 private:
  struct Incoming {
    Digest digest{};
    uint64_t total = 0;
    Bytes bytes;
    uint64_t asked_ns = 0;
  };
  bool well_formed(const StateChunk& chunk) const;

  StateChunkOptions options_;
  std::map<ReplicaId, Incoming> incoming_;  // per donor
};

}  // namespace lockstep
