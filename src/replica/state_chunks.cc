#include "replica/state_chunks.h"

#include <algorithm>
#include <utility>

#include "core/codec.h"
#include "crypto/crypto.h"

namespace lockstep {
bool StateSender::under_way(uint64_t now_ns, ReplicaId to, uint64_t view) const {
  auto it = outgoing_.find(to);
  // A joiner taking pieces asks again within stall_ns of a piece that did not come. One that has
  // not asked for twice that has abandoned the transfer (it restarted, or loaded another donor's
  // state), and a new one replaces it: holding its slot until idle_ns kept a joiner restarted
  // twice from every donor (simulator seed 238, byzantine with reconfiguration).
  const uint64_t abandoned_ns = std::min(options_.idle_ns, 2 * options_.stall_ns);
  if (it == outgoing_.end() || now_ns >= it->second.last_activity_ns + abandoned_ns) {
    return false;
  }
  return it->second.view == view || keep_under_way_;
}

ReplicaMessage StateSender::start(uint64_t now_ns, ReplicaId to, StateTransfer transfer) {
  Bytes encoded;
  encode_replica_message(transfer, encoded);
  if (encoded.size() <= options_.chunk_bytes) return transfer;
  Outgoing& outgoing = outgoing_[to];
  outgoing.view = transfer.view.value;
  outgoing.digest = crypto::digest(encoded);
  outgoing.encoded = std::move(encoded);
  outgoing.last_activity_ns = now_ns;
  return chunk_at(outgoing, 0);
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
  // Done: a joiner that lost the last piece (a dropped connection) gets the state again when its
  // core asks again.
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
  const auto begin = outgoing.encoded.begin();
  return StateChunk{
      outgoing.digest, offset, outgoing.encoded.size(),
      Bytes(begin + static_cast<std::ptrdiff_t>(offset), begin + static_cast<std::ptrdiff_t>(end))};
}

bool StateReceiver::well_formed(const StateChunk& chunk) const {
  // Whole pieces only: every replica uses the same chunk_bytes, and a piece is that long unless
  // it is the last (a faulty donor cannot dribble a byte at a time).
  return chunk.total > options_.chunk_bytes && chunk.total <= options_.state_bytes_max &&
         chunk.offset < chunk.total &&
         chunk.data.size() == std::min<uint64_t>(options_.chunk_bytes, chunk.total - chunk.offset);
}

StateReceiver::Outcome StateReceiver::on_chunk(uint64_t now_ns, ReplicaId from, StateChunk chunk) {
  if (!well_formed(chunk)) return std::monostate{};
  auto it = incoming_.find(from);
  if (chunk.offset == 0) {
    // A first piece starts this donor's transfer, or starts it over (a new view, a restart).
    it = incoming_.insert_or_assign(from, Incoming{chunk.digest, chunk.total, {}, 0}).first;
  } else if (it == incoming_.end() || it->second.digest != chunk.digest ||
             it->second.total != chunk.total || chunk.offset != it->second.bytes.size()) {
    return std::monostate{};  // only the piece asked for, of the transfer under way
  }
  Incoming& incoming = it->second;
  incoming.bytes.insert(incoming.bytes.end(), chunk.data.begin(), chunk.data.end());
  if (incoming.bytes.size() < incoming.total) {
    incoming.asked_ns = now_ns;
    return Progress{from, Ask{from, StateChunkRequest{incoming.digest, incoming.bytes.size()}}};
  }
  const Incoming whole = std::move(incoming);
  incoming_.erase(it);
  if (crypto::digest(whole.bytes) != whole.digest) return Malformed{};
  auto decoded = decode_replica_message(whole.bytes);
  auto* message = std::get_if<ReplicaMessage>(&decoded);
  auto* transfer = message == nullptr ? nullptr : std::get_if<StateTransfer>(message);
  if (transfer == nullptr) return Malformed{};
  if (transfer == nullptr || transfer->sender != from) return Malformed{};
  return std::move(*transfer);
}

std::vector<StateReceiver::Ask> StateReceiver::on_tick(uint64_t now_ns) {
  std::vector<Ask> asks;
  for (auto& [donor, incoming] : incoming_) {
    if (now_ns < incoming.asked_ns + options_.stall_ns) continue;
    incoming.asked_ns = now_ns;
    asks.push_back(Ask{donor, StateChunkRequest{incoming.digest, incoming.bytes.size()}});
  }
  return asks;
}

uint64_t StateReceiver::bytes_held() const {
  uint64_t held = 0;
  for (const auto& [donor, incoming] : incoming_)
    held += incoming.bytes.size();
  return held;
}

}  // namespace lockstep
