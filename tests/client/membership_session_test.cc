// ClientSession with byzantine membership changes (client/core/client_session.h,
// docs/DESIGN.md §11.9): which replies count as votes, for which configuration, and how many it
// takes: t_e+1 members of one configuration e, whatever epochs their replies state.
#include <gtest/gtest.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "client/certificate.h"
#include "client/core/client_session.h"
#include "client/core/membership_learner.h"
#include "crypto/membership.h"
#include "crypto/signing.h"

namespace lockstep {
namespace {

constexpr uint32_t kListed = 5;
constexpr uint32_t kPrincipal = 7;
const ClientId kClient = client_id_of(kPrincipal, 1);

crypto::KeyPair key_pair(uint8_t seed_byte) {
  std::array<uint8_t, 32> seed{};
  seed[0] = seed_byte;
  return crypto::derive_key_pair(crypto::Scheme::kEd25519, seed);
}

std::vector<ReplicaId> ids(std::initializer_list<uint32_t> values) {
  std::vector<ReplicaId> out;
  for (uint32_t v : values)
    out.push_back(ReplicaId{v});
  return out;
}

class MembershipSessionTest : public ::testing::Test {
 protected:
  MembershipSessionTest()
      : admin_(crypto::make_signer(crypto::Scheme::kEd25519, key_pair(50))),
        client_signer_(crypto::make_signer(crypto::Scheme::kEd25519, key_pair(60))) {
    crypto::KeyDirectory directory;
    for (uint32_t r = 0; r < kListed; ++r) {
      const crypto::KeyPair keys = key_pair(static_cast<uint8_t>(1 + r));
      directory.replicas.push_back(keys.public_key);
      replica_signers_.push_back(crypto::make_signer(crypto::Scheme::kEd25519, keys));
    }
    directory.clients.emplace(kAdminPrincipal, key_pair(50).public_key);
    directory.clients.emplace(kPrincipal, key_pair(60).public_key);
    verifier_ = crypto::make_verifier(crypto::Scheme::kEd25519, directory);
  }

  // A session of a cluster listing 5 replicas whose epoch 0 has `initial` members.
  std::unique_ptr<ClientSession> session(std::vector<ReplicaId> initial) const {
    ClientOptions options;
    options.replica_count = kListed;
    options.reply_quorum = faults_tolerated(initial.size()) + 1;
    options.initial_members = std::move(initial);
    options.membership_verifier = verifier_.get();
    options.signer = client_signer_.get();
    return std::make_unique<ClientSession>(kClient, options);
  }

  // The administrator's signed change to `epoch` (signed by `signer`, the administrator's key
  // unless a test forges one).
  ClientRequest change(uint64_t epoch, std::vector<ReplicaId> members,
                       const crypto::Signer* signer = nullptr, uint64_t effective_us = 0) const {
    if (effective_us == 0) effective_us = epoch * 1000;
    ClientRequest request{client_id_of(kAdminPrincipal, 1),
                          Sequence{epoch},
                          Sequence{epoch},
                          encode_configuration_change({epoch, std::move(members), effective_us}),
                          {}};
    crypto::sign_request(signer != nullptr ? *signer : *admin_, request);
    return request;
  }

  // `changes` as replicas `from` each attached them; true when one of them taught an epoch.
  static bool vouch(ClientSession& s, const std::vector<ClientRequest>& changes,
                    std::initializer_list<uint32_t> from) {
    bool learnt = false;
    for (uint32_t replica : from)
      learnt = s.learn_membership(ReplicaId{replica}, changes) || learnt;
    return learnt;
  }

  static ClientReply reply(Sequence sequence, uint32_t replica, const std::string& result,
                           uint64_t epoch) {
    return ClientReply{kClient,          sequence,         ReplicaId{replica},
                       ReplyStatus::kOk, to_bytes(result), epoch};
  }

  // Replica `replica`'s signed statement of `r` alone in its batch.
  ReplyProof prove(const ClientReply& r) const {
    const SignedReplies batch =
        crypto::sign_replies(*replica_signers_[r.replica.value], r.replica, {r});
    return ReplyProof{r.replica, {crypto::reply_digest(r)}, 0, batch.signature, r.epoch};
  }

