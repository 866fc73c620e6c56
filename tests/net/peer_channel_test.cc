// PeerChannel: FIFO, exactly-once delivery between two replicas across forced reconnects, peer
// restarts, and the resend buffer limit. Both replicas run on one event loop over loopback TCP.
#include "net/peer_channel.h"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <vector>

#include "net/acceptor.h"

namespace lockstep::net {
namespace {

ReplicaMessage numbered(uint64_t n, size_t command_bytes = 16) {
  return ForwardRequest{ReplicaId{0}, ClientRequest{ClientId{7},
                                                    Sequence{n},
                                                    Sequence{0},
                                                    Bytes(command_bytes, static_cast<uint8_t>(n)),
                                                    {}}};
}

uint64_t number_of(const ReplicaMessage& message) {
  return std::get<ForwardRequest>(message).request.sequence.value;
}

template <typename Predicate>
bool run_until(EventLoop& loop, Predicate done, uint64_t timeout_ns = 10'000'000'000) {
  const uint64_t deadline = monotonic_now_ns() + timeout_ns;
  EventLoop::TimerId tick = loop.schedule_every(1'000'000, [&] {
    if (done() || monotonic_now_ns() > deadline) loop.stop();
  });
  loop.run();
  loop.cancel(tick);
  return done();
}

// One end of the pair: a channel, what it delivered, and (for the accepting side) a listener.
struct Endpoint {
  std::unique_ptr<PeerChannel> channel;
  std::vector<uint64_t> delivered;
};

class PeerChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Replica 1 accepts; replica 0 dials it (the lower id dials).
    acceptor_ = std::make_unique<Acceptor>(
        loop_, Address{"127.0.0.1", 0}, [this](std::unique_ptr<Connection> c, const Hello& h) {
          if (h.role != PeerRole::kReplica || h.id != 0 || !b_.channel) {
            c->close("unexpected");
            loop_.dispose(std::move(c));
            return;
          }
          b_.channel->adopt(std::move(c), h);
        });
    make_b(0xB1);
    PeerChannelOptions a;
    a.self = ReplicaId{0};
    a.peer = ReplicaId{1};
    a.incarnation = 0xA1;
    a.dial_address = Address{"127.0.0.1", acceptor_->port()};
    a.reconnect_backoff_min_ns = 1'000'000;
    a.reconnect_backoff_max_ns = 20'000'000;
    a_.channel = std::make_unique<PeerChannel>(loop_, a, deliver_to(a_));
    a_.channel->start();
  }

  void make_b(uint64_t incarnation) {
    PeerChannelOptions b;
    b.self = ReplicaId{1};
    b.peer = ReplicaId{0};
    b.incarnation = incarnation;
    b_.delivered.clear();
    b_.channel = std::make_unique<PeerChannel>(loop_, b, deliver_to(b_));
    b_.channel->start();
  }

  PeerChannel::Deliver deliver_to(Endpoint& endpoint) {
    return [&endpoint](ReplicaId, ReplicaMessage&& message) {
      endpoint.delivered.push_back(number_of(message));
    };
  }

  static bool is_one_to(const std::vector<uint64_t>& delivered, uint64_t n) {
    if (delivered.size() != n) return false;
    for (uint64_t i = 0; i < n; ++i) {
      if (delivered[i] != i + 1) return false;
    }
    return true;
  }

  EventLoop loop_;
  std::unique_ptr<Acceptor> acceptor_;
  Endpoint a_;
  Endpoint b_;
};

TEST_F(PeerChannelTest, DeliversInOrderBothWays) {
  ASSERT_TRUE(
      run_until(loop_, [&] { return a_.channel->established() && b_.channel->established(); }));
  for (uint64_t n = 1; n <= 500; ++n) {
    a_.channel->send(numbered(n));
    b_.channel->send(numbered(n));
  }
  ASSERT_TRUE(
      run_until(loop_, [&] { return b_.delivered.size() == 500 && a_.delivered.size() == 500; }));
  EXPECT_TRUE(is_one_to(b_.delivered, 500));
  EXPECT_TRUE(is_one_to(a_.delivered, 500));
  // Acknowledgements (piggybacked or PeerAck) empty both resend buffers once traffic stops.
  ASSERT_TRUE(run_until(loop_, [&] {
    return a_.channel->unacknowledged_frames() == 0 && b_.channel->unacknowledged_frames() == 0;
  }));
  EXPECT_EQ(a_.channel->unacknowledged_bytes(), 0u);
}

TEST_F(PeerChannelTest, MessagesSentBeforeTheFirstConnectionAreDelivered) {
  // Nothing has connected yet: the frames wait in the resend buffer.
  for (uint64_t n = 1; n <= 50; ++n)
    a_.channel->send(numbered(n));
  for (uint64_t n = 1; n <= 50; ++n)
    b_.channel->send(numbered(n));
  ASSERT_TRUE(
      run_until(loop_, [&] { return b_.delivered.size() == 50 && a_.delivered.size() == 50; }));
  EXPECT_TRUE(is_one_to(b_.delivered, 50));
  EXPECT_TRUE(is_one_to(a_.delivered, 50));
}

