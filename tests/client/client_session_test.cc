#include "client/core/client_session.h"

#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <string>

#include "crypto/signing.h"

namespace lockstep {
namespace {

using Status = ClientSession::Status;

constexpr ClientId kClient{42};
constexpr uint64_t kRetryNs = 100;
constexpr uint64_t kDeadlineNs = 1000;

ClientOptions options(uint32_t replicas = 3, uint32_t outstanding_max = 1024) {
  ClientOptions o;
  o.replica_count = replicas;
  o.retry_interval_ns = kRetryNs;
  o.deadline_ns = kDeadlineNs;
  o.outstanding_max = outstanding_max;
  return o;
}

ClientReply reply(uint64_t sequence, uint32_t replica, const std::string& result = "r",
                  ReplyStatus status = ReplyStatus::kOk, ClientId client = kClient) {
  return ClientReply{client, Sequence{sequence}, ReplicaId{replica}, status, to_bytes(result)};
}

class ClientSessionTest : public ::testing::Test {
 protected:
  // Checks that `sends` is one broadcast of `sequence` (one send per replica, in replica order)
  // and returns the request it carried.
  ClientRequest expect_broadcast(const std::vector<ClientSession::Send>& sends, uint64_t sequence,
                                 uint32_t replicas = 3) {
    EXPECT_EQ(sends.size(), replicas);
    if (sends.empty()) return {};
    for (uint32_t r = 0; r < sends.size(); ++r) {
      EXPECT_EQ(sends[r].to, ReplicaId{r});
      EXPECT_EQ(sends[r].request, sends[0].request);
    }
    EXPECT_EQ(sends[0].request.client, kClient);
    EXPECT_EQ(sends[0].request.sequence, Sequence{sequence});
    return sends[0].request;
  }

  ClientSession session{kClient, options()};
};

TEST_F(ClientSessionTest, SubmitBroadcastsToEveryReplica) {
  EXPECT_FALSE(session.next_deadline_ns().has_value());
  Sequence sequence = session.submit(10, to_bytes("cmd"));
  EXPECT_EQ(sequence, Sequence{1});
  ClientRequest request = expect_broadcast(session.take_sends(), 1);
  EXPECT_EQ(request.command, to_bytes("cmd"));
  EXPECT_EQ(request.acked_below, Sequence{1});
  EXPECT_TRUE(session.take_sends().empty()) << "take_sends hands over and clears";
  EXPECT_EQ(session.outstanding(), 1u);
  EXPECT_EQ(session.id(), kClient);
}

TEST_F(ClientSessionTest, FirstOkReplyCompletesAndLaterOnesAreIgnored) {
  session.submit(0, to_bytes("cmd"));
  session.take_sends();
  session.on_reply(5, reply(1, 2, "first"));
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].sequence, Sequence{1});
  EXPECT_EQ(completions[0].status, Status::kOk);
  EXPECT_EQ(completions[0].result, to_bytes("first"));
  EXPECT_EQ(completions[0].replied_by, ReplicaId{2});
  EXPECT_EQ(session.outstanding(), 0u);
  EXPECT_FALSE(session.next_deadline_ns().has_value());

  session.on_reply(6, reply(1, 0, "second"));
  session.on_reply(7, reply(1, 2, "first"));
  EXPECT_TRUE(session.take_completions().empty());
  // Nothing is retried for a completed request.
  session.tick(kRetryNs * 5);
  EXPECT_TRUE(session.take_sends().empty());
}

TEST_F(ClientSessionTest, RepliesThatAreNotOursAreIgnored) {
  session.submit(0, to_bytes("cmd"));
  session.on_reply(1, reply(1, 0, "x", ReplyStatus::kOk, ClientId{43}));  // other client
  session.on_reply(1, reply(2, 0));                                       // never submitted
  session.on_reply(1, reply(0, 0));                                       // never submitted
  session.on_reply(1, reply(1, 3));                                       // no such replica
  EXPECT_TRUE(session.take_completions().empty());
  EXPECT_EQ(session.outstanding(), 1u);
  session.on_reply(1, reply(1, 1));
  EXPECT_EQ(session.take_completions().size(), 1u);
}

