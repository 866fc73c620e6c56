// The byzantine core driven by hand: a tiny network with explicit delivery times, so each test
// can place a message exactly where the Dolev–Strong windows make it interesting.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "byzantine_fixture.h"

namespace lockstep::byzantine {
namespace {

using namespace testing;  // NOLINT: the fixture's constants and helpers

// The last local time at which a chain of m signatures is accepted, for an instance stamped 0.
constexpr uint64_t round_end(uint64_t m) {
  return kSlotUs + m * kD;
}

class ByzantineCoreTest : public ByzantineFixture {};

// Delivers every message each core sends to its destination at `deliver_us`, until quiet.
void exchange(std::vector<Core*> cores, uint64_t send_us, uint64_t deliver_us) {
  for (int round = 0; round < 8; ++round) {
    std::vector<std::pair<ReplicaId, OrderingCore::Send>> in_flight;
    for (Core* core : cores) {
      for (auto& send : core->take_messages(at(send_us)))
        in_flight.emplace_back(core->id(), std::move(send));
    }
    if (in_flight.empty()) return;
    for (auto& [from, send] : in_flight) {
      for (Core* core : cores) {
        if (core->id() == send.to) core->on_message(at(deliver_us), from, send.message);
      }
    }
  }
}

TEST_F(ByzantineCoreTest, HonestReplicasExecuteTheSameOrderOnlyAfterTheDecisionTime) {
  Core r0(options_for(0)), r1(options_for(1)), r2(options_for(2));
  std::vector<Core*> all{&r0, &r1, &r2};
  const uint64_t start = 1'000'000;
  // Two clients, owned by different replicas, each sending to every replica.
  const ClientRequest a = request(session_owned_by(r0, 0), 1, "a");
  const ClientRequest b = request(session_owned_by(r0, 1), 1, "b");
  for (Core* c : all) {
    c->on_client_request(at(start), a);
    c->on_client_request(at(start + 5), b);
  }
  exchange(all, start + 10, start + 500);
  for (Core* c : all) {
    c->tick(at(start + round_end(2)));
    EXPECT_TRUE(c->take_executable().empty()) << "nothing runs before τ + (t+1)·D";
  }
  std::vector<std::vector<std::string>> executed;
  for (Core* c : all) {
    c->tick(at(start + 10 + round_end(2) + 1));
    executed.push_back(commands_of(c->take_executable()));
    c->check_invariants();
  }
  EXPECT_EQ(executed[0], (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(executed[1], executed[0]);
  EXPECT_EQ(executed[2], executed[0]);
}

TEST_F(ByzantineCoreTest, AnOriginThatEquivocatesGetsNothingDecidedAnywhere) {
  Core r1(options_for(1)), r2(options_for(2));
  const uint64_t tau = 1'000'000;
  // Faulty replica 0 signs two different proposals for one instance, one to each honest replica.
  r1.on_message(at(tau + 100), ReplicaId{0}, signed_by_origin(0, tau, {request(1, 1, "x")}));
  r2.on_message(at(tau + 100), ReplicaId{0}, signed_by_origin(0, tau, {request(1, 1, "y")}));
  exchange({&r1, &r2}, tau + 200, tau + 300);
  r1.tick(at(tau + round_end(2) + 1));
  r2.tick(at(tau + round_end(2) + 1));
  EXPECT_TRUE(r1.take_executable().empty());
  EXPECT_TRUE(r2.take_executable().empty());
  EXPECT_EQ(r1.rejections().equivocations, 1u);
  EXPECT_EQ(r2.rejections().equivocations, 1u);
  r1.check_invariants();
  r2.check_invariants();
}

TEST_F(ByzantineCoreTest, AValueShownToOneHonestReplicaAtTheLastMomentReachesTheOtherInTime) {
  Core r1(options_for(1)), r2(options_for(2));
  const uint64_t tau = 1'000'000;
  // Round 1 closes at τ + D on r1's clock; r1 accepts just then and relays. r2's clock runs ε
  // ahead and the relay takes Δ: r2 sees it at τ + 2D on its clock, the last moment of round 2.
  r1.on_message(at(tau + round_end(1)), ReplicaId{0},
                signed_by_origin(0, tau, {request(1, 1, "late")}));
  auto relayed = r1.take_messages(at(tau + round_end(1)));
  ASSERT_EQ(relayed.size(), 1u) << "relayed to the one honest replica that has not signed";
  EXPECT_EQ(relayed[0].to, ReplicaId{2});
  r2.on_message(at(tau + round_end(2)), ReplicaId{1}, relayed[0].message);
  r1.tick(at(tau + round_end(2) + 1));
  r2.tick(at(tau + round_end(2) + 1));
  EXPECT_EQ(commands_of(r1.take_executable()), std::vector<std::string>{"late"});
  EXPECT_EQ(commands_of(r2.take_executable()), std::vector<std::string>{"late"});
}

TEST_F(ByzantineCoreTest, WindowsRejectLateAndEarlyValues) {
  Core r1(options_for(1));
  const uint64_t tau = 1'000'000;
  r1.on_message(at(tau + round_end(1) + 1), ReplicaId{0},
                signed_by_origin(0, tau, {request(1, 1, "old")}));
  r1.on_message(at(tau - kEpsilonUs - 1), ReplicaId{0},
                signed_by_origin(0, tau, {request(1, 2, "future")}));
  EXPECT_EQ(r1.rejections().outside_window, 2u);
  // With two signatures, the window is one round longer.
  SignedProposal two = signed_by_origin(0, tau, {request(1, 3, "relayed")});
  endorse(two, 2);
  r1.on_message(at(tau + round_end(2)), ReplicaId{2}, two);
  EXPECT_EQ(r1.rejections().outside_window, 2u);
  r1.tick(at(tau + round_end(2) + 1));
  EXPECT_EQ(commands_of(r1.take_executable()), std::vector<std::string>{"relayed"});
  // A replay of a decided instance is outside every window.
  r1.on_message(at(tau + round_end(2) + 2), ReplicaId{2}, two);
  EXPECT_EQ(r1.rejections().outside_window, 3u);
  r1.check_invariants();
}

TEST_F(ByzantineCoreTest, ForgedChainsAndUnsignedRequestsAreRejected) {
  Core r1(options_for(1));
  const uint64_t tau = 1'000'000;
  SignedProposal forged = signed_by_origin(0, tau, {request(1, 1, "x")});
  forged.chain[0].signature[5] ^= 1;
  r1.on_message(at(tau + 10), ReplicaId{0}, forged);
  SignedProposal wrong_origin = signed_by_origin(2, tau, {request(1, 1, "x")});
  wrong_origin.proposal.origin = ReplicaId{0};
  r1.on_message(at(tau + 10), ReplicaId{0}, wrong_origin);
  SignedProposal repeated = signed_by_origin(0, tau + 100, {request(1, 1, "x")});
  repeated.chain.push_back(repeated.chain[0]);
  r1.on_message(at(tau + 10), ReplicaId{0}, repeated);
  EXPECT_EQ(r1.rejections().bad_chain, 3u);
  // Timestamps off the slot grid open no instance.
  r1.on_message(at(tau + 10), ReplicaId{0}, signed_by_origin(0, tau + 1, {request(1, 1, "x")}));
  EXPECT_EQ(r1.rejections().off_slot, 1u);

  // A faulty origin may put a forged client request in a validly signed proposal: every honest
  // replica skips that request (and only it).
  ClientRequest bad = request(1, 2, "forged");
  bad.command = to_bytes("changed");
  SignedProposal mixed = signed_by_origin(0, tau + 200, {request(1, 3, "fine"), bad});
  r1.on_message(at(tau + 10), ReplicaId{0}, mixed);
  r1.tick(at(tau + 200 + round_end(2) + 1));
  EXPECT_EQ(commands_of(r1.take_executable()), std::vector<std::string>{"fine"});
  EXPECT_EQ(r1.rejections().bad_client_signature, 1u);
  r1.check_invariants();
}

TEST_F(ByzantineCoreTest, ABackupIsProposedWhenTheOwnerStaysSilent) {
  Core r1(options_for(1)), r2(options_for(2));
  const uint64_t start = 1'000'000;
  const ClientRequest owned_by_0 = request(session_owned_by(r1, 0), 1, "orphan");
  r1.on_client_request(at(start), owned_by_0);
  r2.on_client_request(at(start), owned_by_0);
  exchange({&r1, &r2}, start + 10, start + 20);
  EXPECT_EQ(r1.backup_count(), 1u);
  const uint64_t timeout = 2 * round_end(2);
  r1.tick(at(start + timeout + 1));
  r2.tick(at(start + timeout + 1));
  exchange({&r1, &r2}, start + timeout + 2, start + timeout + 100);
  r1.tick(at(start + timeout + 2 + round_end(2) + 1));
  r2.tick(at(start + timeout + 2 + round_end(2) + 1));
  // Both proposed it; it runs twice in the order and the session table keeps the second from
  // taking effect.
  const auto e1 = commands_of(r1.take_executable());
  EXPECT_FALSE(e1.empty());
  EXPECT_EQ(e1, commands_of(r2.take_executable()));
  EXPECT_EQ(r1.backup_count(), 0u);
  r1.check_invariants();
  r2.check_invariants();
}

TEST_F(ByzantineCoreTest, AClientThatSignsTwoRequestsForOneSequenceIsCounted) {
  Core r1(options_for(1));
  const uint64_t tau = 1'000'000;
  r1.on_message(at(tau + 10), ReplicaId{0}, signed_by_origin(0, tau, {request(1, 1, "first")}));
  r1.on_message(at(tau + 10), ReplicaId{2},
                signed_by_origin(2, tau + 100, {request(1, 1, "second")}));
  r1.tick(at(tau + 100 + round_end(2) + 1));
  // Both are in the order (every honest replica has both); the session table runs the first.
  EXPECT_EQ(commands_of(r1.take_executable()), (std::vector<std::string>{"first", "second"}));
  EXPECT_EQ(r1.rejections().client_equivocations, 1u);
}

// Faulty replica 0 shows value A to r1 early and value B to r2 at the end of round 1. r2 relays B
// to r1, which gets it at the end of round 2: both must end with "equivocated, nothing".
std::pair<std::vector<std::string>, std::vector<std::string>> late_equivocation(
    Core& r1, Core& r2, const SignedProposal& a, const SignedProposal& b, uint64_t tau) {
  r1.on_message(at(tau + 1), ReplicaId{0}, a);
  for (auto& send : r1.take_messages(at(tau + 1))) {
    if (send.to == ReplicaId{2}) r2.on_message(at(tau + 100), ReplicaId{1}, send.message);
  }
  r1.tick(at(tau + round_end(1) + 1));
  r2.on_message(at(tau + round_end(1)), ReplicaId{0}, b);
  for (auto& send : r2.take_messages(at(tau + round_end(1)))) {
    if (send.to == ReplicaId{1}) r1.on_message(at(tau + round_end(2)), ReplicaId{2}, send.message);
  }
  r1.tick(at(tau + round_end(2) + 1));
  r2.tick(at(tau + round_end(2) + 1));
  return {commands_of(r1.take_executable()), commands_of(r2.take_executable())};
}

TEST_F(ByzantineCoreTest, AnEquivocationRevealedInTheLastRoundStillDecidesAlike) {
  Core r1(options_for(1)), r2(options_for(2));
  const uint64_t tau = 1'000'000;
  auto [e1, e2] = late_equivocation(r1, r2, signed_by_origin(0, tau, {request(1, 1, "A")}),
                                    signed_by_origin(0, tau, {request(1, 1, "B")}), tau);
  EXPECT_TRUE(e1.empty());
  EXPECT_TRUE(e2.empty());
  EXPECT_EQ(r1.rejections().equivocations, 1u);
  EXPECT_EQ(r2.rejections().equivocations, 1u);
}

TEST_F(ByzantineCoreTest, PlantedEarlyDecisionLetsHonestReplicasDiverge) {
  Options o1 = options_for(1), o2 = options_for(2);
  o1.planted.decide_early = o2.planted.decide_early = true;
  Core r1(o1), r2(o2);
  const uint64_t tau = 1'000'000;
  auto [e1, e2] = late_equivocation(r1, r2, signed_by_origin(0, tau, {request(1, 1, "A")}),
                                    signed_by_origin(0, tau, {request(1, 1, "B")}), tau);
  EXPECT_NE(e1, e2);
}

}  // namespace
}  // namespace lockstep::byzantine
