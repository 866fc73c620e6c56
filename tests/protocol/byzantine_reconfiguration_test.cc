// Byzantine membership changes signed by an administrator (docs/DESIGN.md §11.9), on cores driven
// by hand: a spare added at a checkpoint boundary catches up and serves, a removed member halts
// after voting there, invalid changes are refused alike everywhere, t follows the membership with
// decision times kept monotone, and a spare started after the change still catches up.
#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>

#include "byzantine_fixture.h"
#include "crypto/membership.h"

namespace lockstep::byzantine::testing {
namespace {

constexpr uint64_t kIntervalUs = 100'000;
constexpr uint32_t kSessions = 16;
constexpr uint32_t kAdminSession = 1;

std::vector<ReplicaId> replicas(std::initializer_list<uint32_t> values) {
  std::vector<ReplicaId> out;
  for (uint32_t v : values)
    out.push_back(ReplicaId{v});
  return out;
}

// Cores on a network that delivers everything 1 ms after it is sent, clocks in step; `listed`
// replicas, of which the first configuration's members start with the (empty) state and the rest
// are spares catching up. Each replica's "service" is the list of commands it executed (an
// administrator's request contributes its output, as the session table records it); its snapshot
// is that list joined.
class ReconfigurationCluster : public ByzantineFixture {
 protected:
  struct Node {
    std::unique_ptr<Core> core;
    std::vector<std::string> state;
    std::map<uint64_t, std::string> system_outputs;  // by the administrator's sequence number
    std::optional<std::pair<uint64_t, Bytes>> snapshot;
    std::optional<uint64_t> loaded_boundary_us;
    size_t state_size_at_load = 0;
    uint64_t serving_since_us = 0;
    uint64_t votes_received = 0;
    uint64_t relays_signed = 0;  // values of other origins it endorsed and sent on
    uint64_t halted_at_us = 0;
  };

  ReconfigurationCluster()
      : admin_keys_(crypto::derive_key_pair(crypto::Scheme::kEd25519, seed_of(77))),
        admin_signer_(crypto::make_signer(crypto::Scheme::kEd25519, admin_keys_)) {}

  void start(uint32_t listed, std::vector<ReplicaId> first_members,
             const std::set<uint32_t>& started_later = {}) {
    ASSERT_LE(listed, kKeys);
    listed_ = listed;
    first_members_ = std::move(first_members);
    crypto::KeyDirectory directory;
    for (uint32_t r = 0; r < listed; ++r)
      directory.replicas.push_back(keys_[r].public_key);
    directory.clients.emplace(kPrincipal, client_keys_.public_key);
    directory.clients.emplace(kAdminPrincipal, admin_keys_.public_key);
    verifier_ = crypto::make_verifier(crypto::Scheme::kEd25519, std::move(directory));
    nodes_.resize(listed);
    for (uint32_t r = 0; r < listed; ++r) {
      if (!started_later.contains(r)) start_replica(r);
    }
  }

  void start_replica(uint32_t r) {
    Options o;
    o.self = ReplicaId{r};
    o.replica_count = listed_;
    o.members = first_members_;
    o.t = faults_tolerated(first_members_.size());
    o.delta_us = kDeltaUs;
    o.epsilon_us = kEpsilonUs;
    o.slot_us = kSlotUs;
    o.checkpoint_interval_us = kIntervalUs;
    o.signer = signers_[r].get();
    o.verifier = verifier_.get();
    nodes_[r] = Node{};
    nodes_[r].core = std::make_unique<Core>(o);
  }

  Core& core(uint32_t r) { return *nodes_[r].core; }
  // Started and not halted: a halted replica's runtime stops its loop (replica_server.cc).
  bool running(uint32_t r) const { return nodes_[r].core && nodes_[r].halted_at_us == 0; }

  // An administrator's output as the state holds it: the sequence number keeps the session
  // table's part (which outputs were given) in the snapshot.
  static std::string system_line(uint64_t sequence, const std::string& output) {
    return "system:" + std::to_string(sequence) + ":" + output;
  }

  static Bytes snapshot_of(const std::vector<std::string>& state) {
    std::string joined;
    for (const std::string& command : state)
      joined += command + ";";
    return to_bytes(joined);
  }