TEST_F(ClientSessionTest, BusyAndNotServingDoNotCompleteAndTheRequestIsRetried) {
  session.submit(0, to_bytes("cmd"));
  session.take_sends();
  session.on_reply(10, reply(1, 0, "", ReplyStatus::kBusy));
  session.on_reply(11, reply(1, 1, "", ReplyStatus::kNotServing));
  EXPECT_TRUE(session.take_completions().empty());
  EXPECT_EQ(session.outstanding(), 1u);
  // Not retried at once: at the regular interval.
  session.tick(kRetryNs - 1);
  EXPECT_TRUE(session.take_sends().empty());
  session.tick(kRetryNs);
  expect_broadcast(session.take_sends(), 1);
  session.on_reply(kRetryNs + 1, reply(1, 2, "done"));
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].result, to_bytes("done"));
}

TEST_F(ClientSessionTest, RetriesRebroadcastTheSameRequestEveryInterval) {
  session.submit(1000, to_bytes("cmd"));
  ClientRequest first = expect_broadcast(session.take_sends(), 1);
  EXPECT_EQ(session.next_deadline_ns(), 1000 + kRetryNs);

  session.tick(1000 + kRetryNs - 1);
  EXPECT_TRUE(session.take_sends().empty());
  session.tick(1000 + kRetryNs);
  EXPECT_EQ(expect_broadcast(session.take_sends(), 1), first);
  EXPECT_EQ(session.next_deadline_ns(), 1000 + 2 * kRetryNs);

  // A late tick retries once, and the next retry counts from that tick.
  session.tick(1000 + 2 * kRetryNs + 30);
  EXPECT_EQ(expect_broadcast(session.take_sends(), 1), first);
  session.tick(1000 + 3 * kRetryNs);
  EXPECT_TRUE(session.take_sends().empty());
  EXPECT_EQ(session.next_deadline_ns(), 1000 + 3 * kRetryNs + 30);
  EXPECT_TRUE(session.take_completions().empty());
}

TEST_F(ClientSessionTest, TimesOutAtTheDeadline) {
  session.submit(500, to_bytes("cmd"));
  for (uint64_t t = 500 + kRetryNs; t < 500 + kDeadlineNs; t += kRetryNs)
    session.tick(t);
  session.tick(500 + kDeadlineNs - 1);
  EXPECT_TRUE(session.take_completions().empty());
  session.take_sends();

  session.tick(500 + kDeadlineNs);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].sequence, Sequence{1});
  EXPECT_EQ(completions[0].status, Status::kTimedOut);
  EXPECT_TRUE(completions[0].result.empty());
  EXPECT_TRUE(session.take_sends().empty()) << "no retry of a request that just timed out";
  EXPECT_EQ(session.outstanding(), 0u);
  EXPECT_FALSE(session.next_deadline_ns().has_value());

  // The reply that finally arrives is too late and ignored.
  session.on_reply(500 + kDeadlineNs + 1, reply(1, 0));
  EXPECT_TRUE(session.take_completions().empty());
}

TEST(ClientSessionDeadlineTest, DeadlineBeforeFirstRetryIsTheNextDeadline) {
  ClientOptions o = options();
  o.retry_interval_ns = 1000;
  o.deadline_ns = 300;
  ClientSession session(kClient, o);
  session.submit(50, to_bytes("cmd"));
  EXPECT_EQ(session.next_deadline_ns(), 350u);
  session.tick(350);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].status, Status::kTimedOut);
}

