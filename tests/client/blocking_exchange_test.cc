// The blocking one-shot exchange behind `lockstep status` and `lockstep admin`, against a fake
// replica on loopback that answers as the test scripts it: the reply is found among other frames,
// and every way of not getting one ends in an error naming the address and the reason.
#include "client/blocking_exchange.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "client/status.h"
#include "core/codec.h"

namespace lockstep {
namespace {

// A listening socket on 127.0.0.1 whose one connection is handled by `script` on a thread.
class FakeReplica {
 public:
  explicit FakeReplica(std::function<void(int connection)> script) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), length), 0);
    EXPECT_EQ(::listen(listener_, 4), 0);
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      const int connection = ::accept(listener_, nullptr, nullptr);
      if (connection < 0) return;
      script(connection);
      ::close(connection);
    });
  }
  ~FakeReplica() {
    ::shutdown(listener_, SHUT_RDWR);  // wakes an accept that never got a connection
    thread_.join();
    ::close(listener_);
  }
  FakeReplica(const FakeReplica&) = delete;
  FakeReplica& operator=(const FakeReplica&) = delete;

  net::Address address() const { return {"127.0.0.1", port_}; }

 private:
  int listener_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// Reads frames from `connection` until one of type T arrives (the client's Hello comes first).
template <typename T>
T read_frame(int connection) {
  Bytes in;
  uint8_t buffer[4096];
  for (;;) {
    auto size = frame_size(in);
    if (const size_t* bytes = std::get_if<size_t>(&size); bytes != nullptr && *bytes != 0) {
      auto decoded = decode_frame(std::span<const uint8_t>(in.data(), *bytes));
      in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(*bytes));
      if (auto* message = std::get_if<WireMessage>(&decoded)) {
        if (auto* wanted = std::get_if<T>(message)) return *wanted;
      }
      continue;
    }
    const ssize_t n = ::recv(connection, buffer, sizeof buffer, 0);
    if (n <= 0) return T{};
    in.insert(in.end(), buffer, buffer + n);
  }
}

void send_frames(int connection, const std::vector<WireMessage>& messages) {
  Bytes out;
  for (const WireMessage& message : messages)
    encode_frame(message, out);
  ASSERT_EQ(::send(connection, out.data(), out.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(out.size()));
}

TEST(BlockingExchange, FindsTheReplyWithItsNonceAmongOtherFrames) {
  FakeReplica replica([](int connection) {
    const StatusRequest request = read_frame<StatusRequest>(connection);
    StatusReply stale{request.nonce + 1, ReplicaId{1}, false, ViewNumber{0}, {}, 5, 55};
    StatusReply answer{request.nonce, ReplicaId{1}, false, ViewNumber{3}, {ReplicaId{1}}, 9, 99};
    send_frames(connection, {Hello{PeerRole::kReplica, 1, 7, 0}, stale, answer});
  });
  std::string error;
  const std::optional<StatusReply> reply = blocking_exchange_for<StatusReply>(
      replica.address(), 1234, StatusRequest{1234}, 2000, "status reply", error);
  ASSERT_TRUE(reply.has_value()) << error;
  EXPECT_EQ(reply->nonce, 1234u);
  EXPECT_EQ(reply->view, ViewNumber{3});
  EXPECT_EQ(reply->digest, 99u);
}

TEST(BlockingExchange, QueryStatusSaysWhenTheReplicaClosesWithoutAnswering) {
  FakeReplica replica([](int connection) { read_frame<StatusRequest>(connection); });
  std::string error;
  EXPECT_FALSE(query_status(replica.address(), 2000, error).has_value());
  EXPECT_EQ(error, "127.0.0.1:" + std::to_string(replica.address().port) +
                       ": connection closed before the status reply");
}

TEST(BlockingExchange, TimesOutWhenNoReplyComes) {
  FakeReplica replica([](int connection) {
    read_frame<AdminRequest>(connection);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  });
  std::string error;
  const auto reply = blocking_exchange_for<AdminReply>(
      replica.address(), 5, AdminRequest{5, MembershipChange::kAdd, ReplicaId{2}}, 100, "answer",
      error);
  EXPECT_FALSE(reply.has_value());
  EXPECT_NE(error.find(": no answer within 100 ms"), std::string::npos) << error;
}

TEST(BlockingExchange, RejectsABadFrame) {
  FakeReplica replica([](int connection) {
    read_frame<StatusRequest>(connection);
    const uint8_t garbage[16] = {8, 0, 0, 0, 99 /* no such version */};
    ::send(connection, garbage, sizeof garbage, MSG_NOSIGNAL);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  });
  std::string error;
  EXPECT_FALSE(query_status(replica.address(), 2000, error).has_value());
  EXPECT_NE(error.find(": bad frame: "), std::string::npos) << error;
}

TEST(BlockingExchange, SaysWhenNothingListens) {
  uint16_t port = 0;
  {
    FakeReplica gone([](int) {});
    port = gone.address().port;
    // Connect once so that its thread ends; then the port is closed.
    std::string ignored;
    query_status(gone.address(), 500, ignored);
  }
  std::string error;
  EXPECT_FALSE(query_status(net::Address{"127.0.0.1", port}, 1000, error).has_value());
  EXPECT_NE(error.find(": connect: "), std::string::npos) << error;
}

}  // namespace
}  // namespace lockstep
