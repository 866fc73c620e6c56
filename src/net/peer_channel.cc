#include "net/peer_channel.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <type_traits>
#include <variant>

#include "core/assert.h"

namespace lockstep::net {
namespace {

// The resend buffer is compacted (its acknowledged prefix erased) once the prefix is at least
// this large and more than half the buffer, so compaction costs O(1) amortised per byte.
constexpr size_t kCompactBytesMin = 1024 * 1024;
// Room in a connection's output for control frames (Hello, PeerAck) and the one frame that may
// pass resend_bytes_max before the channel fails, besides a copy of the whole resend buffer.
constexpr size_t kOutputSlackBytes = kFrameBytesMax + 64 * 1024;

const char* message_kind(const WireMessage& message) {
  return std::visit(
      [](const auto& m) -> const char* {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, Hello>) return "Hello";
        if constexpr (std::is_same_v<M, ClientRequest>) return "ClientRequest";
        if constexpr (std::is_same_v<M, ClientReply>) return "ClientReply";
        if constexpr (std::is_same_v<M, PeerData>) return "PeerData";
        if constexpr (std::is_same_v<M, PeerAck>) return "PeerAck";
        return "a non-replica frame";
      },
      message);
}

}  // namespace

PeerChannel::PeerChannel(EventLoop& loop, PeerChannelOptions options, Deliver deliver)
    : loop_(loop),
      options_(std::move(options)),
      deliver_(std::move(deliver)),
      name_("replica " + std::to_string(options_.peer.value)),
      backoff_ns_(options_.reconnect_backoff_min_ns),
      jitter_(options_.incarnation ^ (uint64_t{options_.peer.value} << 32)) {
  LOCKSTEP_ASSERT(options_.self != options_.peer, "a channel connects two distinct replicas");
  LOCKSTEP_ASSERT(options_.incarnation != 0, "incarnation 0 means 'unknown' on the wire");
  LOCKSTEP_ASSERT(!options_.dial_address || options_.self < options_.peer,
                  "only the lower id of a pair dials (see the header)");
}

PeerChannel::~PeerChannel() {
  loop_.cancel(reconnect_timer_);
  loop_.cancel(handshake_timer_);
  loop_.cancel(ack_timer_);
  if (connection_) connection_->set_handler(nullptr);
}

void PeerChannel::start() {
  if (started_) return;
  started_ = true;
  if (options_.dial_address) dial();
}

size_t PeerChannel::output_bytes_max() const {
  return std::max(options_.connection_limits.write_buffer_bytes_max,
                  options_.resend_bytes_max + kOutputSlackBytes);
}

Hello PeerChannel::make_hello() const {
  return Hello{PeerRole::kReplica, options_.self.value, options_.incarnation,
               received_through_ + 1};
}

// ---- outgoing -------------------------------------------------------------------------------

void PeerChannel::send(ReplicaMessage&& message) {
  if (failed_) return;
  const uint64_t sequence = next_sequence_++;
  // encode_frame reserves exactly one frame's bytes; growing geometrically here avoids a
  // reallocation (and a copy of every buffered frame) per message.
  if (resend_.capacity() - resend_.size() < std::max<size_t>(resend_.capacity() / 4, 4096)) {
    resend_.reserve(std::max<size_t>(resend_.capacity() * 2, 64 * 1024));
  }
  const size_t start = resend_.size();
  encode_frame(WireMessage{PeerData{sequence, received_through_, std::move(message)}}, resend_);
  unacked_.push_back(FrameEnd{sequence, resend_base_ + resend_.size()});
  ++stats_.frames_sent;
  if (state_ == State::kEstablished) {
    connection_->send_encoded(std::span(resend_).subspan(start));
    ack_sent_ = std::max(ack_sent_, received_through_);
  }
  if (unacknowledged_bytes() > options_.resend_bytes_max) {
    fail(std::to_string(unacknowledged_bytes()) + " bytes unacknowledged (limit " +
         std::to_string(options_.resend_bytes_max) + ")");
  }
}

void PeerChannel::on_acknowledged(uint64_t acknowledged) {
  if (acknowledged >= next_sequence_) {
    protocol_error("acknowledgement " + std::to_string(acknowledged) + " of a frame never sent");
    return;
  }
  while (!unacked_.empty() && unacked_.front().sequence <= acknowledged) {
    resend_begin_ = unacked_.front().end;
    unacked_.pop_front();
  }
  const size_t acknowledged_prefix = resend_begin_ - resend_base_;
  if (unacked_.empty()) {
    resend_.clear();  // keeps the capacity for the next frames
    resend_base_ = resend_begin_;
  } else if (acknowledged_prefix >= kCompactBytesMin && acknowledged_prefix > resend_.size() / 2) {
    resend_.erase(resend_.begin(), resend_.begin() + static_cast<ptrdiff_t>(acknowledged_prefix));
    resend_base_ = resend_begin_;
  }
}