TEST_F(ClientSessionTest, PipelinedRequestsAndTheAcknowledgementWatermark) {
  for (uint64_t s = 1; s <= 3; ++s) {
    EXPECT_EQ(session.submit(0, to_bytes("c" + std::to_string(s))), Sequence{s});
    EXPECT_EQ(expect_broadcast(session.take_sends(), s).acked_below, Sequence{1});
  }
  EXPECT_EQ(session.outstanding(), 3u);

  // 2 answers before 1: the watermark stays at the lowest pending request.
  session.on_reply(1, reply(2, 0, "two"));
  session.submit(2, to_bytes("c4"));
  EXPECT_EQ(expect_broadcast(session.take_sends(), 4).acked_below, Sequence{1});

  session.on_reply(3, reply(1, 1, "one"));
  session.submit(4, to_bytes("c5"));
  EXPECT_EQ(expect_broadcast(session.take_sends(), 5).acked_below, Sequence{3});

  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 2u);
  EXPECT_EQ(completions[0].sequence, Sequence{2});
  EXPECT_EQ(completions[1].sequence, Sequence{1});

  // Retries of the still-pending ones carry the current watermark, each with its own sequence.
  session.tick(kRetryNs + 4);  // 4 and 5 were submitted at 2 and 4
  auto sends = session.take_sends();
  ASSERT_EQ(sends.size(), 9u);  // 3, 4, 5 to three replicas
  for (size_t i = 0; i < sends.size(); ++i) {
    EXPECT_EQ(sends[i].request.sequence, Sequence{3 + i / 3});
    EXPECT_EQ(sends[i].request.acked_below, Sequence{3});
  }

  for (uint64_t s = 3; s <= 5; ++s)
    session.on_reply(kRetryNs + 1, reply(s, 0));
  EXPECT_EQ(session.take_completions().size(), 3u);
  // Nothing pending: the watermark is the next sequence, i.e. the new request's own.
  session.submit(kRetryNs + 2, to_bytes("c6"));
  EXPECT_EQ(expect_broadcast(session.take_sends(), 6).acked_below, Sequence{6});
}

TEST_F(ClientSessionTest, TimedOutRequestsNoLongerHoldTheWatermark) {
  session.submit(0, to_bytes("slow"));
  session.submit(kDeadlineNs / 2, to_bytes("later"));
  session.take_sends();
  session.tick(kDeadlineNs);  // 1 times out; 2 is retried with the raised watermark
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].sequence, Sequence{1});
  EXPECT_EQ(expect_broadcast(session.take_sends(), 2).acked_below, Sequence{2});
}

TEST(ClientSessionLimitTest, OutstandingMaxLimitsSubmission) {
  ClientSession session(kClient, options(1, 2));
  EXPECT_TRUE(session.can_submit());
  session.submit(0, {});
  session.submit(0, {});
  EXPECT_FALSE(session.can_submit());
  session.on_reply(1, reply(1, 0));
  EXPECT_TRUE(session.can_submit());
  EXPECT_EQ(session.submit(2, {}), Sequence{3});
}

TEST(ClientSessionSingleReplicaTest, OneSendPerBroadcast) {
  ClientSession session(kClient, options(1));
  session.submit(0, to_bytes("x"));
  auto sends = session.take_sends();
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].to, ReplicaId{0});
}

TEST(ClientSessionOverflowTest, DeadlinesNearTheEndOfTimeDoNotWrap) {
  ClientOptions o = options(1);
  o.deadline_ns = UINT64_MAX;
  o.retry_interval_ns = UINT64_MAX;
  ClientSession session(kClient, o);
  session.submit(10, to_bytes("x"));
  session.take_sends();
  EXPECT_EQ(session.next_deadline_ns(), UINT64_MAX);
  session.tick(1'000'000);
  EXPECT_TRUE(session.take_sends().empty());
  EXPECT_TRUE(session.take_completions().empty());
}