  std::unique_ptr<crypto::Signer> admin_;
  std::unique_ptr<crypto::Signer> client_signer_;
  std::vector<std::unique_ptr<crypto::Signer>> replica_signers_;
  std::unique_ptr<crypto::Verifier> verifier_;
};

TEST_F(MembershipSessionTest, OnlyMembersOfAKnownConfigurationVote) {
  auto s = session(ids({0, 1, 2}));  // 3 and 4 are spares
  const Sequence seq = s->submit(0, to_bytes("get k"));
  EXPECT_EQ(s->take_sends().size(), kListed) << "requests go to every listed replica";
  s->on_reply(1, reply(seq, 3, "v", 0));  // a spare claiming epoch 0
  s->on_reply(1, reply(seq, 0, "v", 0));
  EXPECT_TRUE(s->take_completions().empty()) << "the spare's reply must not make up the quorum";
  EXPECT_EQ(s->non_member_replies(), 1u);
  s->on_reply(1, reply(seq, 1, "v", 0));
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(to_string(done[0].result), "v");
}

TEST_F(MembershipSessionTest, UnknownEpochIsKeptAndCountedOnceLearnt) {
  auto s = session(ids({0, 1, 2}));
  const Sequence seq = s->submit(0, to_bytes("put k v"));
  // Epoch 1 adds 3 and 4: t = 2, so three replies of epoch 1 are needed.
  for (uint32_t r : {3u, 4u}) {
    const ClientReply r1 = reply(seq, r, "ok", 1);
    const ReplyProof proof = prove(r1);
    s->on_reply(1, r1, &proof);
  }
  EXPECT_TRUE(s->take_completions().empty()) << "epoch 1 is unknown: nothing counts yet";
  EXPECT_EQ(s->non_member_replies(), 2u) << "members of no known configuration, for now";
  EXPECT_FALSE(s->learn_membership(ReplicaId{0}, {change(1, ids({0, 1, 2, 3, 4}))}))
      << "one member's word is not enough";
  EXPECT_TRUE(s->learn_membership(ReplicaId{1}, {change(1, ids({0, 1, 2, 3, 4}))}));
  EXPECT_EQ(s->schedule().latest().epoch, 1u);
  EXPECT_TRUE(s->take_completions().empty()) << "two replies of an epoch with t = 2";
  const ClientReply third = reply(seq, 0, "ok", 1);
  const ReplyProof proof = prove(third);
  s->on_reply(2, third, &proof);
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u);
  ASSERT_TRUE(done[0].certificate.has_value());
  EXPECT_EQ(done[0].certificate->proofs.size(), 3u);
  EXPECT_EQ(done[0].certificate->reply.epoch, 1u);
  EXPECT_EQ(done[0].certificate->membership_changes.size(), 1u);
  // The certificate checks offline the same way, with the changes it carries.
  std::string why;
  EXPECT_TRUE(verify_certificate(*done[0].certificate, *verifier_, 2, &why, ids({0, 1, 2}))) << why;
  ReplyCertificate without_changes = *done[0].certificate;
  without_changes.membership_changes.clear();
  EXPECT_FALSE(verify_certificate(without_changes, *verifier_, 2, &why, ids({0, 1, 2})));
  EXPECT_NE(why.find("1 of the 2 signatures needed"), std::string::npos)
      << "only replica 0 is a member of epoch 0: " << why;
}

TEST_F(MembershipSessionTest, LearningCompletesWhatWasWaiting) {
  auto s = session(ids({0, 1, 2}));
  const Sequence seq = s->submit(0, to_bytes("put k v"));
  // Epoch 1 replaces 2 by 3 (t stays 1): two replies of epoch 1, both from its members.
  s->on_reply(1, reply(seq, 0, "ok", 1));
  s->on_reply(1, reply(seq, 3, "ok", 1));
  EXPECT_TRUE(s->take_completions().empty());
  EXPECT_TRUE(vouch(*s, {change(1, ids({0, 1, 3}))}, {0, 1}));
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u) << "the kept votes are recounted when the epoch is learnt";
  EXPECT_EQ(to_string(done[0].result), "ok");
}