  void run_entries(uint32_t r) {
    Node& node = nodes_[r];
    for (const OrderedEntry& e : node.core->take_executable()) {
      // As Replica::execute_entries: the administrator's request yields the core's output.
      if (std::optional<Bytes> output = node.core->take_system_output(e)) {
        // The session table keeps the first output; a later copy is answered with it.
        if (node.system_outputs.emplace(e.request.sequence.value, to_string(*output)).second)
          node.state.push_back(system_line(e.request.sequence.value, to_string(*output)));
      } else {
        node.state.push_back(to_string(e.request.command));
      }
    }
  }

  void execute(uint32_t r) {
    Node& node = nodes_[r];
    run_entries(r);
    while (auto boundary = node.core->take_checkpoint_boundary()) {
      node.snapshot = {*boundary, snapshot_of(node.state)};
      node.core->checkpoint_taken(*boundary, node.snapshot->second);
      run_entries(r);
    }
    if (node.core->halted() && node.halted_at_us == 0) node.halted_at_us = now_us_;
  }

  void send_all(uint32_t r) {
    for (auto& send : nodes_[r].core->take_messages(at(now_us_))) {
      if (const auto* proposal = std::get_if<SignedProposal>(&send.message)) {
        if (proposal->proposal.origin.value != r && proposal->chain.back().signer.value == r)
          ++nodes_[r].relays_signed;
      }
      in_flight_.push_back({now_us_ + 1'000, r, send.to.value, std::move(send.message)});
    }
  }

  void flush(uint32_t r) {
    execute(r);
    send_all(r);
    execute(r);
    send_all(r);  // what the step that halted it produced still leaves (its vote)
    nodes_[r].core->check_invariants();
  }

  void deliver() {
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
      if (it->arrival_us > now_us_) {
        ++it;
        continue;
      }
      const uint32_t to = it->to;
      if (running(to)) {
        Node& node = nodes_[to];
        if (auto* transfer = std::get_if<StateTransfer>(&it->message)) {
          if (node.core->awaits_state()) load(to, *transfer);
        } else {
          if (std::holds_alternative<CheckpointVote>(it->message)) ++node.votes_received;
          node.core->on_message(at(now_us_), ReplicaId{it->from}, it->message);
        }
      }
      it = in_flight_.erase(it);
    }
  }

  void load(uint32_t r, const StateTransfer& transfer) {
    Node& node = nodes_[r];
    try {
      node.core->load_state(at(now_us_), transfer);
    } catch (const std::runtime_error&) {
      ++rejected_loads_;
      return;
    }
    if (!node.core->serving()) {
      ++loads_left_waiting_;  // a core that returns from a load has loaded: a bug
      return;
    }
    // What the Replica does: restore the service from the snapshot.
    node.state.clear();
    const std::string text = to_string(transfer.service_snapshot);
    node.system_outputs.clear();
    for (size_t start = 0, end; (end = text.find(';', start)) != std::string::npos;
         start = end + 1) {
      node.state.push_back(text.substr(start, end - start));
      const std::string& line = node.state.back();
      if (line.starts_with("system:")) {
        const size_t colon = line.find(':', 7);
        node.system_outputs.emplace(std::stoull(line.substr(7, colon - 7)), line.substr(colon + 1));
      }
    }
    node.loaded_boundary_us = transfer.view.value;
    node.state_size_at_load = node.state.size();
    node.serving_since_us = now_us_;
    ++loads_;
  }

  void step() {
    now_us_ += 1'000;
    for (uint32_t r = 0; r < listed_; ++r) {
      if (!running(r)) continue;
      core(r).tick(at(now_us_));
      flush(r);
    }
    deliver();
    for (uint32_t r = 0; r < listed_; ++r) {
      if (running(r)) flush(r);
    }
  }

  // One signed client request, to every replica that serves (the others answer `not serving`).
  void submit(const std::string& command) {
    const ClientRequest r = request(1 + next_session_++ % kSessions, ++next_sequence_, command);
    for (uint32_t id = 0; id < listed_; ++id) {
      if (running(id) && core(id).serving() && core(id).admits(r))
        core(id).on_client_request(at(now_us_), r);
    }
  }

  // Steps until the clock reads `until_us`, one request per step if `label` is not empty (the label
  // and the time in ms).
  void run_until(uint64_t until_us, const std::string& label = "") {
    while (now_us_ < until_us) {
      if (!label.empty()) submit(label + std::to_string(now_us_ / 1'000));
      step();
    }
  }

  ClientRequest admin_request(uint64_t sequence, const ConfigurationChange& change,
                              const crypto::Signer& signer) const {
    ClientRequest r{client_id_of(kAdminPrincipal, kAdminSession),
                    Sequence{sequence},
                    Sequence{1},
                    encode_configuration_change(change),
                    {}};
    crypto::sign_request(signer, r);
    return r;
  }

  // The administrator sends its request to every listed replica that runs, serving or not (a
  // spare learns the change from it). Returns how many admitted it.
  uint32_t submit_admin(const ClientRequest& request) {
    uint32_t admitted = 0;
    for (uint32_t r = 0; r < listed_; ++r) {
      if (!running(r) || !core(r).admits(request)) continue;
      ++admitted;
      core(r).on_client_request(at(now_us_), request);
    }
    return admitted;
  }

  // The first checkpoint boundary at least `ahead_us` after now.
  uint64_t boundary_after(uint64_t ahead_us) const {
    return (now_us_ + ahead_us + kIntervalUs - 1) / kIntervalUs * kIntervalUs;
  }

  std::vector<std::string> suffix(const std::vector<std::string>& state, size_t from) const {
    return from >= state.size() ? std::vector<std::string>{}
                                : std::vector<std::string>(state.begin() + from, state.end());
  }

  crypto::KeyPair admin_keys_;
  std::unique_ptr<crypto::Signer> admin_signer_;
  std::unique_ptr<crypto::Verifier> verifier_;
  uint32_t listed_ = 0;
  std::vector<ReplicaId> first_members_;
  std::vector<Node> nodes_;
  struct InFlight {
    uint64_t arrival_us;
    uint32_t from;
    uint32_t to;
    ReplicaMessage message;
  };
  std::deque<InFlight> in_flight_;
  uint64_t now_us_ = 1'000'000;
  uint32_t next_session_ = 0;
  uint64_t next_sequence_ = 0;
  int loads_ = 0;
  int rejected_loads_ = 0;
  int loads_left_waiting_ = 0;
};

TEST_F(ReconfigurationCluster, AnAddedSpareLoadsAVouchedSnapshotAtTheChangeAndServes) {
  start(4, replicas({0, 1, 2}));
  EXPECT_FALSE(core(3).serving()) << "a spare has no state";
  run_until(now_us_ + 100'000, "a");
  const ConfigurationChange change{1, replicas({0, 1, 2, 3}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(1, change, *admin_signer_)), 4u);
  run_until(change.effective_us - 5'000, "b");
  EXPECT_FALSE(core(3).serving()) << "not before the change takes effect";
  EXPECT_EQ(loads_, 0);
  run_until(change.effective_us + 600'000, "c");
  run_until(now_us_ + 200'000);  // everything submitted is decided and executed

  const std::string expected = describe(change);
  for (uint32_t r = 0; r < 3; ++r) {
    EXPECT_EQ(nodes_[r].system_outputs, (std::map<uint64_t, std::string>{{1, expected}}))
        << "replica " << r;
  }
  for (uint32_t r = 0; r < 4; ++r) {
    const Schedule& schedule = core(r).schedule();
    EXPECT_EQ(core(r).epoch(), 1u) << "replica " << r;
    ASSERT_EQ(schedule.configurations().size(), 2u) << "replica " << r;
    EXPECT_EQ(schedule.at(change.effective_us - 1).members, replicas({0, 1, 2}));
    EXPECT_EQ(schedule.at(change.effective_us).members, replicas({0, 1, 2, 3}));
    EXPECT_EQ(schedule.at(change.effective_us).t, 1u) << "four members still tolerate one";
    EXPECT_EQ(core(r).decision_time_us(change.effective_us), end_of_round(change.effective_us, 2));
    EXPECT_EQ(core(r).rejections().bad_chain, 0u) << "replica " << r << ": 3's chains are valid";
  }
  Node& spare = nodes_[3];
  ASSERT_TRUE(core(3).serving());
  EXPECT_EQ(loads_, 1);
  EXPECT_EQ(rejected_loads_, 0);
  ASSERT_TRUE(spare.loaded_boundary_us.has_value());
  // The votes at E itself reach it (sent to both configurations at a change): the first boundary
  // it may load, so it executes every batch from E on.
  EXPECT_EQ(*spare.loaded_boundary_us, change.effective_us);
  EXPECT_EQ(core(3).rejections().schedule_restarts, 0u) << "it knew the change before loading";
  EXPECT_GT(spare.relays_signed, 0u) << "a member from E on endorses the others' values";
  EXPECT_GT(core(3).checkpoint_us(), *spare.loaded_boundary_us) << "it votes again";

  const std::vector<std::string>& reference = nodes_[0].state;
  EXPECT_NE(std::find(reference.begin(), reference.end(), system_line(1, expected)),
            reference.end());
  EXPECT_EQ(nodes_[1].state, reference);
  EXPECT_EQ(nodes_[2].state, reference);
  EXPECT_EQ(spare.state, reference) << "the snapshot plus what it executed since is the order";
  const std::vector<std::string> executed_by_spare = suffix(spare.state, spare.state_size_at_load);
  EXPECT_GT(executed_by_spare.size(), 400u);
  EXPECT_EQ(executed_by_spare, suffix(reference, spare.state_size_at_load));
  // Every request submitted from E on ran, those the spare owned included. Until the spare
  // serves, the requests it owns reach only the others, and each of them proposes its backup:
  // up to three copies (the session table, not modelled here, runs the first). From then on its
  // owner orders each request alone: exactly once.
  const uint64_t serving_ms = spare.serving_since_us / 1'000;
  for (uint64_t ms = change.effective_us / 1'000; ms < change.effective_us / 1'000 + 600; ++ms) {
    const auto copies = std::count(reference.begin(), reference.end(), "c" + std::to_string(ms));
    if (ms <= serving_ms) {
      EXPECT_GE(copies, 1) << ms;
    } else {
      EXPECT_EQ(copies, 1) << ms;
    }
  }
}

TEST_F(ReconfigurationCluster, ARemovedMemberHaltsAfterVotingAtTheChangeAndTheRestGoOn) {
  start(4, replicas({0, 1, 2, 3}));
  run_until(now_us_ + 100'000, "a");
  const ConfigurationChange change{1, replicas({1, 2, 3}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(1, change, *admin_signer_)), 4u);
  run_until(change.effective_us - 5'000, "b");
  EXPECT_FALSE(core(0).halted()) << "not before the change takes effect";
  run_until(change.effective_us + 300'000, "c");
  run_until(now_us_ + 200'000);

  ASSERT_TRUE(core(0).halted());
  EXPECT_FALSE(core(0).serving());
  EXPECT_GE(nodes_[0].halted_at_us, change.effective_us);
  EXPECT_EQ(core(0).checkpoint_us(), change.effective_us) << "its last vote is at E";
  const std::string expected = describe(change);
  for (uint32_t r = 0; r < 4; ++r) {
    EXPECT_EQ(nodes_[r].system_outputs, (std::map<uint64_t, std::string>{{1, expected}}))
        << "replica " << r;
  }
  const std::vector<std::string>& reference = nodes_[1].state;
  for (uint32_t r = 1; r < 4; ++r) {
    EXPECT_FALSE(core(r).halted());
    EXPECT_TRUE(core(r).serving());
    EXPECT_EQ(core(r).members(), replicas({1, 2, 3}));
    EXPECT_EQ(nodes_[r].state, reference) << "replica " << r;
  }
  // Replica 0 executed exactly the order below E: a prefix of the others'.
  const std::vector<std::string>& removed = nodes_[0].state;
  ASSERT_LT(removed.size(), reference.size());
  EXPECT_TRUE(std::equal(removed.begin(), removed.end(), reference.begin()));
  // Every request submitted after E (to the three) ran once.
  const uint64_t first_after_ms = change.effective_us / 1'000 + 1;
  for (uint64_t ms = first_after_ms; ms < first_after_ms + 290; ++ms) {
    EXPECT_EQ(std::count(reference.begin(), reference.end(), "c" + std::to_string(ms)), 1) << ms;
  }

  // Replica 0 still holds its key, but its proposals from E on are not instances of anyone's.
  const uint64_t slot = now_us_ - now_us_ % kSlotUs;
  const SignedProposal late = signed_by_origin(0, slot, {request(1, 1'000'000, "late")});
  for (uint32_t r = 1; r < 4; ++r) {
    const uint64_t before = core(r).rejections().bad_chain;
    core(r).on_message(at(now_us_), ReplicaId{0}, late);
    EXPECT_EQ(core(r).rejections().bad_chain, before + 1) << "replica " << r;
  }
  run_until(now_us_ + 100'000);
  for (uint32_t r = 1; r < 4; ++r) {
    EXPECT_EQ(std::count(nodes_[r].state.begin(), nodes_[r].state.end(), "late"), 0);
  }
}

TEST_F(ReconfigurationCluster, InvalidChangesAreRefusedAlikeAndLeaveEpochZero) {
  start(4, replicas({0, 1, 2, 3}));
  run_until(now_us_ + 50'000, "a");
  struct Case {
    ConfigurationChange change;
    std::string refusal;  // the output's beginning
  };
  std::vector<Case> cases;
  const uint64_t far = boundary_after(1'000'000);
  cases.push_back(
      {{2, replicas({0, 1, 2}), far}, "refused: epoch 2 does not follow the current epoch 0"});
  cases.push_back({{1, replicas({0, 1, 2}), far + kIntervalUs / 2},
                   "refused: takes effect off the checkpoint grid (100000 µs)"});
  cases.push_back({{1, replicas({0, 1}), far}, "refused: fewer than 3 members (t would be 0)"});
  cases.push_back({{1, replicas({0, 1, 7}), far}, "refused: replica 7 is not listed"});
  uint64_t sequence = 0;
  for (const Case& c : cases) {
    ASSERT_EQ(submit_admin(admin_request(++sequence, c.change, *admin_signer_)), 4u);
    run_until(now_us_ + 50'000, "b");
  }
  // Too soon: 10 ms before a boundary, that boundary is far inside the margin (~42 ms here).
  run_until(now_us_ - now_us_ % kIntervalUs + kIntervalUs - 10'000, "c");
  const ConfigurationChange too_soon{1, replicas({0, 1, 2}), boundary_after(1)};
  ASSERT_EQ(submit_admin(admin_request(++sequence, too_soon, *admin_signer_)), 4u);
  const uint64_t too_soon_sequence = sequence;
  run_until(now_us_ + 50'000, "d");
  // Signed by an ordinary client's key in the administrator's name: no replica admits it, and
  // one handed to the cores anyway (a caller that skipped admits()) is skipped when decided.
  const ClientRequest forged =
      admin_request(++sequence, {1, replicas({0, 1, 2}), far}, *client_signer_);
  const uint64_t forged_sequence = sequence;
  std::vector<uint64_t> bad_signatures;
  for (uint32_t r = 0; r < 4; ++r) {
    EXPECT_FALSE(core(r).admits(forged)) << "replica " << r;
    bad_signatures.push_back(core(r).rejections().bad_client_signature);
    core(r).on_client_request(at(now_us_), forged);
  }
  run_until(now_us_ + 200'000, "e");

  const std::map<uint64_t, std::string>& reference = nodes_[0].system_outputs;
  ASSERT_EQ(reference.size(), cases.size() + 1) << "every validly signed change has an output";
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(reference.contains(i + 1));
    EXPECT_EQ(reference.at(i + 1), cases[i].refusal);
  }
  ASSERT_TRUE(reference.contains(too_soon_sequence));
  EXPECT_EQ(reference.at(too_soon_sequence).rfind("refused: takes effect too soon: at least ", 0),
            0u)
      << reference.at(too_soon_sequence);
  EXPECT_FALSE(reference.contains(forged_sequence));
  for (uint32_t r = 0; r < 4; ++r) {
    EXPECT_EQ(nodes_[r].system_outputs, reference) << "replica " << r;
    EXPECT_EQ(nodes_[r].state, nodes_[0].state) << "replica " << r;
    EXPECT_EQ(core(r).schedule().configurations().size(), 1u) << "replica " << r;
    EXPECT_EQ(core(r).epoch(), 0u);
    EXPECT_GT(core(r).rejections().bad_client_signature, bad_signatures[r])
        << "replica " << r << " checked the forged request when it was decided";
  }

  // The refusals used up nothing: the next valid change is still epoch 1.
  const ConfigurationChange valid{1, replicas({0, 1, 2}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(++sequence, valid, *admin_signer_)), 4u);
  run_until(now_us_ + 100'000, "f");
  for (uint32_t r = 0; r < 4; ++r) {
    ASSERT_TRUE(nodes_[r].system_outputs.contains(sequence));
    EXPECT_EQ(nodes_[r].system_outputs.at(sequence), describe(valid));
    EXPECT_EQ(core(r).schedule().latest().epoch, 1u);
  }
}

TEST_F(ReconfigurationCluster, TFollowsTheMembershipAndDecisionTimesStayMonotone) {
  // Four members (t = 1); adding a fifth makes t = 2, removing it again t = 1.
  start(5, replicas({0, 1, 2, 3}));
  run_until(now_us_ + 100'000, "a");
  const ConfigurationChange grow{1, replicas({0, 1, 2, 3, 4}), boundary_after(1'000'000)};
  const uint64_t e1 = grow.effective_us;
  ASSERT_EQ(submit_admin(admin_request(1, grow, *admin_signer_)), 5u);
  run_until(now_us_ + 100'000, "b");  // decided by now
  for (uint32_t r = 0; r < 5; ++r) {
    EXPECT_EQ(core(r).schedule().at(e1).t, 2u) << "replica " << r;
    EXPECT_EQ(core(r).decision_time_us(e1 - 1), end_of_round(e1 - 1, 2)) << "replica " << r;
    EXPECT_EQ(core(r).decision_time_us(e1), end_of_round(e1, 3)) << "replica " << r;
    EXPECT_LE(core(r).decision_time_us(e1 - 1), core(r).decision_time_us(e1));
  }
  run_until(e1 + 600'000, "c");
  for (uint32_t r = 0; r < 5; ++r) {
    ASSERT_TRUE(core(r).serving()) << "replica " << r;
    EXPECT_EQ(core(r).epoch(), 1u);
    EXPECT_EQ(core(r).rejections().bad_chain, 0u) << "replica " << r;
  }
  EXPECT_EQ(loads_, 1) << "replica 4 caught up";
  EXPECT_GT(nodes_[4].relays_signed, 0u);

  const ConfigurationChange shrink{2, replicas({0, 1, 2, 3}), boundary_after(1'000'000)};
  const uint64_t e2 = shrink.effective_us;
  ASSERT_EQ(submit_admin(admin_request(2, shrink, *admin_signer_)), 5u);
  run_until(now_us_ + 100'000, "d");
  for (uint32_t r = 0; r < 5; ++r) {
    ASSERT_EQ(core(r).schedule().latest().epoch, 2u) << "replica " << r;
    EXPECT_EQ(core(r).schedule().at(e2).t, 1u);
    // With t falling, E's own t+1 rounds would decide it before E-1: held at E-1's.
    EXPECT_EQ(core(r).decision_time_us(e2), end_of_round(e2 - 1, 3)) << "replica " << r;
    uint64_t previous = 0;
    for (uint64_t tau = e2 - 2 * kD; tau <= e2 + 2 * kD; tau += kSlotUs / 4) {
      EXPECT_LE(previous, core(r).decision_time_us(tau)) << "replica " << r << " at " << tau;
      previous = core(r).decision_time_us(tau);
    }
    EXPECT_EQ(core(r).decision_time_us(e2 + kD), end_of_round(e2 + kD, 2))
        << "one D later the new t governs";
  }
  run_until(e2 + 300'000, "e");
  run_until(now_us_ + 200'000);
  EXPECT_TRUE(core(4).halted());
  const std::vector<std::string>& reference = nodes_[0].state;
  for (uint32_t r = 0; r < 5; ++r) {
    // 4 has the first output from the snapshot it loaded, and executed the second.
    EXPECT_EQ(nodes_[r].system_outputs,
              (std::map<uint64_t, std::string>{{1, describe(grow)}, {2, describe(shrink)}}))
        << "replica " << r;
    if (r < 4) {
      EXPECT_EQ(nodes_[r].state, reference) << "replica " << r;
      EXPECT_EQ(core(r).epoch(), 2u);
    } else {
      EXPECT_TRUE(std::equal(nodes_[r].state.begin(), nodes_[r].state.end(), reference.begin()))
          << "replica " << r << " executed a prefix of the order";
    }
  }
}

// One replica in or out per change, and a removed replica never returns (its key is retired).
TEST_F(ReconfigurationCluster, ChangesMoveOneReplicaAndNeverBringOneBack) {
  start(5, replicas({0, 1, 2}));
  run_until(now_us_ + 100'000, "a");
  const ConfigurationChange two{1, replicas({0, 1, 2, 3, 4}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(1, two, *admin_signer_)), 5u);
  const ConfigurationChange swap{1, replicas({0, 1, 3}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(2, swap, *admin_signer_)), 5u);
  const ConfigurationChange add{1, replicas({0, 1, 2, 3}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(3, add, *admin_signer_)), 5u);
  run_until(add.effective_us + 600'000, "b");
  const ConfigurationChange remove{2, replicas({1, 2, 3}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(4, remove, *admin_signer_)), 5u);
  run_until(remove.effective_us + 300'000, "c");
  const ConfigurationChange back{3, replicas({0, 1, 2, 3}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(5, back, *admin_signer_)), 4u);  // 0 halted
  run_until(now_us_ + 300'000, "d");
  for (uint32_t r = 1; r < 4; ++r) {
    EXPECT_EQ(nodes_[r].system_outputs.at(1),
              "refused: changes 2 replicas: add or remove one at a time")
        << "replica " << r;
    EXPECT_EQ(nodes_[r].system_outputs.at(2),
              "refused: changes 2 replicas: add or remove one at a time");
    EXPECT_EQ(nodes_[r].system_outputs.at(3), describe(add));
    EXPECT_EQ(nodes_[r].system_outputs.at(4), describe(remove));
    EXPECT_EQ(nodes_[r].system_outputs.at(5),
              "refused: replica 0 was removed earlier: it cannot return");
    EXPECT_EQ(core(r).schedule().latest().epoch, 2u);
  }
}

TEST_F(ReconfigurationCluster, ASpareStartedAfterTheChangeStillCatchesUp) {
  start(4, replicas({0, 1, 2}), {3});
  run_until(now_us_ + 100'000, "a");
  const ConfigurationChange change{1, replicas({0, 1, 2, 3}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(1, change, *admin_signer_)), 3u);
  run_until(change.effective_us + 150'000, "b");
  start_replica(3);  // never saw the administrator's request
  EXPECT_EQ(core(3).schedule().configurations().size(), 1u);
  run_until(now_us_ + 1'500'000, "c");
  run_until(now_us_ + 200'000);

  EXPECT_GT(nodes_[3].votes_received, 0u) << "the members send it their votes from E on";
  ASSERT_TRUE(core(3).serving()) << "schedule restarts: " << core(3).rejections().schedule_restarts
                                 << ", refused loads: " << rejected_loads_
                                 << ", votes received: " << nodes_[3].votes_received
                                 << ", votes held: " << core(3).votes_held();
  EXPECT_EQ(core(3).schedule(), core(0).schedule());
  EXPECT_EQ(nodes_[3].state, nodes_[0].state);
  // Votes reached it outside every configuration it knew: it asked a voter for its checkpoint
  // and learnt the change from it (a refused load), then caught up as a member; its kept batches
  // were decided under the right schedule, so nothing started over.
  EXPECT_EQ(rejected_loads_, 1) << "one probe for the membership";
  EXPECT_EQ(core(3).rejections().schedule_restarts, 0u);
  EXPECT_EQ(loads_left_waiting_, 0);
  EXPECT_GT(nodes_[3].relays_signed, 0u);
}

// The same late spare, but the administrator sends it the change again once it runs (what §11.9.3
// has a joiner check): it learns the change early, as a spare running from the start does.
TEST_F(ReconfigurationCluster, ASpareStartedAfterTheChangeCatchesUpOnceSentTheChange) {
  start(4, replicas({0, 1, 2}), {3});
  run_until(now_us_ + 100'000, "a");
  const ConfigurationChange change{1, replicas({0, 1, 2, 3}), boundary_after(1'000'000)};
  const ClientRequest signed_change = admin_request(1, change, *admin_signer_);
  ASSERT_EQ(submit_admin(signed_change), 3u);
  run_until(change.effective_us + 150'000, "b");
  start_replica(3);
  step();
  ASSERT_TRUE(core(3).admits(signed_change));
  core(3).on_client_request(at(now_us_), signed_change);
  EXPECT_EQ(core(3).schedule().latest().epoch, 1u);
  run_until(now_us_ + 1'000'000, "c");
  run_until(now_us_ + 200'000);

  ASSERT_TRUE(core(3).serving());
  EXPECT_GE(*nodes_[3].loaded_boundary_us, change.effective_us + 200'000);
  EXPECT_EQ(core(3).schedule(), core(0).schedule());
  EXPECT_EQ(nodes_[3].state, nodes_[0].state);
  EXPECT_EQ(core(3).rejections().schedule_restarts, 0u);
  EXPECT_GT(nodes_[3].relays_signed, 0u);
}

// A spare takes a change on trust when it arrives (it cannot decide instances before it is a
// member); one the order then refuses (too soon) leaves it with another epoch 1 than the honest
// one, and the valid change that follows is not the next epoch for it. The first state it loads
// shows the difference: it starts over once, under the loaded schedule.
TEST_F(ReconfigurationCluster, ASpareThatTookARefusedChangeOnTrustStartsOverOnce) {
  start(4, replicas({0, 1, 2}));
  run_until(now_us_ - now_us_ % kIntervalUs + kIntervalUs - 10'000, "a");
  const ConfigurationChange too_soon{1, replicas({0, 1, 2, 3}), boundary_after(1)};
  ASSERT_EQ(submit_admin(admin_request(1, too_soon, *admin_signer_)), 4u);
  EXPECT_EQ(core(3).schedule().at(too_soon.effective_us).members, replicas({0, 1, 2, 3}))
      << "taken on trust";
  run_until(now_us_ + 100'000, "b");
  const ConfigurationChange valid{1, replicas({0, 1, 2, 3}), boundary_after(1'000'000)};
  ASSERT_EQ(submit_admin(admin_request(2, valid, *admin_signer_)), 4u);
  run_until(valid.effective_us + 600'000, "c");
  run_until(now_us_ + 200'000);

  for (uint32_t r = 0; r < 3; ++r) {
    ASSERT_EQ(nodes_[r].system_outputs.size(), 2u);
    EXPECT_EQ(nodes_[r].system_outputs.at(1).rfind("refused: takes effect too soon", 0), 0u);
    EXPECT_EQ(nodes_[r].system_outputs.at(2), describe(valid));
  }
  ASSERT_TRUE(core(3).serving());
  EXPECT_EQ(core(3).rejections().schedule_restarts, 1u);
  // The members send their votes to the replicas of every configuration to come, so it gets
  // votes before E: the first state it loads (a boundary inside its wrong epoch 1) shows the
  // other schedule and is refused; it starts over in time to load at E itself.
  EXPECT_EQ(rejected_loads_, 1) << "one load showed the other schedule: refused";
  EXPECT_EQ(loads_left_waiting_, 0);
  EXPECT_GE(*nodes_[3].loaded_boundary_us, valid.effective_us);
  EXPECT_EQ(core(3).schedule(), core(0).schedule());
  EXPECT_EQ(nodes_[3].state, nodes_[0].state);
}

}  // namespace
}  // namespace lockstep::byzantine::testing
