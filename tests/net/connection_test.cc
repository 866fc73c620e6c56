// Framing and buffering of net::Connection, over socketpairs (no TCP needed) and, for dialing
// and listening, over loopback TCP.
#include "net/connection.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "core/codec.h"

namespace lockstep::net {
namespace {

class Recorder final : public ConnectionHandler {
 public:
  void on_connected(Connection&) override { ++connected; }
  void on_message(Connection&, WireMessage&& message) override {
    messages.push_back(std::move(message));
  }
  void on_closed(Connection&, const std::string& why) override {
    closed = true;
    reason = why;
  }
  int connected = 0;
  std::vector<WireMessage> messages;
  bool closed = false;
  std::string reason;
};

ClientRequest request(uint64_t sequence, size_t command_bytes = 8) {
  return ClientRequest{ClientId{42},
                       Sequence{sequence},
                       Sequence{0},
                       Bytes(command_bytes, static_cast<uint8_t>(sequence)),
                       {}};
}

Bytes frame_of(const WireMessage& message) {
  Bytes out;
  encode_frame(message, out);
  return out;
}

void write_all(int fd, std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    ASSERT_GT(n, 0);
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
}

// Runs loop iterations until `done` or a timeout, so that a failing test fails instead of hanging.
template <typename Predicate>
bool run_until(EventLoop& loop, Predicate done, uint64_t timeout_ns = 5'000'000'000) {
  const uint64_t deadline = monotonic_now_ns() + timeout_ns;
  EventLoop::TimerId tick = loop.schedule_every(1'000'000, [&] {
    if (done() || monotonic_now_ns() > deadline) loop.stop();
  });
  loop.run();
  loop.cancel(tick);
  return done();
}

struct SocketPair {
  SocketPair() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
    ours = fds[0];
    theirs = fds[1];
  }
  ~SocketPair() {
    if (theirs >= 0) ::close(theirs);
  }
  int ours = -1;    // given to a Connection, which closes it
  int theirs = -1;  // the test writes raw bytes here
};

TEST(ConnectionTest, ManyFramesInOneReadAreAllDeliveredInOrder) {
  EventLoop loop;
  SocketPair pair;
  Recorder recorder;
  Connection connection(loop, pair.ours, "test peer", &recorder);
  Bytes stream;
  for (uint64_t s = 1; s <= 200; ++s)
    encode_frame(request(s), stream);
  write_all(pair.theirs, stream);
  ASSERT_TRUE(run_until(loop, [&] { return recorder.messages.size() == 200; }));
  for (uint64_t s = 1; s <= 200; ++s) {
    EXPECT_EQ(std::get<ClientRequest>(recorder.messages[s - 1]), request(s));
  }
  EXPECT_FALSE(recorder.closed);
}

TEST(ConnectionTest, PartialFramesWaitForTheirLastByte) {
  EventLoop loop;
  SocketPair pair;
  Recorder recorder;
  Connection connection(loop, pair.ours, "test peer", &recorder);
  Bytes stream = frame_of(request(1));
  const size_t first_bytes = stream.size();
  const Bytes second = frame_of(request(2));
  stream.insert(stream.end(), second.begin(), second.end());
  // Byte by byte, with loop iterations in between: nothing is delivered early or twice.
  for (size_t i = 0; i < stream.size(); ++i) {
    write_all(pair.theirs, std::span(stream).subspan(i, 1));
    loop.post([&] { loop.stop(); });
    loop.run();
    const size_t written = i + 1;
    const size_t expected = written == stream.size() ? 2 : (written >= first_bytes ? 1 : 0);
    ASSERT_EQ(recorder.messages.size(), expected) << "after byte " << i;
  }
  EXPECT_EQ(std::get<ClientRequest>(recorder.messages[1]), request(2));
}

TEST(ConnectionTest, LargeFrameSpanningManyReads) {
  EventLoop loop;
  SocketPair pair;
  Recorder recorder;
  ConnectionLimits limits;
  limits.read_chunk_bytes = 4096;  // forces the input buffer to grow for the frame
  Connection connection(loop, pair.ours, "test peer", &recorder, limits);
  const Bytes frame = frame_of(request(9, 3 * 1024 * 1024));
  size_t written = 0;
  ASSERT_TRUE(run_until(loop, [&] {
    // The socketpair buffer is smaller than the frame: feed it as the reader drains it.
    while (written < frame.size()) {
      ssize_t n = ::write(pair.theirs, frame.data() + written, frame.size() - written);
      if (n <= 0) break;
      written += static_cast<size_t>(n);
    }
    return recorder.messages.size() == 1;
  }));
  EXPECT_EQ(std::get<ClientRequest>(recorder.messages[0]), request(9, 3 * 1024 * 1024));
}

TEST(ConnectionTest, CorruptedFrameClosesOnlyThatConnection) {
  EventLoop loop;
  SocketPair bad_pair;
  SocketPair good_pair;
  Recorder bad;
  Recorder good;
  auto bad_connection = std::make_unique<Connection>(loop, bad_pair.ours, "bad peer", &bad);
  Connection good_connection(loop, good_pair.ours, "good peer", &good);

  Bytes corrupted = frame_of(request(1));
  corrupted.back() ^= 0xff;  // payload byte: the checksum no longer matches
  write_all(bad_pair.theirs, corrupted);
  write_all(good_pair.theirs, frame_of(request(1)));
  ASSERT_TRUE(run_until(loop, [&] { return bad.closed && good.messages.size() == 1; }));
  EXPECT_TRUE(bad.messages.empty());
  EXPECT_NE(bad.reason.find("bad checksum"), std::string::npos) << bad.reason;
  EXPECT_FALSE(bad_connection->is_open());

  // The good connection keeps working after the bad one is gone.
  write_all(good_pair.theirs, frame_of(request(2)));
  ASSERT_TRUE(run_until(loop, [&] { return good.messages.size() == 2; }));
  EXPECT_FALSE(good.closed);
  // And the peer of the bad one sees its end closed.
  char byte;
  EXPECT_EQ(::read(bad_pair.theirs, &byte, 1), 0);
}

TEST(ConnectionTest, OversizedAndUnknownFramesAreRejectedFromTheHeader) {
  struct Case {
    std::string name;
    Bytes bytes;
    std::string reason;
  };
  Bytes oversized = frame_of(request(1));
  oversized[0] = 0xff;
  oversized[1] = 0xff;
  oversized[2] = 0xff;
  oversized[3] = 0x7f;  // ~2 GiB length: rejected before waiting for the bytes
  Bytes unknown_type = frame_of(request(1));
  unknown_type[5] = 0x77;
  Bytes bad_version = frame_of(request(1));
  bad_version[4] = 99;
  const std::vector<Case> cases = {{"oversized", oversized, "too large"},
                                   {"unknown type", unknown_type, "unknown frame type"},
                                   {"bad version", bad_version, "version"}};
  for (const Case& c : cases) {
    EventLoop loop;
    SocketPair pair;
    Recorder recorder;
    Connection connection(loop, pair.ours, "test peer", &recorder);
    // Only the header: the connection must not wait for the rest of a forged frame.
    write_all(pair.theirs, std::span(c.bytes).first(kFrameHeaderBytes));
    ASSERT_TRUE(run_until(loop, [&] { return recorder.closed; })) << c.name;
    EXPECT_NE(recorder.reason.find(c.reason), std::string::npos)
        << c.name << ": " << recorder.reason;
    EXPECT_TRUE(recorder.messages.empty()) << c.name;
  }
}

TEST(ConnectionTest, SendsAreBufferedUntilTheEndOfTheIteration) {
  EventLoop loop;
  SocketPair pair;
  Recorder recorder;
  Connection connection(loop, pair.ours, "test peer", &recorder);
  size_t buffered_before_flush = 0;
  ssize_t readable_before_flush = -2;
  loop.post([&] {
    for (uint64_t s = 1; s <= 100; ++s)
      connection.send(request(s));
    buffered_before_flush = connection.output_bytes();
    char byte;
    readable_before_flush = ::recv(pair.theirs, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    loop.stop();
  });
  loop.run();
  EXPECT_GT(buffered_before_flush, 100 * kFrameHeaderBytes);
  EXPECT_EQ(readable_before_flush, -1);  // nothing written while the iteration was running
  EXPECT_EQ(connection.output_bytes(), 0u);

  // Everything arrived, in one piece, in order.
  Recorder reader_log;
  Connection reader(loop, pair.theirs, "reader", &reader_log);
  pair.theirs = -1;  // owned by `reader` now
  ASSERT_TRUE(run_until(loop, [&] { return reader_log.messages.size() == 100; }));
  for (uint64_t s = 1; s <= 100; ++s) {
    EXPECT_EQ(std::get<ClientRequest>(reader_log.messages[s - 1]), request(s));
  }
}

TEST(ConnectionTest, PeerClosingIsReported) {
  EventLoop loop;
  SocketPair pair;
  Recorder recorder;
  Connection connection(loop, pair.ours, "test peer", &recorder);
  ::close(pair.theirs);
  pair.theirs = -1;
  ASSERT_TRUE(run_until(loop, [&] { return recorder.closed; }));
  EXPECT_EQ(recorder.reason, "connection closed by peer");
}

TEST(ConnectionTest, DialAndListenOverLoopback) {
  EventLoop loop;
  Recorder server_log;
  std::unique_ptr<Connection> accepted;
  Listener listener(loop, Address{"127.0.0.1", 0}, [&](int fd, std::string peer) {
    accepted = std::make_unique<Connection>(loop, fd, std::move(peer), &server_log);
  });
  ASSERT_NE(listener.port(), 0);
  Recorder client_log;
  auto client = Connection::dial(loop, Address{"127.0.0.1", listener.port()}, &client_log);
  // Queued while connecting; written once the handshake completes.
  client->send(Hello{PeerRole::kClient, 5, 6, 0});
  ASSERT_TRUE(run_until(loop, [&] { return server_log.messages.size() == 1; }));
  EXPECT_EQ(client_log.connected, 1);
  EXPECT_EQ(std::get<Hello>(server_log.messages[0]), (Hello{PeerRole::kClient, 5, 6, 0}));
  accepted->send(Hello{PeerRole::kReplica, 1, 2, 3});
  ASSERT_TRUE(run_until(loop, [&] { return client_log.messages.size() == 1; }));
  EXPECT_EQ(std::get<Hello>(client_log.messages[0]), (Hello{PeerRole::kReplica, 1, 2, 3}));
}

TEST(ConnectionTest, DialingAClosedPortReportsTheFailure) {
  EventLoop loop;
  uint16_t port = 0;
  {
    Listener probe(loop, Address{"127.0.0.1", 0}, [](int fd, std::string) { ::close(fd); });
    port = probe.port();
  }  // closed again: nothing listens there now
  Recorder recorder;
  auto connection = Connection::dial(loop, Address{"127.0.0.1", port}, &recorder);
  ASSERT_TRUE(run_until(loop, [&] { return recorder.closed; }));
  EXPECT_NE(recorder.reason.find("refused"), std::string::npos) << recorder.reason;
  EXPECT_EQ(recorder.connected, 0);
}

TEST(ConnectionTest, UnresolvableHostFailsAfterDialReturns) {
  EventLoop loop;
  Recorder recorder;
  auto connection = Connection::dial(loop, Address{"no-such-host.invalid", 1}, &recorder);
  EXPECT_FALSE(recorder.closed);  // never from inside dial()
  ASSERT_TRUE(run_until(loop, [&] { return recorder.closed; }));
  EXPECT_NE(recorder.reason.find("cannot resolve"), std::string::npos) << recorder.reason;
}

TEST(AddressTest, ParsesAndFormatsHostPort) {
  EXPECT_EQ(parse_address("127.0.0.1:7000"), (Address{"127.0.0.1", 7000}));
  EXPECT_EQ(parse_address("localhost:1"), (Address{"localhost", 1}));
  EXPECT_EQ(parse_address("[::1]:65535"), (Address{"::1", 65535}));
  EXPECT_EQ(format_address(Address{"::1", 80}), "[::1]:80");
  EXPECT_EQ(format_address(Address{"10.0.0.1", 80}), "10.0.0.1:80");
  for (const char* bad : {"abc", "host:", ":80", "host:0", "host:65536", "host:80x", "::1:80",
                          "[::1]80", "a b:80", ""}) {
    EXPECT_FALSE(parse_address(bad)) << bad;
  }
}

}  // namespace
}  // namespace lockstep::net
