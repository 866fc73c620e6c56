// The networked Client in byzantine mode against scripted replicas on loopback TCP: signed
// requests out, SignedReplies in, t+1 voting, certificates and dissent in the CallResult.
#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/certificate.h"
#include "client/client.h"
#include "crypto/signing.h"
#include "net/connection.h"
#include "net/event_loop.h"

namespace lockstep {
namespace {

constexpr uint32_t kReplicas = 3;
constexpr uint32_t kPrincipal = 5;

crypto::KeyPair key_pair(uint8_t seed_byte) {
  std::array<uint8_t, 32> seed{};
  seed[0] = seed_byte;
  return crypto::derive_key_pair(crypto::Scheme::kEd25519, seed);
}

enum class Behaviour {
  kHonest,       // result "out:<command>", signed
  kLiar,         // result "lie", signed with its own key
  kForger,       // honest result, signed with a key that is not its own
  kUnsigned,     // honest result in a plain ClientReply frame
  kOtherSigner,  // honest result in a batch that claims to be another replica's
};

// A scripted replica: answers every request at once (or after `delay_ns`) with one batch.
class FakeReplica final : public net::ConnectionHandler {
 public:
  FakeReplica(net::EventLoop& loop, uint32_t id, Behaviour behaviour, const crypto::Verifier& keys,
              uint64_t delay_ns = 0)
      : loop_(loop),
        id_(id),
        behaviour_(behaviour),
        keys_(keys),
        delay_ns_(delay_ns),
        signer_(crypto::make_signer(crypto::Scheme::kEd25519, key_pair(uint8_t(1 + id)))),
        forger_(crypto::make_signer(crypto::Scheme::kEd25519, key_pair(99))),
        listener_(loop, net::Address{"127.0.0.1", 0}, [this](int fd, std::string peer) {
          connections_.push_back(std::make_unique<net::Connection>(loop_, fd, peer, this));
          connections_.back()->send(Hello{PeerRole::kReplica, id_, 1, 0});
        }) {}

  net::Address address() const { return net::Address{"127.0.0.1", listener_.port()}; }

  void on_message(net::Connection& connection, WireMessage&& message) override {
    auto* request = std::get_if<ClientRequest>(&message);
    if (request == nullptr) return;
    ++requests;
    if (!crypto::verify_request(keys_, *request)) ++badly_signed_requests;
    ClientReply reply{
        request->client, request->sequence, ReplicaId{id_}, ReplyStatus::kOk,
        to_bytes(behaviour_ == Behaviour::kLiar ? std::string("lie")
                                                : "out:" + to_string(request->command))};
    WireMessage answer = make_answer(std::move(reply));
    if (delay_ns_ == 0) {
      connection.send(answer);
      return;
    }
    net::Connection* target = &connection;
    loop_.schedule(delay_ns_, [this, target, answer] {
      for (auto& open : connections_) {
        if (open.get() == target && open->is_open()) open->send(answer);
      }
    });
  }
  void on_closed(net::Connection&, const std::string&) override {}

  int requests = 0;
  int badly_signed_requests = 0;

 private:
  WireMessage make_answer(ClientReply reply) const {
    switch (behaviour_) {
      case Behaviour::kUnsigned:
        return reply;
      case Behaviour::kForger:
        return crypto::sign_replies(*forger_, ReplicaId{id_}, {reply});
      case Behaviour::kOtherSigner: {
        // Signs honestly as itself but claims the batch is replica (id+1)'s: a relabelled frame.
        SignedReplies batch = crypto::sign_replies(*signer_, ReplicaId{id_}, {reply});
        batch.replica = ReplicaId{(id_ + 1) % kReplicas};
        return batch;
      }
      case Behaviour::kHonest:
      case Behaviour::kLiar:
        break;
    }
    // Another session's reply in front of ours, so the index in the proof matters.
    ClientReply other{client_id_of(kPrincipal, 0), Sequence{1}, ReplicaId{id_}, ReplyStatus::kOk,
                      to_bytes("other")};
    return crypto::sign_replies(*signer_, ReplicaId{id_}, {other, reply});
  }

  net::EventLoop& loop_;
  uint32_t id_;
  Behaviour behaviour_;
  const crypto::Verifier& keys_;
  uint64_t delay_ns_;
  std::unique_ptr<crypto::Signer> signer_;
  std::unique_ptr<crypto::Signer> forger_;
  std::vector<std::unique_ptr<net::Connection>> connections_;
  net::Listener listener_;
};

class ByzantineClientTest : public ::testing::Test {
 protected:
  ByzantineClientTest() {
    crypto::KeyDirectory directory;
    for (uint32_t r = 0; r < kReplicas; ++r)
      directory.replicas.push_back(key_pair(uint8_t(1 + r)).public_key);
    client_verifier = crypto::make_verifier(crypto::Scheme::kEd25519, directory);
    const crypto::KeyPair client_keys = key_pair(50);
    directory.clients[kPrincipal] = client_keys.public_key;
    replica_verifier = crypto::make_verifier(crypto::Scheme::kEd25519, directory);
    client_signer = crypto::make_signer(crypto::Scheme::kEd25519, client_keys);
  }

