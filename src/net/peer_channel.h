// A FIFO channel between two replicas that survives reconnects (docs/DESIGN.md, "runtime").
//
// The ordering protocol needs FIFO channels between replicas (Schneider §3.2.1: a request is
// stable once something later has arrived from every source, which is only sound when channels
// do not reorder or lose messages). TCP gives FIFO per connection; this class makes it hold
// across reconnects:
//
//  - Each direction of each replica pair numbers its frames (PeerData.channel_sequence, from 1).
//    Every frame sent stays in a resend buffer until the peer acknowledges it (PeerData.
//    acknowledged piggybacks acknowledgements on traffic; a PeerAck carries them alone when
//    there is nothing to send for `ack_delay_ns`).
//  - Every connection starts with a Hello in each direction. Hello.next_expected is the next
//    sequence number the sender wants; the receiver treats it as an acknowledgement and resends
//    every unacknowledged frame after it. The receiver drops frames it already has (duplicates)
//    and closes the connection on a gap (which would be a bug: it never delivers out of order).
//  - next_expected is only trusted when the peer process has already seen this process's current
//    incarnation (it has sent us data or an ack since), because a Hello written before the peer
//    learnt that we restarted refers to our previous stream. Otherwise every unacknowledged frame
//    is resent and duplicates are dropped at the receiver.
//  - A Hello with a different incarnation than before means the peer process restarted: both
//    directions start over from sequence 1 and the frames queued for the old process are dropped.
//    Messages then pass through unchanged; the protocol core sees the new incarnation in them.
//
// Who connects: the replica with the lower id dials the higher one; the higher id only accepts.
// So there is never more than one connection per pair to arbitrate, except a stale one from
// before a reconnect, which the newer connection replaces. Dialing retries with exponential
// backoff (jittered) between reconnect_backoff_min_ns and reconnect_backoff_max_ns.
//
// Limit: the resend buffer holds at most `resend_bytes_max`. A peer that stays unreachable (or
// stops acknowledging) for that much traffic is hopelessly behind: the channel is marked failed,
// its buffer dropped, and it stops carrying messages (the protocol core's failure detector
// removes the silent peer long before this, at the default limits). Only a restart of the peer
// (a new incarnation) revives a failed channel.
//
// A peer that is dead for a long time: its buffer stops growing long before the limit, because
// the failstop core stops sending to a replica once it suspects it (failure_timeout after it fell
// silent) and afterwards only answers a removed replica that still talks, rate-limited. So the
// buffer holds about one failure timeout's worth of traffic, and keeps it: it is not dropped when
// the view change removes the peer. That is deliberate. A removed replica may have been only
// paused; when it comes back it must learn that it was removed (it then halts, docs/DESIGN.md)
// rather than time out on everyone and form a view of its own, and that notice can only reach it
// in FIFO order after the frames queued before it. Dropping them would leave a gap that the
// receiver must refuse. A restart of the peer (new incarnation) drops the buffer; the limit
// bounds everything else. (The byzantine core has no membership and keeps sending to a dead
// replica: there the buffer grows to the limit, and the channel fails and frees it.)
//
// The connection's own output limit is raised to resend_bytes_max plus a frame: what a
// connection has to write is at most a copy of the resend buffer plus control frames, and a
// smaller limit would close every reconnect that resends a large backlog, forever.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "core/messages.h"
#include "net/address.h"
#include "net/connection.h"
#include "net/event_loop.h"

namespace lockstep::net {

struct PeerChannelOptions {
  ReplicaId self{};
  ReplicaId peer{};
  uint64_t incarnation = 0;  // this process's, never 0
  // Where the peer listens. Only the lower id of the pair dials; the other leaves this empty.
  std::optional<Address> dial_address;
  size_t resend_bytes_max = 256 * 1024 * 1024;
  uint64_t reconnect_backoff_min_ns = 10'000'000;
  uint64_t reconnect_backoff_max_ns = 1'000'000'000;
  uint64_t handshake_timeout_ns = 5'000'000'000;
  uint64_t ack_delay_ns = 5'000'000;
  uint64_t ack_frames_max = 1024;  // acknowledge at once after this many unacknowledged frames
  ConnectionLimits connection_limits;
};

class PeerChannel final : public ConnectionHandler {
 public:
  // Called for every message received, once, in the order the peer sent them.
  using Deliver = std::function<void(ReplicaId from, ReplicaMessage&& message)>;