TEST_F(MembershipSessionTest, VotesOfTwoConfigurationsDoNotAddUp) {
  // The reviewer's scenario. Epoch 0 = {0,1,2}, epoch 1 = {0,1,3}, each with t = 1 and at most
  // one faulty member: 2 (faulty, only in epoch 0) and 3 (faulty, only in epoch 1) sign the same
  // lie. Two votes, each from a member of the epoch it states, but no configuration has two
  // members among them, so no correct replica vouches for the lie.
  auto s = session(ids({0, 1, 2}));
  ASSERT_TRUE(vouch(*s, {change(1, ids({0, 1, 3}))}, {0, 1}));
  const Sequence seq = s->submit(0, to_bytes("get k"));
  const ClientReply from_2 = reply(seq, 2, "X", 0);
  const ClientReply from_3 = reply(seq, 3, "X", 1);
  const ReplyProof proof_2 = prove(from_2);
  const ReplyProof proof_3 = prove(from_3);
  s->on_reply(1, from_2, &proof_2);
  s->on_reply(1, from_3, &proof_3);
  EXPECT_TRUE(s->take_completions().empty()) << "one member of each configuration is not t+1";
  EXPECT_EQ(s->non_member_replies(), 0u);
  // The correct members of both configurations answer the truth; their cached replies state
  // their current epoch.
  for (uint32_t r : {0u, 1u}) {
    const ClientReply truth = reply(seq, r, "Y", 1);
    const ReplyProof proof = prove(truth);
    s->on_reply(2, truth, &proof);
  }
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(to_string(done[0].result), "Y");
  ASSERT_EQ(done[0].dissent.size(), 2u) << "both liars are reported";
  EXPECT_EQ(done[0].dissent[0].replica, ReplicaId{2});
  EXPECT_EQ(done[0].dissent[1].replica, ReplicaId{3});
  EXPECT_EQ(to_string(done[0].dissent[1].result), "X");
  ASSERT_TRUE(done[0].certificate.has_value());
  std::string why;
  EXPECT_TRUE(verify_certificate(*done[0].certificate, *verifier_, 2, &why, ids({0, 1, 2}))) << why;
}

TEST_F(MembershipSessionTest, ARequestOfTheOldConfigurationCompletesAfterAChangeRaisesT) {
  // Epoch 0: {0,1,2}, t = 1. Epoch 1: all five, t = 2, already known when the request is sent.
  // The request may still be ordered in epoch 0, whose two correct members are enough: waiting
  // for three would stall it if 2 is faulty and 3 and 4 never saw it.
  auto s = session(ids({0, 1, 2}));
  ASSERT_TRUE(vouch(*s, {change(1, ids({0, 1, 2, 3, 4}))}, {0, 1}));
  const Sequence seq = s->submit(0, to_bytes("get k"));
  s->on_reply(1, reply(seq, 0, "v", 0));
  s->on_reply(1, reply(seq, 0, "v", 1));  // its cached reply again, stating its newer epoch
  EXPECT_TRUE(s->take_completions().empty()) << "one replica, however many times";
  s->on_reply(1, reply(seq, 1, "v", 1));
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u) << "t+1 members of epoch 0, whatever epoch they state";
  EXPECT_TRUE(done[0].dissent.empty()) << "restating the epoch is not a different answer";

  // Members only of epoch 1 need three of epoch 1's members.
  const Sequence other = s->submit(0, to_bytes("get j"));
  s->on_reply(1, reply(other, 3, "w", 1));
  s->on_reply(1, reply(other, 4, "w", 1));
  EXPECT_TRUE(s->take_completions().empty()) << "2 of the 3 that epoch 1 needs";
  s->on_reply(1, reply(other, 2, "w", 0));
  EXPECT_EQ(s->take_completions().size(), 1u) << "2 is a member of epoch 1 too";
}