void PeerChannel::schedule_ack() {
  if (received_through_ - ack_sent_ >= options_.ack_frames_max) {
    send_ack();
    return;
  }
  if (ack_timer_ != 0) return;
  ack_timer_ = loop_.schedule(options_.ack_delay_ns, [this] {
    ack_timer_ = 0;
    // Traffic in the other direction usually carried the acknowledgement already.
    if (received_through_ > ack_sent_) send_ack();
  });
}

void PeerChannel::send_ack() {
  if (state_ != State::kEstablished) return;
  connection_->send(PeerAck{received_through_});
  ack_sent_ = received_through_;
}

// ---- connection management -------------------------------------------------------------------

void PeerChannel::dial() {
  reconnect_timer_ = 0;
  if (connection_) return;
  state_ = State::kConnecting;
  connection_ = Connection::dial(loop_, *options_.dial_address, this, options_.connection_limits);
  connection_->set_output_bytes_max(output_bytes_max());
  connection_->set_peer_name(name_ + " at " + format_address(*options_.dial_address));
  // The Hello is queued now and written as soon as the TCP handshake completes.
  connection_->send(make_hello());
}

void PeerChannel::on_connected(Connection& connection) {
  if (&connection != connection_.get()) return;
  state_ = State::kAwaitingHello;
  handshake_timer_ = loop_.schedule(options_.handshake_timeout_ns, [this] {
    handshake_timer_ = 0;
    if (state_ == State::kAwaitingHello && connection_) {
      connection_->close("no Hello from the peer within the handshake timeout");
    }
  });
}

void PeerChannel::adopt(std::unique_ptr<Connection> connection, const Hello& hello) {
  LOCKSTEP_ASSERT(hello.role == PeerRole::kReplica && hello.id == options_.peer.value,
                  "adopt() takes only connections from this channel's peer");
  discard_connection();
  connection_ = std::move(connection);
  connection_->set_handler(this);
  connection_->set_output_bytes_max(output_bytes_max());
  connection_->set_peer_name(name_ + " at " + connection_->peer_name());
  state_ = State::kAwaitingHello;
  on_hello(hello);
}

void PeerChannel::drop_connection(const std::string& reason) {
  if (connection_) connection_->close(reason);
}

void PeerChannel::discard_connection() {
  loop_.cancel(handshake_timer_);
  handshake_timer_ = 0;
  if (!connection_) return;
  // No on_closed for a connection we drop on purpose: it is replaced, not lost.
  connection_->set_handler(nullptr);
  connection_->close("replaced by a newer connection");
  loop_.dispose(std::move(connection_));
  state_ = State::kDisconnected;
}

void PeerChannel::on_closed(Connection& connection, const std::string& reason) {
  if (&connection != connection_.get()) return;
  const bool was_established = state_ == State::kEstablished;
  loop_.cancel(handshake_timer_);
  handshake_timer_ = 0;
  loop_.dispose(std::move(connection_));
  state_ = State::kDisconnected;
  if (stats_.connections == 0 && !reported_down_) {
    // At cluster start the peers come up one by one: not being able to reach one yet is normal.
    spdlog::info("waiting for {}: {}", name_, reason);
    reported_down_ = true;
  } else if (!reported_down_ || was_established) {
    spdlog::warn("connection to {} lost: {} ({} frames unacknowledged)", name_, reason,
                 unacked_.size());
    reported_down_ = true;
  } else {
    spdlog::debug("connection to {} failed again: {}", name_, reason);
  }
  if (options_.dial_address && started_) schedule_reconnect();
}

void PeerChannel::schedule_reconnect() {
  if (reconnect_timer_ != 0) return;
  // Jitter (75%..125%) keeps replicas that lost each other at the same moment from retrying in
  // lockstep; the backoff doubles per failed attempt and resets once a handshake completes.
  std::uniform_int_distribution<uint64_t> spread(backoff_ns_ * 3 / 4, backoff_ns_ * 5 / 4);
  uint64_t delay_ns = spread(jitter_);
  backoff_ns_ = std::min(backoff_ns_ * 2, options_.reconnect_backoff_max_ns);
  reconnect_timer_ = loop_.schedule(delay_ns, [this] { dial(); });
}

void PeerChannel::protocol_error(const std::string& reason) {
  spdlog::error("protocol error on channel to {}: {}; dropping the connection", name_, reason);
  if (connection_) connection_->close(reason);
}

