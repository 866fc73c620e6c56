// An adversarial review of the byzantine core against docs/DESIGN.md §11. Each failing test is a
// finding: a scenario inside the model (at most t faulty replicas holding only their own keys,
// lying clients, Δ and ε respected between honest replicas) in which the core breaks a property
// §11.4 claims. The passing tests pin boundary properties the review checked and found sound.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "byzantine_fixture.h"

namespace lockstep::byzantine {
namespace {

using namespace testing;  // NOLINT: the fixture's constants and helpers

class ByzantineReviewTest : public ByzantineFixture {};

// Delivers every message each core sends to its destination at `deliver_us`, until quiet.
// Messages to replicas outside `cores` (the faulty ones) are dropped.
void exchange(const std::vector<Core*>& cores, uint64_t send_us, uint64_t deliver_us) {
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

// ---- findings (these fail until the core is fixed) ------------------------------------------

// Finding 1 (safety). The endorsement memo is keyed by (signer, digest) only, and chain_valid
// memoises each signature as soon as it checks, even when a later one in the same chain fails.
// Faulty origin 0 first sends r1 a chain [0: valid, 2: garbage] (rejected, but 0's signature is
// now memoised), then [0: garbage]: r1 accepts it from the memo and relays the garbage signature
// with its own. r2, which never checked 0's signature, rejects the relay as a bad chain. r1
// decides the value and executes it; r2 decides nothing.
TEST_F(ByzantineReviewTest, ReviewEndorsementMemoMustNotVouchForAnUncheckedSignature) {
  Core r1(options_for(1)), r2(options_for(2));
  const uint64_t tau = 1'000'000;
  const std::vector<ClientRequest> requests{request(1, 1, "smuggled")};

  SignedProposal primes_the_memo = signed_by_origin(0, tau, requests);
  endorse(primes_the_memo, 2);
  primes_the_memo.chain[1].signature[0] ^= 1;
  r1.on_message(at(tau + 10), ReplicaId{0}, primes_the_memo);
  EXPECT_EQ(r1.rejections().bad_chain, 1u);

  SignedProposal forged = signed_by_origin(0, tau, requests);
  forged.chain[0].signature[0] ^= 1;  // not 0's signature: no honest replica may accept this
  r1.on_message(at(tau + 20), ReplicaId{0}, forged);
  exchange({&r1, &r2}, tau + 30, tau + 40);

  r1.tick(at(end_of_round(tau, 2) + 1));
  r2.tick(at(end_of_round(tau, 2) + 1));
  const auto e1 = commands_of(r1.take_executable());
  const auto e2 = commands_of(r2.take_executable());
  EXPECT_EQ(e1, e2) << "honest replicas executed different sequences";
  EXPECT_EQ(r1.rejections().bad_chain, 2u) << "a chain with a forged origin signature";
  r1.check_invariants();
  r2.check_invariants();
}

// Finding 2 (safety). propose() always takes the first request even when its command alone is
// larger than proposal_bytes_max, but every receiver rejects such a proposal as oversized. The
// honest owner holds its own value and executes it; nobody else ever holds it. A client (lying
// or not) triggers it with one command larger than proposal_bytes_max (1 MiB by default; frames
// carry 16 MiB). Each backup proposer then executes it alone too, at its own point in the order.
TEST_F(ByzantineReviewTest, ReviewARequestLargerThanAProposalIsNotExecutedByItsOwnerAlone) {
  std::vector<Options> options{options_for(0), options_for(1), options_for(2)};
  for (Options& o : options)
    o.proposal_bytes_max = 8;
  Core r0(options[0]), r1(options[1]), r2(options[2]);
  std::vector<Core*> all{&r0, &r1, &r2};
  const uint64_t start = 1'000'000;
  const ClientRequest big = request(session_owned_by(r0, 0), 1, "more than eight bytes");
  for (Core* c : all)
    c->on_client_request(at(start), big);
  exchange(all, start + 10, start + 20);

  // Run past the owner's decision, then past the backups' relay timeout and their decision; an
  // entry is compared with its place in the order, not only its command.
  std::vector<std::vector<std::string>> executed(all.size());
  const uint64_t backups_due = start + r1.options().relay_timeout_us + 1;
  for (uint64_t now : {end_of_round(start, 2) + 1, backups_due}) {
    for (Core* c : all)
      c->tick(at(now));
    exchange(all, now + 10, now + 20);
    for (size_t i = 0; i < all.size(); ++i) {
      all[i]->tick(at(end_of_round(now + 10, 2) + 1));
      for (const OrderedEntry& e : all[i]->take_executable()) {
        executed[i].push_back(to_string(e.request.command) + " at (" +
                              std::to_string(e.timestamp.clock) + ", " +
                              std::to_string(e.timestamp.source.value) + ")");
      }
      all[i]->check_invariants();
    }
  }
  EXPECT_EQ(executed[0], executed[1]) << "the owner executed a value nobody else accepted";
  EXPECT_EQ(executed[1], executed[2]);
}

// Finding 3 (liveness). on_client_request drops a request whose (client, sequence) sits inside
// any undecided accepted value: the owner does not queue it and a non-owner keeps no backup. A
// faulty replica that got the request first (client links may lose or delay) puts it into an
// equivocating instance every ~D; every honest replica then holds it "in an instance" at every
// moment, drops every retry of the client, and never proposes it: it starves forever, although
// §11.4.7 says backups step in. Here the client's session is owned by faulty replica 0.
TEST_F(ByzantineReviewTest, ReviewARequestInsideAnEquivocatedInstanceIsStillBackedUp) {
  Core r1(options_for(1)), r2(options_for(2));
  const ClientRequest wanted = request(session_owned_by(r1, 0), 1, "wanted");
  const uint64_t start = 1'000'000;
  std::vector<std::string> executed1, executed2;
  // Two seconds, about 40 relay timeouts; the client retries every 10 ms.
  for (uint64_t step = 0; step < 200; ++step) {
    const uint64_t tau = start + step * 10'000;
    // Faulty origin 0 equivocates: {wanted} to r1, {wanted, wanted} to r2.
    r1.on_message(at(tau + 10), ReplicaId{0}, signed_by_origin(0, tau, {wanted}));
    r2.on_message(at(tau + 10), ReplicaId{0}, signed_by_origin(0, tau, {wanted, wanted}));
    exchange({&r1, &r2}, tau + 20, tau + 30);
    r1.on_client_request(at(tau + 40), wanted);
    r2.on_client_request(at(tau + 40), wanted);
    r1.tick(at(tau + 50));
    r2.tick(at(tau + 50));
    exchange({&r1, &r2}, tau + 60, tau + 70);
    for (const auto& c : commands_of(r1.take_executable()))
      executed1.push_back(c);
    for (const auto& c : commands_of(r2.take_executable()))
      executed2.push_back(c);
    r1.check_invariants();
    r2.check_invariants();
  }
  EXPECT_GT(r1.rejections().equivocations, 100u);
  EXPECT_FALSE(executed1.empty()) << "an honest client's request starved at r1";
  EXPECT_EQ(executed1, executed2);
}

// Same attack on a client whose owner is honest (r1): r1 never queues the request.
TEST_F(ByzantineReviewTest, ReviewAnHonestOwnerQueuesARequestAFaultyReplicaIsEquivocatingOn) {
  Core r1(options_for(1)), r2(options_for(2));
  const ClientRequest wanted = request(session_owned_by(r1, 1), 1, "wanted");
  const uint64_t tau = 1'000'000;
  r1.on_message(at(tau + 10), ReplicaId{0}, signed_by_origin(0, tau, {wanted}));
  r2.on_message(at(tau + 10), ReplicaId{0}, signed_by_origin(0, tau, {wanted, wanted}));
  exchange({&r1, &r2}, tau + 20, tau + 30);
  r1.on_client_request(at(tau + 40), wanted);
  r2.on_client_request(at(tau + 40), wanted);
  // r1 owns it: its next proposal must carry it (r2 would back it up only after relay_timeout).
  auto sent = r1.take_messages(at(tau + 200));
  const bool proposed = std::any_of(sent.begin(), sent.end(), [&](const OrderingCore::Send& s) {
    const auto* p = std::get_if<SignedProposal>(&s.message);
    return p != nullptr && p->proposal.origin == ReplicaId{1} &&
           std::find(p->proposal.requests.begin(), p->proposal.requests.end(), wanted) !=
               p->proposal.requests.end();
  });
  EXPECT_TRUE(proposed) << "the honest owner dropped its own client's request";
  EXPECT_EQ(r2.backup_count(), 1u) << "the non-owner kept no backup";
}

// Finding 4 (robustness). The owner's queue of requests to propose (unproposed_) has no bound:
// backups stop at backups_max, but an owned client that sends faster than one proposal per
// take_messages drains grows it without limit, and nothing answers kBusy. (§11.5 says floods are
// "bounded by the per-proposal limits and backups_max".)
TEST_F(ByzantineReviewTest, ReviewTheOwnersQueueIsBoundedLikeTheBackups) {
  Options o = options_for(0);
  o.requests_per_proposal_max = 4;
  o.backups_max = 64;
  Core r0(o);
  const uint32_t session = session_owned_by(r0, 0);
  uint64_t sequence = 0;
  for (uint64_t slot = 0; slot < 500; ++slot) {
    const uint64_t now = 1'000'000 + slot * kSlotUs;
    for (int i = 0; i < 8; ++i)
      r0.on_client_request(at(now), request(session, ++sequence, "flood"));
    r0.take_messages(at(now));
    r0.tick(at(now));
    r0.take_executable();
  }
  r0.check_invariants();
  // Held entries: one decision window of proposals plus a bounded queue.
  const size_t in_window = (kSlotUs + 2 * kD) / kSlotUs * o.requests_per_proposal_max;
  EXPECT_LE(r0.pending_entries(), in_window + o.backups_max);
}

// ---- properties checked and found sound (these pass) ----------------------------------------

// A value first seen with t+1 signatures exactly at the decision time is accepted and decided;
// one tick later it is too late; and the decision is taken only strictly after it.
TEST_F(ByzantineReviewTest, ReviewTheLastAcceptedMomentIsTheDecisionTimeAndNotLater) {
  Core r1(options_for(1));
  const uint64_t tau = 1'000'000;
  EXPECT_EQ(r1.decision_time_us(tau), end_of_round(tau, 2));
  SignedProposal on_time = signed_by_origin(0, tau, {request(1, 1, "on time")});
  endorse(on_time, 2);
  SignedProposal too_late = signed_by_origin(2, tau, {request(1, 2, "too late")});
  endorse(too_late, 0);
  r1.on_message(at(end_of_round(tau, 2)), ReplicaId{2}, on_time);
  r1.check_invariants();
  EXPECT_TRUE(r1.take_executable().empty()) << "not decided at the decision time itself";
  r1.on_message(at(end_of_round(tau, 2) + 1), ReplicaId{0}, too_late);
  EXPECT_EQ(r1.rejections().outside_window, 1u);
  EXPECT_EQ(commands_of(r1.take_executable()), std::vector<std::string>{"on time"});
  // A chain longer than t+1 gets no longer window: still too late.
  SignedProposal three = signed_by_origin(2, tau + kSlotUs, {request(1, 3, "three")});
  endorse(three, 0);
  endorse(three, 1);
  r1.on_message(at(end_of_round(tau + kSlotUs, 2) + 1), ReplicaId{0}, three);
  EXPECT_EQ(r1.rejections().outside_window, 2u);
  r1.check_invariants();
}

// The monotone clamp: a wall clock that steps back after a decision does not reopen the window,
// and a value for a lower instance (same τ, lower origin) is refused once a higher one decided.
TEST_F(ByzantineReviewTest, ReviewAClockStepBackReopensNoWindow) {
  Core r1(options_for(1));
  const uint64_t tau = 1'000'000;
  SignedProposal from_2 = signed_by_origin(2, tau, {request(1, 1, "decided")});
  r1.on_message(at(tau + 10), ReplicaId{2}, from_2);
  r1.tick(at(end_of_round(tau, 2) + 1));
  EXPECT_EQ(commands_of(r1.take_executable()), std::vector<std::string>{"decided"});
  SignedProposal from_0 = signed_by_origin(0, tau, {request(1, 2, "reopened")});
  endorse(from_0, 2);
  // The wall clock jumps back into the round-2 window of (τ, 0).
  r1.on_message(at(tau + 20), ReplicaId{2}, from_0);
  EXPECT_EQ(r1.rejections().outside_window, 1u);
  r1.tick(at(end_of_round(tau, 2) + 1000));
  EXPECT_TRUE(r1.take_executable().empty());
  r1.check_invariants();
}

// Duplicated (client, sequence) inside one proposal and an empty proposal: both decide alike,
// every copy reaches the session table (which runs the first), nothing is miscounted.
TEST_F(ByzantineReviewTest, ReviewDuplicateAndEmptyProposalsDecideWithoutHarm) {
  Core r1(options_for(1)), r2(options_for(2));
  const uint64_t tau = 1'000'000;
  const ClientRequest a = request(1, 1, "a");
  ClientRequest a_other = request(1, 1, "a'");  // the client signed two for sequence 1
  for (Core* c : {&r1, &r2}) {
    c->on_message(at(tau + 10), ReplicaId{0}, signed_by_origin(0, tau, {a, a, a_other}));
    c->on_message(at(tau + 10), ReplicaId{0}, signed_by_origin(0, tau + kSlotUs, {}));
  }
  exchange({&r1, &r2}, tau + 20, tau + 30);
  r1.check_invariants();
  r1.tick(at(end_of_round(tau + kSlotUs, 2) + 1));
  r2.tick(at(end_of_round(tau + kSlotUs, 2) + 1));
  const auto e1 = commands_of(r1.take_executable());
  EXPECT_EQ(e1, (std::vector<std::string>{"a", "a", "a'"}));
  EXPECT_EQ(e1, commands_of(r2.take_executable()));
  EXPECT_EQ(r1.rejections().client_equivocations, 1u);
  EXPECT_EQ(r1.pending_entries(), 0u);
  r1.check_invariants();
  r2.check_invariants();
}

// The two-value cap: a third value of an equivocating instance is neither held nor relayed, and
// the instance decides empty.
TEST_F(ByzantineReviewTest, ReviewAThirdValueIsNeitherHeldNorRelayed) {
  Core r1(options_for(1));
  const uint64_t tau = 1'000'000;
  for (uint64_t sequence : {1, 2, 3}) {
    r1.on_message(at(tau + 10), ReplicaId{0},
                  signed_by_origin(0, tau, {request(1, sequence, "v")}));
  }
  const auto sent = r1.take_messages(at(tau + 20));
  EXPECT_EQ(sent.size(), 2u) << "two values relayed to replica 2, the third dropped";
  EXPECT_EQ(r1.pending_entries(), 2u);
  r1.check_invariants();
  r1.tick(at(end_of_round(tau, 2) + 1));
  EXPECT_TRUE(r1.take_executable().empty());
  EXPECT_EQ(r1.rejections().equivocations, 1u);
}

// The relay rule with t = 2: a chain [0, 3] reaching r1 is relayed, signed by r1, to exactly the
// replicas that have not signed it (2 and 4); a chain of t+1 = 3 is accepted but not relayed.
TEST_F(ByzantineReviewTest, ReviewRelaysGoOnlyToNonSignersAndStopAtTPlusOne) {
  Core r1(options_for(1, 5));
  const uint64_t tau = 1'000'000;
  SignedProposal two = signed_by_origin(0, tau, {request(1, 1, "two")});
  endorse(two, 3);
  r1.on_message(at(tau + 10), ReplicaId{3}, two);
  auto sent = r1.take_messages(at(tau + 20));
  std::vector<uint32_t> to;
  for (const auto& s : sent) {
    to.push_back(s.to.value);
    const auto& chain = std::get<SignedProposal>(s.message).chain;
    ASSERT_EQ(chain.size(), 3u);
    EXPECT_EQ(chain.back().signer, ReplicaId{1});
  }
  std::sort(to.begin(), to.end());
  EXPECT_EQ(to, (std::vector<uint32_t>{2, 4}));

  SignedProposal three = signed_by_origin(0, tau + kSlotUs, {request(1, 2, "three")});
  endorse(three, 3);
  endorse(three, 4);
  r1.on_message(at(tau + 30), ReplicaId{4}, three);
  EXPECT_TRUE(r1.take_messages(at(tau + 40)).empty());
  EXPECT_EQ(r1.pending_entries(), 2u);
  r1.check_invariants();
}

}  // namespace
}  // namespace lockstep::byzantine
