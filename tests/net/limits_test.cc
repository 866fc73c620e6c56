// Resource limits of the network layer: a connection whose peer does not read is closed at its
// output limit, the acceptor caps open connections and gives clients a small output limit, and a
// peer channel's connections can always carry its whole resend buffer.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "net/acceptor.h"
#include "net/connection.h"
#include "net/peer_channel.h"

namespace lockstep::net {
namespace {

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

class Recorder final : public ConnectionHandler {
 public:
  void on_message(Connection&, WireMessage&& message) override {
    messages.push_back(std::move(message));
  }
  void on_closed(Connection&, const std::string& why) override {
    closed = true;
    reason = why;
  }
  std::vector<WireMessage> messages;
  bool closed = false;
  std::string reason;
};

ClientReply big_reply(uint64_t sequence, size_t bytes) {
  return ClientReply{ClientId{1}, Sequence{sequence}, ReplicaId{0}, ReplyStatus::kOk,
                     Bytes(bytes, 0x5a)};
}

TEST(ConnectionLimitTest, APeerThatDoesNotReadIsClosedAtTheOutputLimit) {
  EventLoop loop;
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  Recorder recorder;
  Connection connection(loop, fds[0], "a slow client", &recorder);
  connection.set_output_bytes_max(1024 * 1024);
  EXPECT_EQ(connection.output_bytes_max(), 1024u * 1024);
  // fds[1] is never read: the kernel buffer fills, then ours, across loop iterations.
  uint64_t sequence = 0;
  EventLoop::TimerId sender = loop.schedule_every(1'000'000, [&] {
    for (int i = 0; i < 4; ++i)
      connection.send(big_reply(++sequence, 64 * 1024));
  });
  ASSERT_TRUE(run_until(loop, [&] { return recorder.closed; }));
  loop.cancel(sender);
  EXPECT_NE(recorder.reason.find("not reading"), std::string::npos) << recorder.reason;
  EXPECT_EQ(connection.output_bytes(), 0u) << "the buffer is freed at close";
  EXPECT_FALSE(connection.is_open());
  ::close(fds[1]);
}

TEST(ConnectionLimitTest, AReadingPeerIsNeverClosedByTheLimit) {
  EventLoop loop;
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  Recorder writer_side;
  Recorder reader_side;
  Connection writer(loop, fds[0], "writer", &writer_side);
  Connection reader(loop, fds[1], "reader", &reader_side);
  writer.set_output_bytes_max(512 * 1024);
  // 8 MiB in total, 256 KiB per iteration: well within the limit as long as the reader keeps up.
  uint64_t sequence = 0;
  EventLoop::TimerId sender = loop.schedule_every(1'000'000, [&] {
    if (sequence < 128 && writer.output_bytes() < 256 * 1024) {
      for (int i = 0; i < 4; ++i)
        writer.send(big_reply(++sequence, 64 * 1024));
    }
  });
  ASSERT_TRUE(run_until(loop, [&] { return reader_side.messages.size() == 128; }));
  loop.cancel(sender);
  EXPECT_FALSE(writer_side.closed);
}

// A client that connects to `port` and says Hello as a client.
struct TestClient {
  TestClient(EventLoop& loop, uint16_t port, uint64_t id) {
    connection = Connection::dial(loop, Address{"127.0.0.1", port}, &recorder);
    connection->send(Hello{PeerRole::kClient, id, id, 0});
  }
  Recorder recorder;
  std::unique_ptr<Connection> connection;
};

TEST(AcceptorLimitTest, ConnectionsBeyondTheLimitAreClosedAtOnceAndSlotsComeBack) {
  EventLoop loop;
  AcceptorLimits limits;
  limits.connections_max = 2;
  std::vector<std::unique_ptr<Connection>> served;
  Recorder server_side;
  Acceptor acceptor(
      loop, Address{"127.0.0.1", 0},
      [&](std::unique_ptr<Connection> connection, const Hello&) {
        connection->set_handler(&server_side);
        served.push_back(std::move(connection));
      },
      ConnectionLimits{}, 5'000'000'000, limits);

  TestClient first(loop, acceptor.port(), 1);
  TestClient second(loop, acceptor.port(), 2);
  ASSERT_TRUE(run_until(loop, [&] { return served.size() == 2; }));
  EXPECT_EQ(acceptor.open_connections(), 2u);

  TestClient third(loop, acceptor.port(), 3);
  ASSERT_TRUE(run_until(loop, [&] { return third.recorder.closed; }));
  EXPECT_EQ(served.size(), 2u);
  EXPECT_EQ(acceptor.rejected_connections(), 1u);
  EXPECT_FALSE(first.recorder.closed);

  // A served connection closing gives its slot back, even though the acceptor no longer owns it.
  served[0]->close("done");
  EXPECT_EQ(acceptor.open_connections(), 1u);
  TestClient fourth(loop, acceptor.port(), 4);
  ASSERT_TRUE(run_until(loop, [&] { return served.size() == 3; }));
  EXPECT_FALSE(fourth.recorder.closed);
  EXPECT_EQ(acceptor.open_connections(), 2u);
  served.clear();  // destroyed without close(): the slots are released too
  EXPECT_EQ(acceptor.open_connections(), 0u);
}

TEST(AcceptorLimitTest, ClientConnectionsGetTheClientOutputLimit) {
  EventLoop loop;
  AcceptorLimits limits;
  limits.client_output_bytes_max = 123'456;
  ConnectionLimits base;
  base.write_buffer_bytes_max = 7'654'321;
  std::vector<std::unique_ptr<Connection>> served;
  std::vector<PeerRole> roles;
  Acceptor acceptor(
      loop, Address{"127.0.0.1", 0},
      [&](std::unique_ptr<Connection> connection, const Hello& hello) {
        roles.push_back(hello.role);
        served.push_back(std::move(connection));
      },
      base, 5'000'000'000, limits);
  TestClient client(loop, acceptor.port(), 1);
  Recorder replica_side;
  auto replica = Connection::dial(loop, Address{"127.0.0.1", acceptor.port()}, &replica_side);
  replica->send(Hello{PeerRole::kReplica, 0, 9, 1});
  ASSERT_TRUE(run_until(loop, [&] { return served.size() == 2; }));
  for (size_t i = 0; i < served.size(); ++i) {
    EXPECT_EQ(served[i]->output_bytes_max(), roles[i] == PeerRole::kClient ? 123'456u : 7'654'321u);
  }
}

ReplicaMessage numbered(uint64_t n, size_t command_bytes) {
  return ForwardRequest{ReplicaId{0}, ClientRequest{ClientId{7},
                                                    Sequence{n},
                                                    Sequence{0},
                                                    Bytes(command_bytes, static_cast<uint8_t>(n)),
                                                    {}}};
}

TEST(PeerChannelOutputLimitTest, ABacklogLargerThanTheConnectionLimitStillGoesThrough) {
  // The connection limit is far below the backlog the channel resends when it connects: the
  // channel raises its connections' limit to what its resend buffer may hold.
  EventLoop loop;
  ConnectionLimits small_connections;
  small_connections.write_buffer_bytes_max = 64 * 1024;
  std::unique_ptr<PeerChannel> accepting;
  std::vector<uint64_t> delivered;
  Acceptor acceptor(
      loop, Address{"127.0.0.1", 0},
      [&](std::unique_ptr<Connection> connection, const Hello& hello) {
        accepting->adopt(std::move(connection), hello);
      },
      small_connections);

  PeerChannelOptions b;
  b.self = ReplicaId{1};
  b.peer = ReplicaId{0};
  b.incarnation = 0xB;
  b.connection_limits = small_connections;
  accepting = std::make_unique<PeerChannel>(loop, b, [&](ReplicaId, ReplicaMessage&& message) {
    delivered.push_back(std::get<ForwardRequest>(message).request.sequence.value);
  });
  accepting->start();

  PeerChannelOptions a;
  a.self = ReplicaId{0};
  a.peer = ReplicaId{1};
  a.incarnation = 0xA;
  a.dial_address = Address{"127.0.0.1", acceptor.port()};
  a.connection_limits = small_connections;
  a.resend_bytes_max = 8 * 1024 * 1024;
  PeerChannel dialing(loop, a, [](ReplicaId, ReplicaMessage&&) {});
  // 2 MiB queued before the first connection: all of it is resent in one go.
  for (uint64_t n = 1; n <= 256; ++n)
    dialing.send(numbered(n, 8 * 1024));
  dialing.start();
  ASSERT_TRUE(run_until(loop, [&] { return delivered.size() == 256; }));
  for (uint64_t n = 1; n <= 256; ++n)
    EXPECT_EQ(delivered[n - 1], n);
  EXPECT_EQ(dialing.stats().connections, 1u) << "no connection was closed by the limit";
  EXPECT_FALSE(dialing.failed());
}

}  // namespace
}  // namespace lockstep::net