void PeerChannel::fail(const std::string& reason) {
  spdlog::error(
      "channel to {} failed: {}; the peer is hopelessly behind, no longer sending to it until "
      "it restarts",
      name_, reason);
  failed_ = true;
  resend_.clear();
  unacked_.clear();
  resend_base_ = resend_begin_ = 0;
  if (connection_) connection_->close("channel failed: " + reason);
}

// ---- incoming --------------------------------------------------------------------------------

void PeerChannel::on_message(Connection& connection, WireMessage&& message) {
  if (&connection != connection_.get()) return;
  if (auto* data = std::get_if<PeerData>(&message)) {
    if (state_ != State::kEstablished) {
      protocol_error("PeerData before the Hello exchange completed");
      return;
    }
    on_data(std::move(*data));
    return;
  }
  if (auto* ack = std::get_if<PeerAck>(&message)) {
    if (state_ != State::kEstablished) {
      protocol_error("PeerAck before the Hello exchange completed");
      return;
    }
    peer_knows_us_ = true;
    on_acknowledged(ack->acknowledged);
    return;
  }
  if (auto* hello = std::get_if<Hello>(&message)) {
    if (state_ != State::kAwaitingHello) {
      protocol_error("unexpected second Hello");
      return;
    }
    if (hello->role != PeerRole::kReplica || hello->id != options_.peer.value) {
      protocol_error("Hello from role " + std::to_string(static_cast<int>(hello->role)) + " id " +
                     std::to_string(hello->id) + " on the channel to " + name_);
      return;
    }
    on_hello(*hello);
    return;
  }
  protocol_error(std::string("unexpected ") + message_kind(message) + " on a replica channel");
}

void PeerChannel::on_hello(const Hello& hello) {
  if (hello.incarnation == 0) {
    protocol_error("Hello with incarnation 0");
    return;
  }
  if (peer_incarnation_ != 0 && hello.incarnation != peer_incarnation_) {
    spdlog::warn("{} restarted (incarnation {:016x} -> {:016x}); starting the channel over", name_,
                 peer_incarnation_, hello.incarnation);
    reset_streams();
    failed_ = false;
  }
  if (failed_) {
    if (connection_) connection_->close("channel failed; waiting for the peer to restart");
    return;
  }
  peer_incarnation_ = hello.incarnation;
  // Only a peer that has already seen our incarnation wrote next_expected about our stream.
  if (peer_knows_us_ && hello.next_expected > 0) {
    on_acknowledged(std::min(hello.next_expected - 1, next_sequence_ - 1));
  }
  if (!connection_) return;
  // The acceptor answers with its own Hello; the dialer sent its Hello when it dialed.
  if (!options_.dial_address) connection_->send(make_hello());
  establish();
}

void PeerChannel::establish() {
  loop_.cancel(handshake_timer_);
  handshake_timer_ = 0;
  state_ = State::kEstablished;
  backoff_ns_ = options_.reconnect_backoff_min_ns;
  ++stats_.connections;
  if (reported_down_ || stats_.connections == 1) {
    spdlog::info("channel to {} established (resending {} frames, next expected {})", name_,
                 unacked_.size(), received_through_ + 1);
  }
  reported_down_ = false;
  if (!unacked_.empty()) {
    // One copy of every unacknowledged frame, in order; the peer drops those it already has.
    connection_->send_encoded(std::span(resend_).subspan(resend_begin_ - resend_base_));
    stats_.frames_resent += unacked_.size();
  }
  // Acknowledge at once what we hold: frames in the resend copies carry older values.
  if (received_through_ > 0) send_ack();
}

void PeerChannel::reset_streams() {
  ++stats_.resets;
  next_sequence_ = 1;
  resend_.clear();
  unacked_.clear();
  resend_base_ = resend_begin_ = 0;
  received_through_ = 0;
  ack_sent_ = 0;
  peer_knows_us_ = false;
}

void PeerChannel::on_data(PeerData&& data) {
  peer_knows_us_ = true;
  if (data.acknowledged > 0) on_acknowledged(data.acknowledged);
  if (!connection_ || !connection_->is_open()) return;  // the acknowledgement was bad
  if (data.channel_sequence <= received_through_) {
    ++stats_.duplicates_dropped;
    return;
  }
  if (data.channel_sequence != received_through_ + 1) {
    protocol_error("gap in channel sequence: expected " + std::to_string(received_through_ + 1) +
                   ", got " + std::to_string(data.channel_sequence));
    return;
  }
  received_through_ = data.channel_sequence;
  ++stats_.frames_delivered;
  schedule_ack();
  deliver_(options_.peer, std::move(data.message));
}

}  // namespace lockstep::net