TEST_F(ClientSessionTest, BusyUntilTheDeadlineCompletesAsBusyRetryingMeanwhile) {
  session.submit(0, to_bytes("cmd"));
  session.take_sends();
  // Every round, replica 1 refuses; the others say nothing.
  for (uint64_t t = kRetryNs; t < kDeadlineNs; t += kRetryNs) {
    session.on_reply(t - 1, reply(1, 1, "", ReplyStatus::kBusy));
    EXPECT_TRUE(session.take_completions().empty());
    session.tick(t);
    expect_broadcast(session.take_sends(), 1);  // retried after the interval, same request
  }
  session.tick(kDeadlineNs);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].status, Status::kBusy);
  EXPECT_EQ(completions[0].replied_by, ReplicaId{1});
  EXPECT_TRUE(completions[0].result.empty());
  EXPECT_EQ(session.outstanding(), 0u);
}

TEST_F(ClientSessionTest, BusyThenOkCompletesOk) {
  session.submit(0, to_bytes("cmd"));
  session.on_reply(1, reply(1, 0, "", ReplyStatus::kBusy));
  session.tick(kRetryNs);
  session.on_reply(kRetryNs + 1, reply(1, 0, "done"));
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].status, Status::kOk);
  EXPECT_EQ(completions[0].result, to_bytes("done"));
}

TEST_F(ClientSessionTest, BusyFollowedByNotServingFromTheSameReplicaIsATimeout) {
  // "The last thing heard" decides: that replica's latest word was not a refusal.
  session.submit(0, to_bytes("cmd"));
  session.on_reply(1, reply(1, 0, "", ReplyStatus::kBusy));
  session.on_reply(2, reply(1, 0, "", ReplyStatus::kNotServing));
  session.tick(kDeadlineNs);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].status, Status::kTimedOut);
}

TEST_F(ClientSessionTest, BusyForOneRequestDoesNotMarkAnother) {
  session.submit(0, to_bytes("a"));
  session.submit(0, to_bytes("b"));
  session.on_reply(1, reply(2, 0, "", ReplyStatus::kBusy));
  session.tick(kDeadlineNs);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 2u);
  EXPECT_EQ(completions[0].sequence, Sequence{1});
  EXPECT_EQ(completions[0].status, Status::kTimedOut);
  EXPECT_EQ(completions[1].sequence, Sequence{2});
  EXPECT_EQ(completions[1].status, Status::kBusy);
}

// ---- byzantine mode: t+1 matching replies, certificates, dissent, signed requests ------------

ClientOptions byzantine_options(uint32_t replicas = 3, uint32_t quorum = 2) {
  ClientOptions o = options(replicas);
  o.reply_quorum = quorum;
  return o;
}

// A stand-in proof that names its replica, so tests can tell whose proofs a certificate holds.
ReplyProof proof_of(uint32_t replica, uint32_t index = 0) {
  ReplyProof proof;
  proof.replica = ReplicaId{replica};
  proof.batch_digests.resize(index + 1);
  proof.batch_digests[index][0] = static_cast<uint8_t>(replica);
  proof.index = index;
  proof.signature[0] = static_cast<uint8_t>(0x80 + replica);
  return proof;
}

class ByzantineSessionTest : public ::testing::Test {
 protected:
  void answer(uint64_t sequence, uint32_t replica, const std::string& result,
              ReplyStatus status = ReplyStatus::kOk) {
    ReplyProof proof = proof_of(replica);
    session.on_reply(1, reply(sequence, replica, result, status), &proof);
  }
  ClientSession session{kClient, byzantine_options()};
};

