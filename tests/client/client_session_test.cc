#include "client/core/client_session.h"

#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace lockstep