  // Starts the replicas (replica i behaves as behaviours[i]; delays[i] postpones its answers).
  void start(std::vector<Behaviour> behaviours, std::vector<uint64_t> delays = {0, 0, 0}) {
    NetworkClientOptions options;
    for (uint32_t r = 0; r < kReplicas; ++r) {
      replicas.push_back(
          std::make_unique<FakeReplica>(loop, r, behaviours[r], *replica_verifier, delays[r]));
      options.replicas.push_back(replicas.back()->address());
    }
    options.session.reply_quorum = 2;
    options.session.retry_interval_ns = 100'000'000;
    options.session.deadline_ns = 600'000'000;
    options.verifier = client_verifier.get();
    options.signer = client_signer.get();
    options.principal = kPrincipal;
    client = std::make_unique<Client>(loop, options);
  }

  // Submits `command` and runs the loop until its callback ran (the session deadline bounds it).
  CallResult call(const std::string& command) {
    std::optional<CallResult> outcome;
    session = client->open_session();
    EXPECT_TRUE(client->submit(session, to_bytes(command), [&](CallResult result) {
      outcome = std::move(result);
      loop.stop();
    }));
    net::EventLoop::TimerId guard = loop.schedule(5'000'000'000, [&] { loop.stop(); });
    loop.run();
    loop.cancel(guard);
    EXPECT_TRUE(outcome.has_value()) << "the deadline did not complete the call";
    return outcome.value_or(CallResult{});
  }

  net::EventLoop loop;
  std::unique_ptr<crypto::Verifier> client_verifier;
  std::unique_ptr<crypto::Verifier> replica_verifier;
  std::unique_ptr<crypto::Signer> client_signer;
  std::vector<std::unique_ptr<FakeReplica>> replicas;
  std::unique_ptr<Client> client;
  ClientId session{};
};

TEST_F(ByzantineClientTest, TwoHonestOutvoteALiarAndTheCertificateVerifies) {
  // The liar and one honest replica answer at once; the deciding honest answer comes later, so
  // the liar's reply is always in before completion and shows up as dissent.
  start({Behaviour::kHonest, Behaviour::kLiar, Behaviour::kHonest}, {150'000'000, 0, 0});
  CallResult result = call("x");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(to_string(result.result), "out:x");
  EXPECT_EQ(principal_of(session), kPrincipal);
  ASSERT_TRUE(result.certificate.has_value());
  EXPECT_EQ(result.certificate->reply.client, session);
  EXPECT_EQ(result.certificate->proofs.size(), 2u);
  std::string why;
  EXPECT_TRUE(verify_certificate(*result.certificate, *client_verifier, 2, &why)) << why;
  ASSERT_EQ(result.dissent.size(), 1u);
  EXPECT_EQ(result.dissent[0].replica, ReplicaId{1});
  EXPECT_EQ(to_string(result.dissent[0].result), "lie");
  for (const auto& replica : replicas) {
    EXPECT_GE(replica->requests, 1);
    EXPECT_EQ(replica->badly_signed_requests, 0) << "every request is signed by the principal";
  }
  EXPECT_EQ(client->bad_reply_batches(), 0u);
}

TEST_F(ByzantineClientTest, ForgedBatchesAreDroppedAndCounted) {
  start({Behaviour::kHonest, Behaviour::kForger, Behaviour::kHonest}, {0, 0, 100'000'000});
  CallResult result = call("y");
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(to_string(result.result), "out:y");
  ASSERT_TRUE(result.certificate.has_value());
  EXPECT_TRUE(verify_certificate(*result.certificate, *client_verifier, 2, nullptr));
  EXPECT_EQ(result.certificate->proofs[0].replica, ReplicaId{0});
  EXPECT_EQ(result.certificate->proofs[1].replica, ReplicaId{2});
  EXPECT_GE(client->bad_reply_batches(), 1u);
  EXPECT_TRUE(result.dissent.empty()) << "a forged reply is not evidence against anyone";
}

TEST_F(ByzantineClientTest, OneValidSignerIsNotEnough) {
  // Only replica 0 signs properly: 1 relabels its batch as 2's, 2 forges.
  start({Behaviour::kHonest, Behaviour::kOtherSigner, Behaviour::kForger});
  CallResult result = call("z");
  EXPECT_EQ(result.status, CallResult::Status::kTimedOut);
  EXPECT_FALSE(result.certificate.has_value());
  EXPECT_GE(client->bad_reply_batches(), 2u);
}

TEST_F(ByzantineClientTest, UnsignedRepliesAreIgnored) {
  start({Behaviour::kUnsigned, Behaviour::kUnsigned, Behaviour::kHonest});
  CallResult result = call("w");
  EXPECT_EQ(result.status, CallResult::Status::kTimedOut);
  EXPECT_EQ(client->bad_reply_batches(), 0u);
}

}  // namespace
}  // namespace lockstep