TEST_F(ByzantineSessionTest, LiarFirstThenTwoHonestCompletesWithTheHonestResult) {
  session.submit(0, to_bytes("cmd"));
  session.take_sends();
  answer(1, 1, "lie");
  EXPECT_TRUE(session.take_completions().empty()) << "one replica alone never completes";
  answer(1, 2, "truth");
  EXPECT_TRUE(session.take_completions().empty()) << "one vote each for two results";
  answer(1, 0, "truth");
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  const ClientSession::Completion& done = completions[0];
  EXPECT_EQ(done.status, Status::kOk);
  EXPECT_EQ(done.result, to_bytes("truth"));
  EXPECT_EQ(done.replied_by, ReplicaId{2}) << "the first agreeing replica";
  ASSERT_TRUE(done.certificate.has_value());
  EXPECT_EQ(done.certificate->reply,
            (ClientReply{kClient, Sequence{1}, ReplicaId{2}, ReplyStatus::kOk, to_bytes("truth")}));
  ASSERT_EQ(done.certificate->proofs.size(), 2u);
  EXPECT_EQ(done.certificate->proofs[0], proof_of(2));
  EXPECT_EQ(done.certificate->proofs[1], proof_of(0));
  ASSERT_EQ(done.dissent.size(), 1u);
  EXPECT_EQ(done.dissent[0].replica, ReplicaId{1});
  EXPECT_EQ(done.dissent[0].status, ReplyStatus::kOk);
  EXPECT_EQ(done.dissent[0].result, to_bytes("lie"));
  EXPECT_EQ(session.outstanding(), 0u);

  // Late replies to a completed request change nothing.
  answer(1, 1, "truth");
  EXPECT_TRUE(session.take_completions().empty());
}

TEST_F(ByzantineSessionTest, LiarAndOneHonestDoNotCompleteAndTheRequestTimesOut) {
  session.submit(0, to_bytes("cmd"));
  answer(1, 0, "lie");
  answer(1, 1, "truth");
  session.tick(kRetryNs);
  EXPECT_EQ(session.take_sends().size(), 6u) << "the first broadcast and one retry";
  EXPECT_TRUE(session.take_completions().empty());
  session.tick(kDeadlineNs);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].status, Status::kTimedOut);
  EXPECT_FALSE(completions[0].certificate.has_value());
}

TEST_F(ByzantineSessionTest, RepeatedRepliesFromOneReplicaCountOnce) {
  session.submit(0, to_bytes("cmd"));
  answer(1, 1, "x");
  answer(1, 1, "x");  // its answer to a retry
  session.on_reply(2, reply(1, 1, "x"));
  EXPECT_TRUE(session.take_completions().empty());
  answer(1, 2, "x");
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].result, to_bytes("x"));
  ASSERT_TRUE(completions[0].certificate.has_value());
  ASSERT_EQ(completions[0].certificate->proofs.size(), 2u);
  EXPECT_EQ(completions[0].certificate->proofs[0].replica, ReplicaId{1});
  EXPECT_EQ(completions[0].certificate->proofs[1].replica, ReplicaId{2});
  EXPECT_TRUE(completions[0].dissent.empty());
}

TEST_F(ByzantineSessionTest, AReplicaThatChangesItsAnswerKeepsItsFirstVoteAndIsNamed) {
  session.submit(0, to_bytes("cmd"));
  answer(1, 0, "lie");
  answer(1, 0, "truth");  // cannot vote twice by changing its mind
  EXPECT_TRUE(session.take_completions().empty());
  answer(1, 0, "third");  // only the first contradiction is kept
  answer(1, 1, "truth");
  EXPECT_TRUE(session.take_completions().empty()) << "replica 0's second answer did not count";
  answer(1, 2, "truth");
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].result, to_bytes("truth"));
  ASSERT_EQ(completions[0].dissent.size(), 1u);
  EXPECT_EQ(completions[0].dissent[0].replica, ReplicaId{0});
  EXPECT_EQ(completions[0].dissent[0].result, to_bytes("lie"));
}

TEST_F(ByzantineSessionTest, AContradictionFromAnAgreeingReplicaIsDissent) {
  session.submit(0, to_bytes("cmd"));
  answer(1, 0, "truth");
  answer(1, 0, "other");
  answer(1, 1, "truth");
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  ASSERT_EQ(completions[0].dissent.size(), 1u);
  EXPECT_EQ(completions[0].dissent[0].replica, ReplicaId{0});
  EXPECT_EQ(completions[0].dissent[0].result, to_bytes("other"));
}

