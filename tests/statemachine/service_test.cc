#include "statemachine/service.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "apps/kv/kv_machine.h"
#include "core/wire.h"

namespace lockstep {
namespace {

using Outcome = Service::Outcome;

constexpr ClientId kAlice{7};
constexpr ClientId kBob{9};

Bytes incr(const std::string& key) {
  kv::Command command;
  command.op = kv::Op::kIncr;
  command.key = key;
  command.delta = 1;
  return kv::encode_command(command);
}

// The value an incr returned, as text ("1", "2", ...), so tests read like the counter they drive.
std::string value_of(const Bytes& reply) {
  std::optional<kv::Result> result = kv::decode_result(reply);
  EXPECT_TRUE(result.has_value());
  return result ? result->value : "<undecodable>";
}

ClientRequest request(ClientId client, uint64_t sequence, uint64_t acked_below,
                      const std::string& key = "n") {
  return ClientRequest{client, Sequence{sequence}, Sequence{acked_below}, incr(key), {}};
}

Service make_service() {
  return Service(std::make_unique<kv::KvMachine>());
}

class ServiceTest : public ::testing::Test {
 protected:
  Service::Result run(ClientId client, uint64_t sequence, uint64_t acked_below,
                      const std::string& key = "n") {
    return service.execute(request(client, sequence, acked_below, key));
  }
  void expect_executed(ClientId client, uint64_t sequence, uint64_t acked_below,
                       const std::string& expected_value, const std::string& key = "n") {
    Service::Result result = run(client, sequence, acked_below, key);
    EXPECT_EQ(result.outcome, Outcome::kExecuted) << "sequence " << sequence;
    EXPECT_EQ(value_of(result.reply), expected_value) << "sequence " << sequence;
  }
  void expect_duplicate(ClientId client, uint64_t sequence, uint64_t acked_below,
                        const std::string& expected_value) {
    Service::Result result = run(client, sequence, acked_below);
    EXPECT_EQ(result.outcome, Outcome::kDuplicate) << "sequence " << sequence;
    EXPECT_EQ(value_of(result.reply), expected_value) << "sequence " << sequence;
  }
  void expect_stale(ClientId client, uint64_t sequence, uint64_t acked_below) {
    Service::Result result = run(client, sequence, acked_below);
    EXPECT_EQ(result.outcome, Outcome::kStale) << "sequence " << sequence;
    EXPECT_TRUE(result.reply.empty());
  }

