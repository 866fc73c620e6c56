#include "crypto/signing.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace lockstep::crypto {
namespace {

std::array<uint8_t, 32> seed_of(uint8_t n) {
  std::array<uint8_t, 32> seed{};
  seed.fill(n);
  return seed;
}

constexpr Scheme kSchemes[] = {Scheme::kEd25519, Scheme::kSim};

// Three replicas (seeds 0..2) and client principal 5 (seed 10).
struct Keys {
  explicit Keys(Scheme scheme) {
    KeyDirectory directory;
    std::vector<KeyPair> all;
    for (uint8_t r = 0; r < 3; ++r) {
      all.push_back(derive_key_pair(scheme, seed_of(r)));
      directory.replicas.push_back(all.back().public_key);
      replicas.push_back(make_signer(scheme, all.back()));
    }
    all.push_back(derive_key_pair(scheme, seed_of(10)));
    directory.clients[kPrincipal] = all.back().public_key;
    client = make_signer(scheme, all.back());
    verifier = make_verifier(scheme, directory, all);
  }
  static constexpr uint32_t kPrincipal = 5;
  std::vector<std::unique_ptr<Signer>> replicas;
  std::unique_ptr<Signer> client;
  std::unique_ptr<Verifier> verifier;
};

ClientRequest request(uint32_t session, uint64_t sequence, std::string_view command) {
  return ClientRequest{client_id_of(Keys::kPrincipal, session),
                       Sequence{sequence},
                       Sequence{sequence - 1},
                       to_bytes(command),
                       {}};
}

ClientReply reply(uint64_t client, uint64_t sequence, ReplicaId replica, std::string_view result) {
  return ClientReply{ClientId{client}, Sequence{sequence}, replica, ReplyStatus::kOk,
                     to_bytes(result)};
}

std::vector<ClientReply> replies_of(ReplicaId replica, size_t count) {
  std::vector<ClientReply> out;
  for (size_t i = 0; i < count; ++i)
    out.push_back(reply(100 + i, i + 1, replica, "result " + std::to_string(i)));
  return out;
}

// ---- requests -----------------------------------------------------------------------------------

TEST(SigningRequest, DigestNamesOneExactSignedRequest) {
  const ClientRequest base = request(1, 2, "put k v");
  std::set<Digest> digests = {request_digest(base)};
  auto expect_new = [&](const ClientRequest& changed, const char* what) {
    EXPECT_TRUE(digests.insert(request_digest(changed)).second) << what;
  };
  ClientRequest r = base;
  r.command = to_bytes("put k w");
  expect_new(r, "command");
  r = base;
  r.signature = Bytes(64, 1);
  expect_new(r, "signature");
  r.signature = Bytes(64, 2);
  expect_new(r, "another signature");
  r = base;
  r.client = client_id_of(Keys::kPrincipal, 2);
  expect_new(r, "client");
  r = base;
  r.sequence = Sequence{3};
  expect_new(r, "sequence");
  r = base;
  r.acked_below = Sequence{0};
  expect_new(r, "acked_below");
  // Field boundaries are unambiguous: moving a byte from the command into the signature changes
  // the digest.
  r = base;
  r.command = to_bytes("put k ");
  r.signature = to_bytes("v");
  expect_new(r, "boundary");
  EXPECT_EQ(request_digest(base), request_digest(request(1, 2, "put k v")));
}

TEST(SigningRequest, SigningBytesLeaveTheSignatureOut) {
  ClientRequest r = request(1, 2, "get k");
  const Bytes before = request_signing_bytes(r);
  r.signature = Bytes(64, 9);
  EXPECT_EQ(request_signing_bytes(r), before);
  const std::string_view tag = "lockstep/request/v1";
  ASSERT_GT(before.size(), tag.size() + 1);
  EXPECT_EQ(before[0], tag.size());
  EXPECT_TRUE(std::equal(tag.begin(), tag.end(), before.begin() + 1));
}

TEST(SigningRequest, SignAndVerify) {
  for (Scheme scheme : kSchemes) {
    SCOPED_TRACE(scheme == Scheme::kEd25519 ? "ed25519" : "sim");
    Keys keys(scheme);
    ClientRequest r = request(3, 4, "incr c 5");
    EXPECT_FALSE(verify_request(*keys.verifier, r));  // unsigned
    sign_request(*keys.client, r);
    ASSERT_EQ(r.signature.size(), 64u);
    EXPECT_TRUE(verify_request(*keys.verifier, r));

    ClientRequest tampered = r;
    tampered.command.back() ^= 1;
    EXPECT_FALSE(verify_request(*keys.verifier, tampered));
    tampered = r;
    tampered.acked_below = Sequence{0};
    EXPECT_FALSE(verify_request(*keys.verifier, tampered));
    tampered = r;
    tampered.signature[10] ^= 0x40;
    EXPECT_FALSE(verify_request(*keys.verifier, tampered));
    tampered = r;
    tampered.signature.push_back(0);  // 65 bytes
    EXPECT_FALSE(verify_request(*keys.verifier, tampered));
    tampered = r;
    tampered.signature.pop_back();  // 63 bytes
    EXPECT_FALSE(verify_request(*keys.verifier, tampered));

    // Another principal's session id: the same signature does not transfer.
    tampered = r;
    tampered.client = client_id_of(Keys::kPrincipal + 1, 3);
    EXPECT_FALSE(verify_request(*keys.verifier, tampered));
    // A replica's key is not a client's.
    ClientRequest by_replica = request(3, 4, "incr c 5");
    sign_request(*keys.replicas[0], by_replica);
    EXPECT_FALSE(verify_request(*keys.verifier, by_replica));
  }
}

// ---- proposals and endorsements -----------------------------------------------------------------

TEST(SigningProposal, DigestChangesWithAnyRequestAndField) {
  Keys keys(Scheme::kSim);
  Proposal base{ReplicaId{1}, 5000, {}, {}};
  for (uint64_t i = 1; i <= 4; ++i) {
    base.requests.push_back(request(static_cast<uint32_t>(i), i, "cmd " + std::to_string(i)));
    sign_request(*keys.client, base.requests.back());
  }
  std::set<Digest> digests = {proposal_digest(base)};
  auto expect_new = [&](const Proposal& changed, const std::string& what) {
    EXPECT_TRUE(digests.insert(proposal_digest(changed)).second) << what;
  };
  for (size_t i = 0; i < base.requests.size(); ++i) {
    Proposal p = base;
    p.requests[i].command.push_back('!');
    expect_new(p, "command of request " + std::to_string(i));
    p = base;
    p.requests[i].signature[0] ^= 1;  // same fields, another signature: another request
    expect_new(p, "signature of request " + std::to_string(i));
  }
  Proposal p = base;
  p.origin = ReplicaId{2};
  expect_new(p, "origin");
  p = base;
  p.timestamp_us = 5001;
  expect_new(p, "timestamp");
  p = base;
  std::swap(p.requests[0], p.requests[1]);
  expect_new(p, "order");
  p = base;
  p.requests.pop_back();
  expect_new(p, "one request fewer");
  p = base;
  p.requests.clear();
  expect_new(p, "no requests");
  p = base;
  p.claim = {1, 2, 3};
  expect_new(p, "a recovery claim");
  EXPECT_EQ(proposal_digest(base), proposal_digest(Proposal(base)));
}

TEST(SigningProposal, EndorsementSignAndVerify) {
  for (Scheme scheme : kSchemes) {
    Keys keys(scheme);
    const Proposal proposal{ReplicaId{0}, 77, {request(1, 1, "x")}, {}};
    const Digest d = proposal_digest(proposal);
    const Bytes bytes = endorsement_signing_bytes(d);
    const Signature s = keys.replicas[2]->sign(bytes);
    EXPECT_TRUE(keys.verifier->verify_replica(ReplicaId{2}, bytes, s));
    EXPECT_FALSE(keys.verifier->verify_replica(ReplicaId{1}, bytes, s));
    Proposal other = proposal;
    other.timestamp_us = 78;
    EXPECT_FALSE(keys.verifier->verify_replica(
        ReplicaId{2}, endorsement_signing_bytes(proposal_digest(other)), s));
  }
}

// ---- replies ------------------------------------------------------------------------------------

TEST(SigningReplies, DigestCoversEveryField) {
  const ClientReply base = reply(1, 2, ReplicaId{0}, "ok");
  std::set<Digest> digests = {reply_digest(base)};
  ClientReply r = base;
  r.client = ClientId{9};
  EXPECT_TRUE(digests.insert(reply_digest(r)).second);
  r = base;
  r.sequence = Sequence{9};
  EXPECT_TRUE(digests.insert(reply_digest(r)).second);
  r = base;
  r.replica = ReplicaId{9};
  EXPECT_TRUE(digests.insert(reply_digest(r)).second);
  r = base;
  r.status = ReplyStatus::kBusy;
  EXPECT_TRUE(digests.insert(reply_digest(r)).second);
  r = base;
  r.result = to_bytes("ok!");
  EXPECT_TRUE(digests.insert(reply_digest(r)).second);
  r = base;
  r.epoch = 1;
  EXPECT_TRUE(digests.insert(reply_digest(r)).second);
  r.epoch = uint64_t{1} << 63;
  EXPECT_TRUE(digests.insert(reply_digest(r)).second);
}

TEST(SigningReplies, TheEpochIsSignedAndTheAttachedChangesAreNot) {
  Keys keys(Scheme::kEd25519);
  std::vector<ClientReply> replies = replies_of(ReplicaId{2}, 3);
  for (ClientReply& r : replies)
    r.epoch = 4;
  const SignedReplies good = sign_replies(*keys.replicas[2], ReplicaId{2}, replies);
  ASSERT_TRUE(verify_replies(*keys.verifier, good));
  // A relay (or the replica itself, later) cannot restate the epoch a reply was executed in.
  SignedReplies restated = good;
  restated.replies[1].epoch = 3;
  EXPECT_FALSE(verify_replies(*keys.verifier, restated));
  // The administrator's changes ride along outside the signature: they prove themselves.
  SignedReplies with_changes = good;
  ClientRequest change = request(1, 1, "change");
  sign_request(*keys.client, change);
  with_changes.membership_changes = {change, change};
  EXPECT_TRUE(verify_replies(*keys.verifier, with_changes));
}

TEST(SigningReplies, SignAndVerifyABatch) {
  for (Scheme scheme : kSchemes) {
    SCOPED_TRACE(scheme == Scheme::kEd25519 ? "ed25519" : "sim");
    Keys keys(scheme);
    const SignedReplies batch =
        sign_replies(*keys.replicas[1], ReplicaId{1}, replies_of(ReplicaId{1}, 5));
    EXPECT_EQ(batch.replica, ReplicaId{1});
    EXPECT_EQ(batch.replies, replies_of(ReplicaId{1}, 5));
    EXPECT_TRUE(verify_replies(*keys.verifier, batch));

    // The signature is over reply_batch_signing_bytes of the reply digests.
    std::vector<Digest> digests;
    for (const ClientReply& r : batch.replies)
      digests.push_back(reply_digest(r));
    EXPECT_TRUE(keys.verifier->verify_replica(
        ReplicaId{1}, reply_batch_signing_bytes(ReplicaId{1}, digests), batch.signature));

    const SignedReplies empty = sign_replies(*keys.replicas[0], ReplicaId{0}, {});
    EXPECT_TRUE(verify_replies(*keys.verifier, empty));
  }
}

TEST(SigningReplies, TamperedBatchFails) {
  for (Scheme scheme : kSchemes) {
    SCOPED_TRACE(scheme == Scheme::kEd25519 ? "ed25519" : "sim");
    Keys keys(scheme);
    const SignedReplies good =
        sign_replies(*keys.replicas[1], ReplicaId{1}, replies_of(ReplicaId{1}, 4));
    for (size_t i = 0; i < good.replies.size(); ++i) {
      SignedReplies bad = good;
      bad.replies[i].result.push_back('x');
      EXPECT_FALSE(verify_replies(*keys.verifier, bad)) << "result " << i;
      bad = good;
      bad.replies[i].status = ReplyStatus::kNotServing;
      EXPECT_FALSE(verify_replies(*keys.verifier, bad)) << "status " << i;
    }
    SignedReplies bad = good;
    bad.replies.pop_back();
    EXPECT_FALSE(verify_replies(*keys.verifier, bad));
    bad = good;
    std::swap(bad.replies[0], bad.replies[1]);
    EXPECT_FALSE(verify_replies(*keys.verifier, bad));
    bad = good;
    bad.signature[63] ^= 0x01;
    if (scheme == Scheme::kSim) bad.signature[0] ^= 0x01;  // the sim MAC sits in the first half
    EXPECT_FALSE(verify_replies(*keys.verifier, bad));
    // Claimed by another replica, or by one the cluster does not have.
    bad = good;
    bad.replica = ReplicaId{2};
    for (ClientReply& r : bad.replies)
      r.replica = ReplicaId{2};
    EXPECT_FALSE(verify_replies(*keys.verifier, bad));
    bad.replica = ReplicaId{3};
    for (ClientReply& r : bad.replies)
      r.replica = ReplicaId{3};
    EXPECT_FALSE(verify_replies(*keys.verifier, bad));
  }
}

TEST(SigningReplies, AReplyNamingAnotherReplicaIsRejected) {
  Keys keys(Scheme::kEd25519);
  std::vector<ClientReply> replies = replies_of(ReplicaId{1}, 3);
  replies[1].replica = ReplicaId{0};
  // Correctly signed by replica 1, but it vouches for a reply of replica 0.
  const SignedReplies batch = sign_replies(*keys.replicas[1], ReplicaId{1}, replies);
  EXPECT_FALSE(verify_replies(*keys.verifier, batch));
}

// ---- domain separation --------------------------------------------------------------------------

TEST(SigningDomains, EverySignedStringHasItsOwnTag) {
  const Digest d = digest(to_bytes("some proposal"));
  const Bytes endorse = endorsement_signing_bytes(d);
  const Bytes replies = reply_batch_signing_bytes(ReplicaId{0}, std::vector<Digest>{d});
  const Bytes request_bytes = request_signing_bytes(request(1, 1, ""));
  EXPECT_NE(endorse, replies);
  // Not even a prefix of one another: a signature for one purpose never checks for another.
  auto starts_with = [](const Bytes& a, const Bytes& b) {
    return a.size() >= b.size() && std::equal(b.begin(), b.end(), a.begin());
  };
  EXPECT_FALSE(starts_with(endorse, replies) || starts_with(replies, endorse));
  EXPECT_NE(Bytes(endorse.begin(), endorse.begin() + 20),
            Bytes(request_bytes.begin(), request_bytes.begin() + 20));

  Keys keys(Scheme::kEd25519);
  const Signature endorsement = keys.replicas[0]->sign(endorse);
  EXPECT_FALSE(keys.verifier->verify_replica(ReplicaId{0}, replies, endorsement));
  const Signature reply_signature = keys.replicas[0]->sign(replies);
  EXPECT_FALSE(keys.verifier->verify_replica(ReplicaId{0}, endorse, reply_signature));

  // A proposal digest and a reply digest over the same digest bytes differ too.
  const ClientReply r = reply(1, 1, ReplicaId{0}, "");
  EXPECT_NE(reply_digest(r), proposal_digest(Proposal{}));
}

}  // namespace
}  // namespace lockstep::crypto