  PeerChannel(EventLoop& loop, PeerChannelOptions options, Deliver deliver);
  ~PeerChannel();
  PeerChannel(const PeerChannel&) = delete;
  PeerChannel& operator=(const PeerChannel&) = delete;

  // Starts dialing (when this side dials). Messages sent before then are buffered.
  void start();

  // Queues `message` for the peer: FIFO with every other message sent on this channel, sent now
  // when connected, else after the next reconnect. Dropped when the channel has failed.
  void send(ReplicaMessage&& message);

  // Hands over an accepted connection whose first frame was `hello` (role kReplica, id == peer).
  // Replaces any current connection. The connection's handler becomes this channel.
  void adopt(std::unique_ptr<Connection> connection, const Hello& hello);

  // Drops the current connection as if the network had broken it (tests, and a replica that
  // wants to force resynchronisation). A dialing side reconnects after the backoff.
  void drop_connection(const std::string& reason);

  ReplicaId peer() const { return options_.peer; }
  bool established() const { return state_ == State::kEstablished; }
  bool failed() const { return failed_; }
  uint64_t peer_incarnation() const { return peer_incarnation_; }

  struct Stats {
    uint64_t frames_sent = 0;  // new frames (not counting resends)
    uint64_t frames_resent = 0;
    uint64_t frames_delivered = 0;
    uint64_t duplicates_dropped = 0;
    uint64_t connections = 0;  // handshakes completed
    uint64_t resets = 0;       // peer restarts seen
  };
  const Stats& stats() const { return stats_; }
  size_t unacknowledged_frames() const { return unacked_.size(); }
  size_t unacknowledged_bytes() const { return resend_.size() - (resend_begin_ - resend_base_); }
  uint64_t received_through() const { return received_through_; }

  // ConnectionHandler
  void on_connected(Connection& connection) override;
  void on_message(Connection& connection, WireMessage&& message) override;
  void on_closed(Connection& connection, const std::string& reason) override;

 private:
  enum class State : uint8_t { kDisconnected, kConnecting, kAwaitingHello, kEstablished };
  struct FrameEnd {
    uint64_t sequence;
    uint64_t end;  // absolute byte position just past the frame (see resend_base_)
  };

  Hello make_hello() const;
  // The output limit of this channel's connections (see the header comment).
  size_t output_bytes_max() const;
  void on_hello(const Hello& hello);
  void on_data(PeerData&& data);
  void on_acknowledged(uint64_t acknowledged);
  void establish();
  void reset_streams();
  void fail(const std::string& reason);
  void discard_connection();
  void schedule_reconnect();
  void dial();
  void schedule_ack();
  void send_ack();
  void protocol_error(const std::string& reason);

  EventLoop& loop_;
  PeerChannelOptions options_;
  Deliver deliver_;
  std::string name_;  // "replica 2", for logs

  State state_ = State::kDisconnected;
  std::unique_ptr<Connection> connection_;
  bool started_ = false;
  bool failed_ = false;
  bool reported_down_ = false;  // the loss of this peer was logged; quieter until it is back
  uint64_t backoff_ns_ = 0;
  EventLoop::TimerId reconnect_timer_ = 0;
  EventLoop::TimerId handshake_timer_ = 0;
  EventLoop::TimerId ack_timer_ = 0;
  std::mt19937_64 jitter_;

  uint64_t peer_incarnation_ = 0;  // 0 until the first Hello
  bool peer_knows_us_ = false;     // the peer process has seen our current incarnation

  // Outgoing direction. Frames [resend_begin_, base + resend_.size()) are unacknowledged; byte
  // positions are absolute (they only grow) so that compacting the buffer moves no bookkeeping.
  uint64_t next_sequence_ = 1;
  Bytes resend_;
  uint64_t resend_base_ = 0;   // absolute position of resend_[0]
  uint64_t resend_begin_ = 0;  // absolute position of the first unacknowledged frame
  std::deque<FrameEnd> unacked_;

  // Incoming direction.
  uint64_t received_through_ = 0;  // frames 1..received_through_ delivered
  uint64_t ack_sent_ = 0;          // highest acknowledgement put on the wire

  Stats stats_;
};

}  // namespace lockstep::net