TEST_F(MembershipSessionTest, EachConfigurationCountsItsOwnMembers) {
  // Epoch 0: all five (t = 2); epoch 1: {0,1,2} (t = 1).
  auto s = session(ids({0, 1, 2, 3, 4}));
  ASSERT_TRUE(vouch(*s, {change(1, ids({0, 1, 2}))}, {0, 1, 2}));
  const Sequence first = s->submit(0, to_bytes("a"));
  s->on_reply(1, reply(first, 0, "x", 0));
  s->on_reply(1, reply(first, 1, "x", 0));
  EXPECT_EQ(s->take_completions().size(), 1u) << "two members of epoch 1, whatever they state";

  // 3 and 4 are members of epoch 0 only: two of the three it needs.
  const Sequence second = s->submit(0, to_bytes("b"));
  s->on_reply(1, reply(second, 3, "y", 0));
  s->on_reply(1, reply(second, 4, "y", 1));
  EXPECT_TRUE(s->take_completions().empty()) << "epoch 0 tolerates 2 faults";
  s->on_reply(1, reply(second, 2, "y", 1));
  EXPECT_EQ(s->take_completions().size(), 1u) << "3 members of epoch 0";

  // One member of epoch 0 only and one of both: not enough for either, until another member of
  // epoch 1 agrees; the certificate then holds epoch 1's members' proofs alone.
  const Sequence third = s->submit(0, to_bytes("c"));
  for (uint32_t r : {3u, 0u, 1u}) {
    EXPECT_TRUE(s->take_completions().empty()) << "before replica " << r;
    const ClientReply answer = reply(third, r, "z", r == 3 ? 0 : 1);
    const ReplyProof proof = prove(answer);
    s->on_reply(1, answer, &proof);
  }
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u);
  ASSERT_TRUE(done[0].certificate.has_value());
  ASSERT_EQ(done[0].certificate->proofs.size(), 2u);
  EXPECT_EQ(done[0].certificate->proofs[0].replica, ReplicaId{0});
  EXPECT_EQ(done[0].certificate->proofs[1].replica, ReplicaId{1});
  EXPECT_EQ(done[0].certificate->reply.epoch, 1u);
  std::string why;
  EXPECT_TRUE(verify_certificate(*done[0].certificate, *verifier_, 3, &why, ids({0, 1, 2, 3, 4})))
      << why;
}

TEST_F(MembershipSessionTest, ARemovedMemberCountsOnlyWithinItsOldConfiguration) {
  // Replicas 3 and 4 were removed in epoch 1 and now lie; their replies claim epoch 1, in
  // which they are not members. They still count for epoch 0 (a replica signs any epoch it
  // likes), where two liars of five are within t = 2 and short of the three it needs.
  auto s = session(ids({0, 1, 2, 3, 4}));
  ASSERT_TRUE(vouch(*s, {change(1, ids({0, 1, 2}))}, {0, 1, 2}));
  const Sequence seq = s->submit(0, to_bytes("get k"));
  s->on_reply(1, reply(seq, 3, "lie", 1));
  s->on_reply(1, reply(seq, 4, "lie", 0));
  EXPECT_TRUE(s->take_completions().empty());
  EXPECT_EQ(s->non_member_replies(), 0u) << "members of epoch 0";
  s->on_reply(1, reply(seq, 1, "truth", 1));
  EXPECT_TRUE(s->take_completions().empty());
  s->on_reply(1, reply(seq, 2, "truth", 1));
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(to_string(done[0].result), "truth");
  ASSERT_EQ(done[0].dissent.size(), 2u);
  EXPECT_EQ(done[0].dissent[0].replica, ReplicaId{3});
  EXPECT_EQ(done[0].dissent[1].replica, ReplicaId{4});
}

TEST_F(MembershipSessionTest, AKeptReplyOfANonMemberStaysUncountedWhenTheLearntEpochOmitsIt) {
  auto s = session(ids({0, 1, 2}));
  const Sequence seq = s->submit(0, to_bytes("get k"));
  // Replica 4 claims an epoch 1 that, once learnt, does not include it.
  s->on_reply(1, reply(seq, 4, "lie", 1));
  s->on_reply(1, reply(seq, 0, "lie", 1));
  ASSERT_TRUE(vouch(*s, {change(1, ids({0, 1, 2}))}, {0, 1}));
  EXPECT_TRUE(s->take_completions().empty());
  s->on_reply(1, reply(seq, 1, "truth", 1));
  s->on_reply(1, reply(seq, 2, "truth", 1));
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(to_string(done[0].result), "truth");
}

