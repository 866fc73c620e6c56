#include "replica/state_chunks.h"

#include <algorithm>
#include <utility>

#include "core/codec.h"
#include "crypto/crypto.h"

namespace lockstep {

std::optional<ReplicaMessage> StateSender::start(uint64_t now_ns, ReplicaId to,
                                                 const StateTransfer& transfer) {
  Bytes encoded;
  encode_replica_message(transfer, encoded);
  if (encoded.size() <= options_.chunk_bytes) return ReplicaMessage{transfer};
  auto existing = outgoing_.find(to);
  if (existing != outgoing_.end() && existing->second.view == transfer.view.value &&
      now_ns < existing->second.last_activity_ns + options_.idle_ns) {
    return std::nullopt;
  }
  Outgoing& outgoing = outgoing_[to];
  outgoing.view = transfer.view.value;
  outgoing.digest = crypto::digest(encoded);
  outgoing.encoded = std::move(encoded);
  outgoing.last_activity_ns = now_ns;
  return ReplicaMessage{chunk_at(outgoing, 0)};
}

std::optional<StateChunk> StateSender::on_request(uint64_t now_ns, ReplicaId from,
                                                  const StateChunkRequest& request) {
  auto it = outgoing_.find(from);
  if (it == outgoing_.end() || it->second.digest != request.digest ||
      request.offset >= it->second.encoded.size()) {
    return std::nullopt;
  }
  StateChunk chunk = chunk_at(it->second, request.offset);
  it->second.last_activity_ns = now_ns;
  if (request.offset + chunk.data.size() == it->second.encoded.size()) outgoing_.erase(it);
  return chunk;
}

void StateSender::expire(uint64_t now_ns) {
  std::erase_if(outgoing_, [&](const auto& entry) {
    return now_ns >= entry.second.last_activity_ns + options_.idle_ns;
  });
}

StateChunk StateSender::chunk_at(const Outgoing& outgoing, uint64_t offset) const {
  const uint64_t end = std::min<uint64_t>(outgoing.encoded.size(), offset + options_.chunk_bytes);
  const auto first = outgoing.encoded.begin() + static_cast<std::ptrdiff_t>(offset);
  return StateChunk{outgoing.digest, offset, outgoing.encoded.size(),
                    Bytes(first, outgoing.encoded.begin() + static_cast<std::ptrdiff_t>(end))};
}

StateReceiver::Outcome StateReceiver::on_chunk(uint64_t now_ns, ReplicaId from, StateChunk chunk) {
  if (chunk.data.empty() || chunk.offset > chunk.total ||
      chunk.data.size() > chunk.total - chunk.offset) {
    return std::monostate{};
  }
  if (chunk.offset == 0) {
    // A donor starting over (a new view, or it restarted) replaces its own transfer; another
    // donor's offer waits while the current one makes progress.
    if (!active_ || active_->donor == from || now_ns >= active_->progress_ns + options_.stall_ns) {
      return begin(now_ns, from, std::move(chunk));
    }
    offers_.insert_or_assign(from, std::move(chunk));
    return std::monostate{};
  }
  // Only the piece this replica asked for: at the end of what it holds, of the same transfer.
  if (!active_ || active_->donor != from || active_->digest != chunk.digest ||
      active_->total != chunk.total || chunk.offset != active_->bytes.size()) {
    return std::monostate{};
  }
  active_->bytes.insert(active_->bytes.end(), chunk.data.begin(), chunk.data.end());
  active_->progress_ns = now_ns;
  return continue_or_finish();
}

StateReceiver::Outcome StateReceiver::on_tick(uint64_t now_ns) {
  if (active_ && now_ns < active_->progress_ns + options_.stall_ns) return std::monostate{};
  if (!offers_.empty()) {
    auto first = offers_.begin();
    const ReplicaId donor = first->first;
    StateChunk chunk = std::move(first->second);
    offers_.erase(first);
    return begin(now_ns, donor, std::move(chunk));
  }
  if (!active_) return std::monostate{};
  // The request or the answer may have gone with a dropped connection: ask again.
  active_->progress_ns = now_ns;
  return Ask{active_->donor, StateChunkRequest{active_->digest, active_->bytes.size()}};
}

void StateReceiver::reset() {
  active_.reset();
  offers_.clear();
}

std::optional<ReplicaId> StateReceiver::donor() const {
  if (!active_) return std::nullopt;
  return active_->donor;
}

uint64_t StateReceiver::bytes_held() const {
  return active_ ? active_->bytes.size() : 0;
}

StateReceiver::Outcome StateReceiver::begin(uint64_t now_ns, ReplicaId from, StateChunk chunk) {
  offers_.erase(from);
  active_ = Incoming{from, chunk.digest, chunk.total, std::move(chunk.data), now_ns};
  return continue_or_finish();
}

StateReceiver::Outcome StateReceiver::continue_or_finish() {
  if (active_->bytes.size() < active_->total) {
    return Ask{active_->donor, StateChunkRequest{active_->digest, active_->bytes.size()}};
  }
  const Incoming whole = std::move(*active_);
  active_.reset();
  if (crypto::digest(whole.bytes) != whole.digest) return Malformed{};
  auto decoded = decode_replica_message(whole.bytes);
  auto* message = std::get_if<ReplicaMessage>(&decoded);
  auto* transfer = message == nullptr ? nullptr : std::get_if<StateTransfer>(message);
  if (transfer == nullptr || transfer->sender != whole.donor) return Malformed{};
  return std::move(*transfer);
}

}  // namespace lockstep