TEST_F(ByzantineSessionTest, NonOkRepliesNeverCount) {
  session.submit(0, to_bytes("cmd"));
  answer(1, 0, "", ReplyStatus::kBusy);
  answer(1, 1, "", ReplyStatus::kNotServing);
  answer(1, 2, "", ReplyStatus::kBusy);
  EXPECT_TRUE(session.take_completions().empty());
  answer(1, 0, "");  // an empty kOk result is a result
  EXPECT_TRUE(session.take_completions().empty());
  answer(1, 1, "");
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_TRUE(completions[0].result.empty());
  EXPECT_TRUE(completions[0].dissent.empty()) << "busy is not a lie";
}

TEST_F(ByzantineSessionTest, BusyNeedsAQuorumOfRefusals) {
  // One replica saying busy may be a liar: the request only times out.
  session.submit(0, to_bytes("a"));
  answer(1, 0, "", ReplyStatus::kBusy);
  session.tick(kDeadlineNs);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].status, Status::kTimedOut);

  // t+1 refusals include a correct replica's: busy.
  session.submit(kDeadlineNs, to_bytes("b"));
  answer(2, 0, "", ReplyStatus::kBusy);
  answer(2, 2, "", ReplyStatus::kBusy);
  answer(2, 2, "", ReplyStatus::kBusy);  // the same replica twice counts once
  session.tick(2 * kDeadlineNs);
  completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].status, Status::kBusy);
  EXPECT_FALSE(completions[0].certificate.has_value());
}

TEST_F(ByzantineSessionTest, ARefusalFollowedByAVoteIsNoLongerARefusal) {
  session.submit(0, to_bytes("a"));
  answer(1, 0, "", ReplyStatus::kBusy);
  answer(1, 1, "", ReplyStatus::kBusy);
  answer(1, 1, "x");
  session.tick(kDeadlineNs);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].status, Status::kTimedOut);
}

TEST_F(ByzantineSessionTest, RepliesThatAreNotOursAreIgnored) {
  session.submit(0, to_bytes("cmd"));
  session.on_reply(1, reply(1, 0, "x", ReplyStatus::kOk, ClientId{43}));
  session.on_reply(1, reply(1, 1, "x", ReplyStatus::kOk, ClientId{43}));
  session.on_reply(1, reply(2, 0, "x"));
  session.on_reply(1, reply(2, 1, "x"));
  session.on_reply(1, reply(1, 3, "x"));  // no such replica
  session.on_reply(1, reply(1, 7, "x"));
  EXPECT_TRUE(session.take_completions().empty());
  session.on_reply(1, reply(1, 0, "x"));
  EXPECT_TRUE(session.take_completions().empty());
  session.on_reply(1, reply(1, 2, "x"));
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  ASSERT_TRUE(completions[0].certificate.has_value());
  EXPECT_TRUE(completions[0].certificate->proofs.empty()) << "no proofs were given";
}

TEST_F(ByzantineSessionTest, QuorumOfThreeOutOfFive) {
  ClientSession five(kClient, byzantine_options(5, 3));
  five.submit(0, to_bytes("cmd"));
  for (uint32_t r : {4u, 0u}) {
    ReplyProof proof = proof_of(r);
    five.on_reply(1, reply(1, r, "lie"), &proof);
  }
  for (uint32_t r : {1u, 2u}) {
    ReplyProof proof = proof_of(r);
    five.on_reply(1, reply(1, r, "truth"), &proof);
  }
  EXPECT_TRUE(five.take_completions().empty());
  ReplyProof proof = proof_of(3);
  five.on_reply(1, reply(1, 3, "truth"), &proof);
  auto completions = five.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].result, to_bytes("truth"));
  EXPECT_EQ(completions[0].certificate->proofs.size(), 3u);
  ASSERT_EQ(completions[0].dissent.size(), 2u);
  EXPECT_EQ(completions[0].dissent[0].replica, ReplicaId{4});
  EXPECT_EQ(completions[0].dissent[1].replica, ReplicaId{0});
}