TEST_F(MembershipSessionTest, ChangesThatDoNotCheckAreRefused) {
  auto s = session(ids({0, 1, 2}));
  // Each shown by two members (enough vouchers) but not a valid change: signed by an ordinary
  // client's key, not the administrator's...
  EXPECT_FALSE(vouch(*s, {change(1, ids({0, 1, 3}), client_signer_.get())}, {0, 1}));
  EXPECT_EQ(s->refused_membership_changes(), 1u);
  // ...epochs that skip one (refused as each replica shows it)...
  EXPECT_FALSE(vouch(*s, {change(2, ids({0, 1, 3}))}, {0, 1}));
  EXPECT_EQ(s->refused_membership_changes(), 3u);
  // ...a replica the cluster file does not list...
  EXPECT_FALSE(vouch(*s, {change(1, ids({0, 1, 7}))}, {0, 1}));
  // ...tampered after signing.
  ClientRequest tampered = change(1, ids({0, 1, 3}));
  tampered.command = encode_configuration_change({1, ids({0, 3, 4}), 1000});
  EXPECT_FALSE(vouch(*s, {tampered}, {0, 1}));
  EXPECT_EQ(s->refused_membership_changes(), 5u);
  EXPECT_EQ(s->schedule().latest().epoch, 0u);

  ASSERT_TRUE(vouch(*s, {change(1, ids({0, 1, 3}))}, {0, 1}));
  // The same again teaches nothing; a history with another change for epoch 1 is refused.
  EXPECT_FALSE(vouch(*s, {change(1, ids({0, 1, 3}))}, {0, 1, 2}));
  EXPECT_FALSE(vouch(*s, {change(1, ids({2, 3, 4})), change(2, ids({0, 1, 2}))}, {0, 1}));
  EXPECT_EQ(s->schedule().latest().members, ids({0, 1, 3}));
  EXPECT_EQ(s->refused_membership_changes(), 7u);
  // A later epoch is vouched for by the members of epoch 1 ({0, 1, 3}): replica 2 is not one.
  const std::vector<ClientRequest> two = {change(1, ids({0, 1, 3})), change(2, ids({1, 3, 4}))};
  EXPECT_FALSE(vouch(*s, two, {2, 0}));
  EXPECT_TRUE(vouch(*s, two, {3}));
  EXPECT_EQ(s->schedule().latest().epoch, 2u);
}

TEST_F(MembershipSessionTest, WithoutTheAdministratorsKeyNoChangeIsLearnt) {
  ClientOptions options;
  options.replica_count = kListed;
  options.reply_quorum = 2;
  options.initial_members = ids({0, 1, 2});
  ClientSession s(kClient, options);
  EXPECT_FALSE(vouch(s, {change(1, ids({0, 1, 3}))}, {0, 1, 2}));
  EXPECT_EQ(s.refused_membership_changes(), 3u);
  EXPECT_EQ(s.schedule().latest().epoch, 0u);
}

TEST_F(MembershipSessionTest, ARefusedChangeShownFirstIsNotAdoptedTheResignedOneIs) {
  // The administrator signed epoch 1 = {0, 1, 3} effective at 1000 µs; the replicas refused it
  // (too soon) and it was re-signed effective at 5000 µs, which the order adopted. Faulty member
  // 2 and spare 4 show the refused one first.
  const ClientRequest refused = change(1, ids({0, 1, 3}), nullptr, 1000);
  const ClientRequest resigned = change(1, ids({0, 1, 3}), nullptr, 5000);
  auto s = session(ids({0, 1, 2}));
  const Sequence seq = s->submit(0, to_bytes("get k"));
  s->on_reply(1, reply(seq, 0, "v", 1));
  s->on_reply(1, reply(seq, 3, "v", 1));
  EXPECT_FALSE(vouch(*s, {refused}, {2, 4}));
  EXPECT_EQ(s->schedule().latest().epoch, 0u) << "one member and a spare are not t+1 members";
  EXPECT_TRUE(s->take_completions().empty());
  // The correct members show the change the order adopted.
  EXPECT_FALSE(vouch(*s, {resigned}, {0}));
  EXPECT_EQ(s->schedule().latest().epoch, 0u) << "one vote for each: neither is vouched for";
  EXPECT_TRUE(vouch(*s, {resigned}, {1}));
  EXPECT_EQ(s->schedule().latest().epoch, 1u);
  EXPECT_EQ(s->schedule().latest().from_us, 5000u);
  EXPECT_EQ(s->schedule().proofs(), std::vector<ClientRequest>{resigned});
  auto done = s->take_completions();
  ASSERT_EQ(done.size(), 1u) << "the replies kept for epoch 1 count now";
  ASSERT_TRUE(done[0].certificate.has_value());
  EXPECT_EQ(done[0].certificate->membership_changes, std::vector<ClientRequest>{resigned});
  // The faulty replica's history now contradicts the adopted one: refused, nothing changes.
  const uint64_t refusals = s->refused_membership_changes();
  EXPECT_FALSE(vouch(*s, {refused, change(2, ids({0, 1, 2}))}, {2}));
  EXPECT_EQ(s->refused_membership_changes(), refusals + 1);
  EXPECT_EQ(s->schedule().latest().from_us, 5000u);
}