  Service service = make_service();
};

TEST_F(ServiceTest, RetryIsAnsweredFromTheCacheNotExecutedAgain) {
  expect_executed(kAlice, 1, 1, "1");
  expect_duplicate(kAlice, 1, 1, "1");
  expect_duplicate(kAlice, 1, 1, "1");
  EXPECT_EQ(service.executed_count(), 1u);
  EXPECT_EQ(value_of(*service.cached_reply(kAlice, Sequence{1})), "1");
  EXPECT_TRUE(service.already_executed_or_stale(kAlice, Sequence{1}));
  EXPECT_FALSE(service.already_executed_or_stale(kAlice, Sequence{2}));
  expect_executed(kAlice, 2, 1, "2");
}

TEST_F(ServiceTest, SessionsOfDifferentClientsAreIndependent) {
  expect_executed(kAlice, 1, 1, "1");
  expect_executed(kBob, 1, 1, "2");  // same sequence, other client: a new request
  expect_duplicate(kAlice, 1, 1, "1");
  EXPECT_EQ(service.session_count(), 2u);
  EXPECT_FALSE(service.cached_reply(ClientId{12345}, Sequence{1}).has_value());
  EXPECT_FALSE(service.already_executed_or_stale(ClientId{12345}, Sequence{1}));
}

TEST_F(ServiceTest, PipelinedSequencesMayExecuteOutOfOrder) {
  // Requests 1..3 in flight at once; the order placed 3 first.
  expect_executed(kAlice, 3, 1, "1");
  expect_executed(kAlice, 1, 1, "2");
  expect_executed(kAlice, 2, 1, "3");
  expect_duplicate(kAlice, 3, 1, "1");
  expect_duplicate(kAlice, 1, 1, "2");
  expect_duplicate(kAlice, 2, 1, "3");
  EXPECT_EQ(service.executed_count(), 3u);
}

TEST_F(ServiceTest, RequestsBelowTheWatermarkAreStale) {
  expect_executed(kAlice, 1, 1, "1");
  expect_executed(kAlice, 3, 3, "2");  // the client has the replies of everything below 3
  expect_stale(kAlice, 1, 1);
  expect_stale(kAlice, 2, 1);  // never executed, but the client says nobody waits for it
  EXPECT_TRUE(service.already_executed_or_stale(kAlice, Sequence{2}));
  EXPECT_FALSE(service.cached_reply(kAlice, Sequence{1}).has_value());
  EXPECT_EQ(service.executed_count(), 2u);
}

TEST_F(ServiceTest, WatermarkForgetsRepliesBelowIt) {
  for (uint64_t s = 1; s <= 5; ++s)
    expect_executed(kAlice, s, 1, std::to_string(s));
  expect_executed(kAlice, 6, 4, "6");
  for (uint64_t s = 1; s <= 3; ++s) {
    EXPECT_FALSE(service.cached_reply(kAlice, Sequence{s}).has_value()) << s;
  }
  for (uint64_t s = 4; s <= 6; ++s) {
    EXPECT_TRUE(service.cached_reply(kAlice, Sequence{s}).has_value()) << s;
  }
}

TEST_F(ServiceTest, DuplicatesAdvanceTheWatermarkToo) {
  expect_executed(kAlice, 1, 1, "1");
  expect_executed(kAlice, 2, 1, "2");
  // A retry of 2 after the client got 1's reply: its newer watermark is taken into account.
  expect_duplicate(kAlice, 2, 2, "2");
  EXPECT_FALSE(service.cached_reply(kAlice, Sequence{1}).has_value());
  expect_stale(kAlice, 1, 1);
}

TEST_F(ServiceTest, WatermarkNeverMovesBack) {
  expect_executed(kAlice, 5, 5, "1");
  expect_executed(kAlice, 6, 2, "2");  // a delayed request with an older watermark
  expect_stale(kAlice, 4, 1);
  EXPECT_TRUE(service.cached_reply(kAlice, Sequence{5}).has_value());
}

TEST_F(ServiceTest, StaleRequestsDoNotMoveTheWatermark) {
  expect_executed(kAlice, 10, 10, "1");
  expect_stale(kAlice, 3, 12);
  EXPECT_TRUE(service.cached_reply(kAlice, Sequence{10}).has_value());
}

TEST_F(ServiceTest, RequestCannotAcknowledgeItsOwnReply) {
  // A confused client claims everything below 100 is answered while 5 is still unanswered.
  expect_executed(kAlice, 5, 100, "1");
  expect_duplicate(kAlice, 5, 100, "1");
  // The claim is honoured up to the request itself: 4 is stale, 6 is new.
  expect_stale(kAlice, 4, 1);
  expect_executed(kAlice, 6, 6, "2");
}

TEST_F(ServiceTest, EvictionBeyondTheLimitDropsTheLowestAndNeverReExecutes) {
  const uint64_t limit = Service::kRepliesPerClientMax;
  // A client that never acknowledges anything (watermark stays at 1).
  for (uint64_t s = 1; s <= limit; ++s)
    run(kAlice, s, 1);
  EXPECT_TRUE(service.cached_reply(kAlice, Sequence{1}).has_value());
  expect_executed(kAlice, limit + 1, 1, std::to_string(limit + 1));
  EXPECT_FALSE(service.cached_reply(kAlice, Sequence{1}).has_value());
  EXPECT_TRUE(service.cached_reply(kAlice, Sequence{2}).has_value());
  // The evicted request is stale now, not new: a retry of it must not execute a second time.
  expect_stale(kAlice, 1, 1);
  expect_duplicate(kAlice, 2, 1, "2");
  EXPECT_EQ(service.executed_count(), limit + 1);
  // Another client's table is not touched by Alice's overflow.
  expect_executed(kBob, 1, 1, std::to_string(limit + 2));
  expect_duplicate(kBob, 1, 1, std::to_string(limit + 2));
}

TEST_F(ServiceTest, SnapshotRoundTripCarriesSessionsAndMachine) {
  expect_executed(kAlice, 1, 1, "1");
  expect_executed(kAlice, 2, 1, "2");
  expect_executed(kAlice, 4, 2, "3");
  expect_executed(kBob, 1, 1, "1", "m");

  Service copy = make_service();
  copy.restore(service.snapshot());
  EXPECT_EQ(copy.snapshot(), service.snapshot());
  EXPECT_EQ(copy.digest(), service.digest());
  EXPECT_EQ(copy.executed_count(), 4u);
  EXPECT_EQ(copy.session_count(), 2u);

  // The restored table behaves like the original: retries answered, stale dropped, new executed.
  auto duplicate = copy.execute(request(kAlice, 2, 2));
  EXPECT_EQ(duplicate.outcome, Outcome::kDuplicate);
  EXPECT_EQ(value_of(duplicate.reply), "2");
  EXPECT_EQ(copy.execute(request(kAlice, 1, 1)).outcome, Outcome::kStale);
  auto pipelined = copy.execute(request(kAlice, 3, 2));
  EXPECT_EQ(pipelined.outcome, Outcome::kExecuted);
  EXPECT_EQ(value_of(pipelined.reply), "4");
  EXPECT_EQ(copy.execute(request(kBob, 1, 1, "m")).outcome, Outcome::kDuplicate);
}

TEST_F(ServiceTest, RestoreReplacesTheWholeState) {
  expect_executed(kAlice, 1, 1, "1");
  Bytes empty = make_service().snapshot();
  service.restore(empty);
  EXPECT_EQ(service.session_count(), 0u);
  EXPECT_EQ(service.executed_count(), 0u);
  EXPECT_EQ(service.snapshot(), empty);
  expect_executed(kAlice, 1, 1, "1");  // the counter started over too
}

// Writes a service snapshot field by field, so tests can build ones the writer never would.
struct SnapshotBuilder {
  Bytes out;
  Writer w{out};
  SnapshotBuilder& header(uint8_t version = 2) {
    for (char c : std::string("LSSV"))
      w.u8(static_cast<uint8_t>(c));
    w.u8(version);
    return *this;
  }
  SnapshotBuilder& varint(uint64_t v) {
    w.varint(v);
    return *this;
  }
  SnapshotBuilder& bytes(const Bytes& b) {
    w.bytes(b);
    return *this;
  }
  SnapshotBuilder& machine(const Bytes& b) { return bytes(b); }
};

Bytes empty_kv() {
  return kv::KvMachine{}.snapshot();
}

TEST_F(ServiceTest, BuilderMatchesTheWriter) {
  // Keeps the hand-built snapshots below honest: the builder writes what snapshot() writes.
  expect_executed(kAlice, 2, 1, "1");
  kv::KvMachine machine;
  machine.apply(incr("n"));
  Bytes built = SnapshotBuilder{}
                    .header()
                    .varint(1)
                    .varint(kAlice.value)
                    .varint(1)
                    .varint(0)  // last activity: executed at order time 0
                    .varint(1)
                    .varint(2)
                    .bytes(*service.cached_reply(kAlice, Sequence{2}))
                    .varint(1)
                    .machine(machine.snapshot())
                    .out;
  EXPECT_EQ(built, service.snapshot());
}

TEST_F(ServiceTest, MalformedSnapshotsThrowAndLeaveStateUnchanged) {
  expect_executed(kAlice, 1, 1, "1");
  expect_executed(kBob, 3, 2, "2");
  const Bytes before = service.snapshot();

  Bytes good;
  {
    Service source = make_service();
    source.execute(request(kAlice, 1, 1, "other"));
    source.execute(request(kBob, 1, 1, "other"));
    good = source.snapshot();
  }
  Bytes bad_magic = good;
  bad_magic[0] ^= 1;
  Bytes bad_version = good;
  bad_version[4] = 1;  // the layout before sessions had a last activity
  Bytes trailing = good;
  trailing.push_back(0);
  Bytes reply{1, 2, 3};

  std::vector<std::pair<std::string, Bytes>> cases = {
      {"empty", {}},
      {"bad magic", bad_magic},
      {"bad version", bad_version},
      {"trailing byte", trailing},
      {"forged session count", SnapshotBuilder{}.header().varint(1'000'000'000).out},
      {"clients out of order", SnapshotBuilder{}
                                   .header()
                                   .varint(2)
                                   .varint(9)
                                   .varint(1)
                                   .varint(0)
                                   .varint(0)
                                   .varint(7)
                                   .varint(1)
                                   .varint(0)
                                   .varint(0)
                                   .varint(0)
                                   .machine(empty_kv())
                                   .out},
      {"duplicate client", SnapshotBuilder{}
                               .header()
                               .varint(2)
                               .varint(7)
                               .varint(1)
                               .varint(0)
                               .varint(0)
                               .varint(7)
                               .varint(1)
                               .varint(0)
                               .varint(0)
                               .varint(0)
                               .machine(empty_kv())
                               .out},
      {"sequences out of order", SnapshotBuilder{}
                                     .header()
                                     .varint(1)
                                     .varint(7)
                                     .varint(1)
                                     .varint(0)
                                     .varint(2)
                                     .varint(3)
                                     .bytes(reply)
                                     .varint(2)
                                     .bytes(reply)
                                     .varint(0)
                                     .machine(empty_kv())
                                     .out},
      {"reply below watermark", SnapshotBuilder{}
                                    .header()
                                    .varint(1)
                                    .varint(7)
                                    .varint(5)
                                    .varint(0)
                                    .varint(1)
                                    .varint(4)
                                    .bytes(reply)
                                    .varint(0)
                                    .machine(empty_kv())
                                    .out},
      {"reply count over the limit", SnapshotBuilder{}
                                         .header()
                                         .varint(1)
                                         .varint(7)
                                         .varint(1)
                                         .varint(0)
                                         .varint(Service::kRepliesPerClientMax + 1)
                                         .out},
      {"no machine", SnapshotBuilder{}.header().varint(0).varint(0).out},
      // Everything else parses; only the machine's part is bad. The session table must not have
      // been swapped in before the machine refused.
      {"machine refuses", SnapshotBuilder{}
                              .header()
                              .varint(1)
                              .varint(7)
                              .varint(1)
                              .varint(0)
                              .varint(0)
                              .varint(0)
                              .machine(Bytes{99})
                              .out},
  };
  for (size_t cut = 0; cut < good.size(); ++cut) {
    cases.emplace_back("truncated at " + std::to_string(cut),
                       Bytes(good.begin(), good.begin() + static_cast<ptrdiff_t>(cut)));
  }
  for (const auto& [name, bytes] : cases) {
    SCOPED_TRACE(name);
    EXPECT_THROW(service.restore(bytes), SnapshotError);
    EXPECT_EQ(service.snapshot(), before);
    EXPECT_EQ(service.executed_count(), 2u);
  }
  // The good snapshot itself is accepted, so each failure above is about its damage.
  service.restore(good);
  EXPECT_EQ(service.snapshot(), good);
}

TEST_F(ServiceTest, ByteFlipsEitherThrowWithoutChangeOrGiveAUsableState) {
  expect_executed(kAlice, 1, 1, "1");
  const Bytes before = service.snapshot();
  Bytes good;
  {
    Service source = make_service();
    source.execute(request(kAlice, 1, 1, "xyz"));
    source.execute(request(kBob, 2, 1, "xyz"));
    good = source.snapshot();
  }
  int thrown = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      Bytes corrupt = good;
      corrupt[i] ^= mask;
      Service target = make_service();
      target.restore(before);
      try {
        target.restore(corrupt);
        // Accepted (e.g. a flipped reply byte): then it is a state that round-trips.
        Service copy = make_service();
        copy.restore(target.snapshot());
        EXPECT_EQ(copy.snapshot(), target.snapshot()) << "byte " << i;
      } catch (const SnapshotError&) {
        ++thrown;
        EXPECT_EQ(target.snapshot(), before) << "byte " << i;
      }
    }
  }
  EXPECT_GT(thrown, 0);
}

TEST(ServiceDigestTest, SameHistorySameDigestDifferentStateDifferentDigest) {
  Service a = make_service();
  Service b = make_service();
  EXPECT_EQ(a.digest(), b.digest());
  for (uint64_t s = 1; s <= 20; ++s) {
    a.execute(request(kAlice, s, s > 3 ? s - 3 : 1, "k" + std::to_string(s % 4)));
    b.execute(request(kAlice, s, s > 3 ? s - 3 : 1, "k" + std::to_string(s % 4)));
  }
  EXPECT_EQ(a.digest(), b.digest());

  // One more execution changes it.
  a.execute(request(kBob, 1, 1));
  EXPECT_NE(a.digest(), b.digest());
  b.execute(request(kBob, 1, 1));
  EXPECT_EQ(a.digest(), b.digest());

  // Same machine state, different session tables: different digests.
  Service c = make_service();
  Service d = make_service();
  c.execute(request(kAlice, 1, 1));
  d.execute(request(kBob, 1, 1));
  EXPECT_NE(c.digest(), d.digest());

  // A duplicate changes nothing; a watermark-only advance does.
  uint64_t digest_before = a.digest();
  a.execute(request(kBob, 1, 1));
  EXPECT_EQ(a.digest(), digest_before);
  a.execute(request(kAlice, 20, 20));
  EXPECT_NE(a.digest(), digest_before);
}

// ---- session expiry -------------------------------------------------------------------------

constexpr uint64_t kExpiryUs = 1000;

Service make_limited_service(size_t sessions_max = size_t{1} << 20) {
  return Service(std::make_unique<kv::KvMachine>(),
                 ServiceOptions{.session_idle_expiry_us = kExpiryUs, .sessions_max = sessions_max});
}

Service::Result run_at(Service& service, uint64_t order_time_us, ClientId client, uint64_t sequence,
                       uint64_t acked_below = 1) {
  return service.execute(request(client, sequence, acked_below), order_time_us);
}

TEST(ServiceExpiryTest, IdleSessionIsForgottenOnceTheOrderPassesItsExpiry) {
  Service service = make_limited_service();
  EXPECT_EQ(run_at(service, 0, kAlice, 1).outcome, Outcome::kExecuted);
  // Exactly the expiry later is not "longer than" it: Alice's retry is still a duplicate.
  EXPECT_EQ(run_at(service, kExpiryUs, kBob, 1).outcome, Outcome::kExecuted);
  EXPECT_EQ(service.last_activity_us(kAlice), 0u);
  EXPECT_EQ(service.session_count(), 2u);
  // Bob's next request is ordered past Alice's expiry: her session goes, his stays.
  EXPECT_EQ(run_at(service, kExpiryUs + 1, kBob, 2).outcome, Outcome::kExecuted);
  EXPECT_FALSE(service.last_activity_us(kAlice).has_value());
  EXPECT_FALSE(service.cached_reply(kAlice, Sequence{1}).has_value());
  EXPECT_EQ(service.session_count(), 1u);
  EXPECT_EQ(service.sessions_expired(), 1u);
  // The documented price: a retry after the expiry runs again (the counter moves from 3 to 4).
  Service::Result again = run_at(service, kExpiryUs + 2, kAlice, 1);
  EXPECT_EQ(again.outcome, Outcome::kExecuted);
  EXPECT_EQ(value_of(again.reply), "4");
}

TEST(ServiceExpiryTest, EveryOrderedRequestKeepsTheSessionAlive) {
  Service service = make_limited_service();
  run_at(service, 0, kAlice, 1);
  // Duplicates and new requests alike, each within the expiry of the previous one.
  for (uint64_t t = 600, s = 1; t <= 6000; t += 600, ++s) {
    Service::Result result = run_at(service, t, kAlice, s % 2 == 0 ? s : 1);
    EXPECT_NE(result.outcome, Outcome::kStale) << t;
    run_at(service, t, kBob, s);  // Bob's requests drive the sweep too
  }
  EXPECT_EQ(service.sessions_expired(), 0u);
  EXPECT_TRUE(service.cached_reply(kAlice, Sequence{1}).has_value());
}

TEST(ServiceExpiryTest, SweepIsBoundedButTheRequestersOwnSessionIsAlwaysChecked) {
  Service service = make_limited_service();
  const uint64_t clients = 3 * Service::kExpiriesPerExecuteMax;
  for (uint64_t c = 1; c <= clients; ++c)
    run_at(service, 0, ClientId{c}, 1);
  // The last client (the newest entry of the index) comes back after the expiry: its own stale
  // session is not kept just because the sweep stopped early.
  Service::Result result = run_at(service, 5000, ClientId{clients}, 1);
  EXPECT_EQ(result.outcome, Outcome::kExecuted);
  EXPECT_EQ(service.sessions_expired(), Service::kExpiriesPerExecuteMax + 1);
  EXPECT_EQ(service.session_count(), clients - Service::kExpiriesPerExecuteMax);
  // Each later request takes another bounded bite until only the active sessions are left.
  run_at(service, 5001, kAlice, 1);
  EXPECT_EQ(service.sessions_expired(), 2 * Service::kExpiriesPerExecuteMax + 1);
  run_at(service, 5002, kAlice, 2);
  run_at(service, 5003, kAlice, 3);
  EXPECT_EQ(service.sessions_expired(), clients);
  EXPECT_EQ(service.session_count(), 2u);  // the returning client and Alice
}

TEST(ServiceExpiryTest, FullTableEvictsTheLeastRecentlyActiveSession) {
  Service service = make_limited_service(3);
  run_at(service, 1, ClientId{1}, 1);
  run_at(service, 2, ClientId{2}, 1);
  run_at(service, 3, ClientId{3}, 1);
  run_at(service, 4, ClientId{1}, 1);  // a duplicate, but activity: client 1 is now the newest
  run_at(service, 5, ClientId{4}, 1);
  EXPECT_EQ(service.session_count(), 3u);
  EXPECT_FALSE(service.last_activity_us(ClientId{2}).has_value());
  EXPECT_TRUE(service.cached_reply(ClientId{1}, Sequence{1}).has_value());
  EXPECT_TRUE(service.cached_reply(ClientId{3}, Sequence{1}).has_value());
  EXPECT_EQ(service.last_activity_us(ClientId{4}), 5u);
  // A known client does not evict anyone.
  run_at(service, 6, ClientId{3}, 2);
  EXPECT_EQ(service.session_count(), 3u);
  EXPECT_EQ(service.sessions_expired(), 1u);
}

TEST(ServiceExpiryTest, OrderTimeThatGoesBackIsTreatedAsTheLatest) {
  Service service = make_limited_service();
  run_at(service, 500, kAlice, 1);
  run_at(service, 100, kBob, 1);
  EXPECT_EQ(service.last_activity_us(kBob), 500u);
}

TEST(ServiceExpiryTest, ReplicasWithTheSameOrderForgetTheSameSessions) {
  Service a = make_limited_service(4);
  Service b = make_limited_service(4);
  for (uint64_t i = 1; i <= 200; ++i) {
    const ClientId client{i * 7919 % 13};
    const uint64_t time_us = i * 97;
    a.execute(request(client, i, i), time_us);
    b.execute(request(client, i, i), time_us);
    ASSERT_EQ(a.digest(), b.digest()) << i;
  }
  EXPECT_GT(a.sessions_expired(), 0u);

  // A restored copy carries the activity times, so it goes on expiring exactly like the original.
  Service copy = make_limited_service(4);
  copy.restore(a.snapshot());
  EXPECT_EQ(copy.snapshot(), a.snapshot());
  for (uint64_t i = 201; i <= 260; ++i) {
    const ClientId client{i % 5};
    a.execute(request(client, i, i), i * 500);
    copy.execute(request(client, i, i), i * 500);
    ASSERT_EQ(a.digest(), copy.digest()) << i;
  }
}

TEST(ServiceExpiryTest, RestoreRefusesMoreSessionsThanTheLimit) {
  Service source = make_limited_service(3);
  for (uint64_t c = 1; c <= 3; ++c)
    run_at(source, c, ClientId{c}, 1);
  Service tight = make_limited_service(2);
  const Bytes before = tight.snapshot();
  EXPECT_THROW(tight.restore(source.snapshot()), SnapshotError);
  EXPECT_EQ(tight.snapshot(), before);
  Service roomy = make_limited_service(3);
  roomy.restore(source.snapshot());
  EXPECT_EQ(roomy.session_count(), 3u);
}

}  // namespace
}  // namespace lockstep