TEST(ByzantinePlantedBugTest, ShortQuorumAcceptsTheLiarsLoneReply) {
  ClientOptions o = byzantine_options();
  o.planted_accept_short_quorum = true;
  ClientSession session(kClient, o);
  session.submit(0, to_bytes("cmd"));
  ReplyProof proof = proof_of(1);
  session.on_reply(1, reply(1, 1, "lie"), &proof);
  auto completions = session.take_completions();
  ASSERT_EQ(completions.size(), 1u);
  EXPECT_EQ(completions[0].result, to_bytes("lie"));
  ASSERT_TRUE(completions[0].certificate.has_value());
  EXPECT_EQ(completions[0].certificate->proofs.size(), 1u);
}

class SignedRequestTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kPrincipal = 7;
  static constexpr ClientId kSigned = client_id_of(kPrincipal, 0x1234);

  SignedRequestTest() {
    std::array<uint8_t, 32> seed{};
    seed[0] = 9;
    keys = crypto::derive_key_pair(crypto::Scheme::kEd25519, seed);
    signer = crypto::make_signer(crypto::Scheme::kEd25519, keys);
    crypto::KeyDirectory directory;
    directory.clients[kPrincipal] = keys.public_key;
    verifier = crypto::make_verifier(crypto::Scheme::kEd25519, directory);
  }

  ClientOptions signed_options() {
    ClientOptions o = byzantine_options();
    o.signer = signer.get();
    return o;
  }

  crypto::KeyPair keys;
  std::unique_ptr<crypto::Signer> signer;
  std::unique_ptr<crypto::Verifier> verifier;
};

TEST_F(SignedRequestTest, EveryRequestIsSignedAndReSignedWhenTheWatermarkRises) {
  ClientSession session(kSigned, signed_options());
  session.submit(0, to_bytes("first"));
  session.submit(0, to_bytes("second"));
  auto sends = session.take_sends();
  ASSERT_EQ(sends.size(), 6u);
  for (const auto& send : sends) {
    EXPECT_TRUE(crypto::verify_request(*verifier, send.request));
  }
  ClientRequest tampered = sends[0].request;
  tampered.command = to_bytes("firsT");
  EXPECT_FALSE(crypto::verify_request(*verifier, tampered)) << "the command is covered";
  const Bytes second_signature = sends[3].request.signature;

  // 1 completes; the retry of 2 carries the raised watermark under a fresh signature.
  session.on_reply(1, reply(1, 0, "a", ReplyStatus::kOk, kSigned));
  session.on_reply(1, reply(1, 1, "a", ReplyStatus::kOk, kSigned));
  ASSERT_EQ(session.take_completions().size(), 1u);
  session.tick(kRetryNs);
  sends = session.take_sends();
  ASSERT_EQ(sends.size(), 3u);
  EXPECT_EQ(sends[0].request.sequence, Sequence{2});
  EXPECT_EQ(sends[0].request.acked_below, Sequence{2});
  EXPECT_NE(sends[0].request.signature, second_signature);
  for (const auto& send : sends) {
    EXPECT_TRUE(crypto::verify_request(*verifier, send.request));
  }

  // A retry with an unchanged watermark keeps a valid signature too.
  session.tick(2 * kRetryNs);
  sends = session.take_sends();
  ASSERT_EQ(sends.size(), 3u);
  EXPECT_TRUE(crypto::verify_request(*verifier, sends[0].request));
}

TEST_F(SignedRequestTest, FailstopSessionsDoNotSign) {
  ClientSession session(kSigned, options());
  session.submit(0, to_bytes("x"));
  auto sends = session.take_sends();
  ASSERT_FALSE(sends.empty());
  EXPECT_TRUE(sends[0].request.signature.empty());
}

}  // namespace
}  // namespace lockstep