TEST_F(MembershipSessionTest, AReplicaShowingTwoChangesForOneEpochIsCountedOnce) {
  // Epoch 0: all five, t = 2: three members must vouch.
  const ClientRequest first = change(1, ids({0, 1, 2}), nullptr, 1000);
  const ClientRequest second = change(1, ids({0, 1, 2}), nullptr, 2000);
  auto s = session(ids({0, 1, 2, 3, 4}));
  EXPECT_FALSE(vouch(*s, {first}, {0}));
  EXPECT_FALSE(vouch(*s, {second}, {0}));
  EXPECT_EQ(s->refused_membership_changes(), 1u) << "its second change is refused";
  EXPECT_FALSE(vouch(*s, {second}, {1, 2}));
  EXPECT_EQ(s->schedule().latest().epoch, 0u) << "replica 0 vouches for its first change only";
  EXPECT_FALSE(vouch(*s, {first}, {1, 2}));
  EXPECT_EQ(s->schedule().latest().epoch, 0u) << "nor can 1 and 2 switch to the first one";
  EXPECT_TRUE(vouch(*s, {second}, {3}));
  EXPECT_EQ(s->schedule().latest().from_us, 2000u);
}

TEST_F(MembershipSessionTest, ASessionBehindLearnsSeveralEpochsFromTheSameOffers) {
  // Epoch 1 adds 3 and 4 (t = 2); epoch 2 keeps {1, 2, 3}. Epoch 1 is vouched for by two
  // members of epoch 0, epoch 2 by three members of epoch 1, counting offers made before epoch 1
  // was known.
  const std::vector<ClientRequest> both = {change(1, ids({0, 1, 2, 3, 4})),
                                           change(2, ids({1, 2, 3}))};
  auto s = session(ids({0, 1, 2}));
  EXPECT_FALSE(vouch(*s, both, {3, 4}));  // not members of epoch 0: no vote for epoch 1 yet
  EXPECT_EQ(s->schedule().latest().epoch, 0u);
  EXPECT_FALSE(vouch(*s, both, {0}));
  EXPECT_TRUE(vouch(*s, both, {1}));
  EXPECT_EQ(s->schedule().latest().epoch, 2u) << "3, 4, 0 and 1 vouched for epoch 2 already";
}

TEST_F(MembershipSessionTest, CandidatesAreBoundedPerReplicaAndEpoch) {
  MembershipLearner learner(ids({0, 1, 2}), 1, kListed, verifier_.get());
  for (uint64_t effective = 1000; effective < 1100; ++effective) {
    EXPECT_FALSE(learner.offer(ReplicaId{2}, {change(1, ids({0, 1, 3}), nullptr, effective)}));
  }
  EXPECT_EQ(learner.candidate_count(), 1u);
  EXPECT_EQ(learner.refused(), 99u);
  // A long made-up history is kept only kEpochsAhead epochs deep.
  std::vector<ClientRequest> history;
  for (uint64_t epoch = 1; epoch <= 3 * MembershipLearner::kEpochsAhead; ++epoch)
    history.push_back(change(epoch, ids({0, 1, 3}), nullptr, epoch * 1000));
  EXPECT_FALSE(learner.offer(ReplicaId{4}, history));
  EXPECT_EQ(learner.candidate_count(), 1 + MembershipLearner::kEpochsAhead);
  // Replica ids outside the cluster file are ignored.
  EXPECT_FALSE(learner.offer(ReplicaId{kListed}, history));
  EXPECT_EQ(learner.candidate_count(), 1 + MembershipLearner::kEpochsAhead);
}