TEST_F(PeerChannelTest, ResendsAfterForcedReconnectsWithoutLossOrDuplicates) {
  constexpr uint64_t kRounds = 40;
  constexpr uint64_t kPerRound = 50;
  uint64_t round = 0;
  uint64_t sent = 0;
  // Each round sends a burst both ways; every third round then drops the connection in the
  // same iteration, from alternating sides, so the burst is still in the output buffer and is
  // lost with the connection: only the resend buffer can bring it back.
  EventLoop::TimerId driver = loop_.schedule_every(2'000'000, [&] {
    if (round == kRounds) return;
    ++round;
    for (uint64_t i = 0; i < kPerRound; ++i) {
      ++sent;
      a_.channel->send(numbered(sent));
      b_.channel->send(numbered(sent));
    }
    if (round % 3 == 0) {
      PeerChannel& side = (round / 3) % 2 == 0 ? *a_.channel : *b_.channel;
      side.drop_connection("test: forced reconnect");
    }
  });
  const uint64_t total = kRounds * kPerRound;
  ASSERT_TRUE(run_until(
      loop_, [&] { return b_.delivered.size() >= total && a_.delivered.size() >= total; }))
      << "a got " << a_.delivered.size() << ", b got " << b_.delivered.size();
  loop_.cancel(driver);
  EXPECT_TRUE(is_one_to(b_.delivered, total));
  EXPECT_TRUE(is_one_to(a_.delivered, total));
  EXPECT_GT(a_.channel->stats().connections, 5u);
  EXPECT_GT(a_.channel->stats().frames_resent + b_.channel->stats().frames_resent, 0u);
  EXPECT_EQ(a_.channel->stats().resets, 0u);
}

TEST_F(PeerChannelTest, PeerRestartStartsTheChannelOver) {
  ASSERT_TRUE(run_until(loop_, [&] { return b_.channel->established(); }));
  for (uint64_t n = 1; n <= 20; ++n)
    a_.channel->send(numbered(n));
  ASSERT_TRUE(run_until(loop_, [&] { return b_.delivered.size() == 20; }));

  // Replica 1 "restarts": its channel (and connection) is gone, a new incarnation comes up.
  b_.channel.reset();
  ASSERT_TRUE(run_until(loop_, [&] { return !a_.channel->established(); }));
  for (uint64_t n = 21; n <= 30; ++n)
    a_.channel->send(numbered(n));  // meant for the old one
  make_b(0xB2);
  ASSERT_TRUE(
      run_until(loop_, [&] { return a_.channel->established() && b_.channel->established(); }));
  EXPECT_EQ(a_.channel->stats().resets, 1u);
  EXPECT_EQ(a_.channel->peer_incarnation(), 0xB2u);
  // Frames queued for the old process were dropped with it; the new one sees a fresh stream.
  for (uint64_t n = 1; n <= 10; ++n) {
    a_.channel->send(numbered(n));
    b_.channel->send(numbered(n));
  }
  ASSERT_TRUE(
      run_until(loop_, [&] { return b_.delivered.size() >= 10 && a_.delivered.size() >= 10; }));
  EXPECT_TRUE(is_one_to(b_.delivered, 10));
  EXPECT_TRUE(is_one_to(a_.delivered, 10));
}

TEST_F(PeerChannelTest, DuplicatesAreDroppedAndGapsCloseTheConnection) {
  // A hand-written peer: replica 0's Hello, then frames with chosen sequence numbers.
  a_.channel.reset();  // the real replica 0 must not interfere
  struct Raw final : ConnectionHandler {
    void on_message(Connection&, WireMessage&&) override {}
    void on_closed(Connection&, const std::string& why) override { reason = why; }
    std::string reason;
  } raw;
  auto connection = Connection::dial(loop_, Address{"127.0.0.1", acceptor_->port()}, &raw);
  connection->send(Hello{PeerRole::kReplica, 0, 0xA9, 1});
  connection->send(PeerData{1, 0, numbered(1)});
  connection->send(PeerData{1, 0, numbered(1)});  // duplicate
  connection->send(PeerData{2, 0, numbered(2)});
  ASSERT_TRUE(run_until(loop_, [&] { return b_.delivered.size() == 2; }));
  EXPECT_TRUE(is_one_to(b_.delivered, 2));
  EXPECT_EQ(b_.channel->stats().duplicates_dropped, 1u);

  connection->send(PeerData{5, 0, numbered(5)});  // frames 3 and 4 are missing
  ASSERT_TRUE(run_until(loop_, [&] { return !raw.reason.empty(); }));
  EXPECT_EQ(b_.delivered.size(), 2u);
  EXPECT_FALSE(b_.channel->established());
}

TEST(PeerChannelLimitTest, OverflowingTheResendBufferFailsTheChannel) {
  EventLoop loop;
  PeerChannelOptions options;
  options.self = ReplicaId{0};
  options.peer = ReplicaId{1};
  options.incarnation = 1;
  options.resend_bytes_max = 16 * 1024;
  // Port 1 on loopback: nothing listens, so nothing is ever acknowledged.
  options.dial_address = Address{"127.0.0.1", 1};
  PeerChannel channel(loop, options, [](ReplicaId, ReplicaMessage&&) {});
  channel.start();
  for (uint64_t n = 1; n <= 15; ++n)
    channel.send(numbered(n, 1000));
  EXPECT_FALSE(channel.failed());
  EXPECT_EQ(channel.unacknowledged_frames(), 15u);
  for (uint64_t n = 16; n <= 20; ++n)
    channel.send(numbered(n, 1000));
  EXPECT_TRUE(channel.failed());
  // A failed channel holds nothing and takes nothing more.
  EXPECT_EQ(channel.unacknowledged_frames(), 0u);
  channel.send(numbered(21, 1000));
  EXPECT_EQ(channel.unacknowledged_bytes(), 0u);
}

}  // namespace
}  // namespace lockstep::net