TEST_F(MembershipSessionTest, CertificateNeedsTPlusOneMembersOfOneConfiguration) {
  // Epoch 0: {0,1,2} (t = 1); epoch 1: all five (t = 2).
  const std::vector<ClientRequest> changes = {change(1, ids({0, 1, 2, 3, 4}))};
  ReplyCertificate certificate;
  certificate.reply = reply(Sequence{4}, 0, "v", 0);
  certificate.proofs = {prove(reply(Sequence{4}, 0, "v", 0)), prove(reply(Sequence{4}, 1, "v", 1))};
  std::string why;
  EXPECT_TRUE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2}))) << why;
  certificate.membership_changes = changes;
  EXPECT_TRUE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2})))
      << "two members of epoch 0 still prove its output once epoch 1 raised t: " << why;
  // Members of epoch 1 alone need three.
  certificate.reply = reply(Sequence{4}, 3, "v", 1);
  certificate.proofs = {prove(reply(Sequence{4}, 3, "v", 1)), prove(reply(Sequence{4}, 4, "v", 1))};
  EXPECT_FALSE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2})));
  EXPECT_NE(why.find("2 of the 3 signatures needed"), std::string::npos) << why;
  EXPECT_NE(why.find("epoch 1"), std::string::npos) << why;
  certificate.proofs.push_back(prove(reply(Sequence{4}, 2, "v", 0)));
  EXPECT_TRUE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2}))) << why;
  // A proof's epoch is signed: restating it breaks the digest.
  certificate.proofs.back().epoch = 1;
  EXPECT_FALSE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2})));
  EXPECT_NE(why.find("not this reply's"), std::string::npos) << why;
  // A forged change poisons the whole certificate.
  certificate.proofs.back().epoch = 0;
  certificate.membership_changes = {change(1, ids({0, 1, 2, 3, 4}), client_signer_.get())};
  EXPECT_FALSE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2})));
  EXPECT_NE(why.find("membership_changes"), std::string::npos) << why;
}

TEST_F(MembershipSessionTest, CertificateOfMixedEpochsDoesNotAddUpConfigurations) {
  // The reviewer's scenario offline: epoch 0 = {0,1,2}, epoch 1 = {0,1,3}; 2 and 3 each signed
  // the reply stating an epoch they are members of. No configuration has two of them.
  ReplyCertificate certificate;
  certificate.reply = reply(Sequence{9}, 2, "X", 0);
  certificate.proofs = {prove(reply(Sequence{9}, 2, "X", 0)), prove(reply(Sequence{9}, 3, "X", 1))};
  certificate.membership_changes = {change(1, ids({0, 1, 3}))};
  std::string why;
  EXPECT_FALSE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2})));
  EXPECT_NE(why.find("1 of the 2 signatures needed"), std::string::npos) << why;
  // Members of both, stating different epochs, are two members of either.
  certificate.reply = reply(Sequence{9}, 0, "X", 1);
  certificate.proofs = {prove(reply(Sequence{9}, 0, "X", 1)), prove(reply(Sequence{9}, 1, "X", 0))};
  EXPECT_TRUE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2}))) << why;
  // A spare's valid proof is no forgery, but counts for nothing.
  certificate.proofs = {prove(reply(Sequence{9}, 0, "X", 1)), prove(reply(Sequence{9}, 4, "X", 1))};
  EXPECT_FALSE(verify_certificate(certificate, *verifier_, 2, &why, ids({0, 1, 2})));
  EXPECT_NE(why.find("1 of the 2 signatures needed"), std::string::npos) << why;
  EXPECT_NE(why.find("signers outside it: 1"), std::string::npos) << why;
}

TEST_F(MembershipSessionTest, CertificateJsonKeepsEpochsAndChanges) {
  ReplyCertificate certificate;
  certificate.reply = reply(Sequence{4}, 3, "v", 1);
  certificate.proofs = {prove(reply(Sequence{4}, 3, "v", 1)), prove(reply(Sequence{4}, 0, "v", 0))};
  certificate.membership_changes = {change(1, ids({0, 1, 3}))};
  const std::string text = certificate_to_json(certificate);
  ReplyCertificate back = certificate_from_json(text, "test");
  // The reply's replica and epoch are not stored: each proof's stand for them.
  back.reply.replica = certificate.reply.replica;
  back.reply.epoch = certificate.reply.epoch;
  EXPECT_EQ(back, certificate);
  // A certificate of a cluster that never changed reads and writes as before: no epochs.
  ReplyCertificate plain;
  plain.reply = reply(Sequence{4}, 0, "v", 0);
  plain.proofs = {prove(plain.reply)};
  const std::string plain_text = certificate_to_json(plain);
  EXPECT_EQ(plain_text.find("epoch"), std::string::npos) << plain_text;
  EXPECT_EQ(plain_text.find("membership_changes"), std::string::npos) << plain_text;
}

}  // namespace
}  // namespace lockstep
