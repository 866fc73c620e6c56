// The byzantine ordering protocol (docs/DESIGN.md §11): n = 2t+1 replicas with signed messages
// and synchronized clocks, of which up to t may behave arbitrarily, and any number of clients
// that may lie. Assumptions: a message between two honest replicas arrives within Δ of being sent
// (processing included), and honest replicas' clocks differ by at most ε.
//
// Each replica proposes batches of the client requests it receives (its "owned" clients at once,
// any other honest client's request after `relay_timeout` if nobody ordered it), stamped with its
// clock τ. Each proposal is one Dolev–Strong broadcast instance (origin, τ): a replica accepts a
// value carrying a chain of m valid, distinct signatures (the origin's first) when its own clock
// reads within [τ - m·ε, τ + σ + min(m, t+1)·D], D = Δ + ε, σ = slot_us; on accepting it appends
// its signature and relays it (at most two values per instance: two are proof that the origin
// equivocated). At local time τ + σ + (t+1)·D every honest replica holds the same accepted set for
// the instance; the decision is the value when there is exactly one, nothing otherwise. Decided
// batches execute in (τ, origin) order, each request only when its client's signature checks; the
// session table turns a second request with the same (client, sequence), e.g. from a client that
// signed two, into a duplicate of the first.
//
// Pure and deterministic: no I/O, no clock, no randomness (signing is deterministic Ed25519).
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "crypto/crypto.h"
#include "crypto/membership.h"
#include "protocol/byzantine/durability.h"
#include "protocol/ordering_core.h"

namespace lockstep::byzantine {

struct Options {
  ReplicaId self{};
  uint32_t replica_count = 0;  // every replica listed in the cluster file (members and spares)
  uint32_t t = 0;              // of the first configuration: its members number at least 2t+1
  // The first configuration (epoch 0), ascending; empty: every listed replica. Membership
  // changes signed by the administrator (crypto/membership.h, docs/DESIGN.md §11.9) replace it
  // from an agreed point of the order on.
  std::vector<ReplicaId> members;
  uint64_t delta_us = 10'000;   // Δ: delivery bound between honest replicas, processing included
  uint64_t epsilon_us = 2'000;  // ε: clock difference bound between honest replicas
  // A request this replica holds from a client but has not seen decided by then is proposed by
  // this replica itself (the client's owner may be faulty). 0 = 2·(σ + (t+1)·(Δ+ε)).
  uint64_t relay_timeout_us = 0;
  // Proposal timestamps are multiples of this: at most one instance per origin per slot, so a
  // faulty origin cannot open unboundedly many instances inside one decision window (the bound
  // is a property of the proposal itself, checked alike by every honest replica).
  uint64_t slot_us = 100;
  size_t requests_per_proposal_max = 4096;
  size_t proposal_bytes_max = 1 << 20;  // command bytes per proposal
  size_t backups_max = 1 << 20;
  // Checkpoints (docs/DESIGN.md §11.7): at every multiple of this in the order's timestamps the
  // core hands the Replica a boundary, and signs and sends everyone the digest of the service
  // snapshot there. 0: none (a core driven alone, as in unit tests).
  uint64_t checkpoint_interval_us = 0;
  // Durability (docs/DESIGN.md §11.8); 0: none, and a restart loses the replica's state (§11.7).
  // Otherwise the replica logs every batch it executes, and at every multiple of this in the
  // order's timestamps after which it executed something new, it signs the running hash of the
  // order there (its log synced first: the runtime releases messages after the step's records).
  // t+1 matching signatures certify the position; replies to requests below it are released only
  // then, so an acknowledged write is on the disk of an honest replica. Must divide
  // checkpoint_interval_us (which must then be set).
  uint64_t certify_interval_us = 0;
  // An operator's ruling for a whole-cluster recovery (`lockstep replica --recover-without`): the
  // recovery does not wait for these replicas' claims. Every replica must be given the same set
  // (a claim names it, and only claims naming the same set count). Ruling out an honest replica
  // can lose an acknowledged write that only its disk held (docs/DESIGN.md §11.8).
  std::vector<ReplicaId> recovery_excused;
  // Started without the state (a restart, a wiped machine): take part in every instance from
  // shortly after start, execute nothing, and load the snapshot of the first boundary after that
  // for which t+1 replicas signed the same digest.
  bool join = false;
  const crypto::Signer* signer = nullptr;      // this replica's key; not owned
  const crypto::Verifier* verifier = nullptr;  // every replica's and client's key; not owned

  // Test-only switches that plant known bugs, so tests can prove the simulator catches them.
  struct PlantedBugs {
    bool decide_early = false;         // execute at τ + t·D: one round short of Dolev–Strong
    bool ignore_equivocation = false;  // decide the first accepted value even when there are two
  } planted;
};

// Counters of what the core rejected, for operators (status) and tests.
struct Rejections {
  uint64_t bad_client_signature = 0;  // direct requests and requests inside decided proposals
  uint64_t unknown_client = 0;
  uint64_t bad_chain = 0;             // wrong origin, repeated or unknown signer, bad signature
  uint64_t outside_window = 0;        // too late (or too early) for its chain length: a replay,
                                      // a lying timestamp, or a broken Δ/ε assumption
  uint64_t overloaded = 0;            // a client request beyond backups_max (queued or backed up)
  uint64_t off_slot = 0;              // a timestamp that is not a multiple of slot_us
  uint64_t oversized = 0;             // beyond requests_per_proposal_max / proposal_bytes_max
  uint64_t equivocations = 0;         // instances decided empty because the origin signed two
  uint64_t client_equivocations = 0;  // two different signed requests for one (client, sequence)
  uint64_t diverged = 0;  // times t+1 others certified an order this replica did not execute
  // Durable mode: another replica's signed position naming an order other than this replica's
  // at the same position. Fewer than t+1 leave the position uncertified (no reply goes out),
  // without telling which side is honest: a faulty voter, or a broken Δ/ε assumption.
  uint64_t votes_against = 0;
  // Catch-ups started over: the state loaded showed the batches kept had been decided under
  // another membership (a change learned late, or not yet a member).
  uint64_t schedule_restarts = 0;
};

class Core final : public OrderingCore {
 public:
  explicit Core(Options options);

  void on_client_request(Now now, const ClientRequest& request) override;
  void on_message(Now now, ReplicaId from, const ReplicaMessage& message) override;
  void tick(Now now) override;
  std::vector<Send> take_messages(Now now) override;
  std::vector<OrderedEntry> take_executable() override;
  bool replies_to(const OrderedEntry&) const override { return true; }
  bool admits(const ClientRequest& request) override { return checked_digest(request).has_value(); }

  // Durability (docs/DESIGN.md §11.8; durability.cc). The checkpoint's other half, the service
  // snapshot, is base_snapshot(): the durable state is a base t+1 replicas vouched for plus the
  // batches executed after it.
  std::vector<PersistRecord> take_persist() override { return std::exchange(persist_, {}); }
  Bytes checkpoint_state() const override;
  void recover(std::span<const uint8_t> checkpoint_state,
               const std::vector<PersistRecord>& records) override;
  // The service snapshot a Replica starts with (before any input), and the one its durable
  // checkpoint holds when it recovers (before recover()).
  void set_genesis_snapshot(Bytes snapshot);
  void set_recovered_base_snapshot(Bytes snapshot);
  const Bytes& base_snapshot() const { return *base_.snapshot; }
  bool durable() const { return options_.certify_interval_us != 0; }
  // Replies to requests stamped below this may be released (UINT64_MAX when not durable).
  uint64_t certified_us() const { return durable() ? certified_us_ : UINT64_MAX; }
  // A whole-cluster recovery (or a catch-up) finished in this step: the Replica reports it as a
  // loaded state, so the runtime writes a checkpoint of it. Each is returned once.
  bool take_state_replaced() { return std::exchange(state_replaced_, false); }
  // This replica found that its state left the honest order (t+1 others signed another running
  // hash at a position it voted on: a Δ or ε broken at it, e.g. by overload) and went back to
  // catching up (§11.7); the Replica drops the replies it holds, which no certificate will cover.
  bool take_diverged() { return std::exchange(diverged_, false); }
  bool recovering_from_disk() const { return from_disk_; }
  uint64_t recoveries_completed() const { return recoveries_completed_; }
  // The position the last completed recovery continued from (0: none).
  uint64_t recovered_to_us() const { return recovered_to_ ? recovered_to_->position_us : 0; }

  // Checkpoints and catching up (docs/DESIGN.md §11.7).
  std::optional<uint64_t> take_checkpoint_boundary() override;
  // Keeps the snapshot (to serve catching-up replicas): moved in, not copied.
  void checkpoint_taken(uint64_t boundary_us, Bytes snapshot) override;
  // (A probe only while catching up: a replica that loaded a state must never take another,
  // which would roll its service back; found by the simulator.)
  bool awaits_state() const override {
    return target_.has_value() || recovery_.has_value() || (probing_ && recovering_);
  }
  uint64_t changes_learned_early() const { return changes_learned_early_; }
  void load_state(Now now, const StateTransfer& transfer) override;
  bool serving() const override { return !recovering_ && !removed_; }
  bool recovering() const { return recovering_; }
  // The latest boundary whose snapshot this replica took (and can serve), 0 if none.
  uint64_t checkpoint_us() const { return checkpoint_.position_us; }
  // Checkpoint votes a recovering replica holds (at most one per replica and boundary).
  size_t votes_held() const;

  ReplicaId id() const override { return options_.self; }
  // Removed by a membership change: it executed everything up to the change's effective point
  // (and voted there), and takes part in nothing after it.
  bool halted() const override { return removed_; }
  ViewNumber view() const override { return ViewNumber{0}; }
  // The configuration in force at this replica's clock.
  const std::vector<ReplicaId>& members() const override { return schedule_.at(local_us_).members; }
  // Membership changes (membership.cc; docs/DESIGN.md §11.9).
  const Schedule& schedule() const { return schedule_; }
  uint64_t epoch() const { return schedule_.at(local_us_).epoch; }
  // The output of an administrator's request executed in the last step (the service records it
  // in the session table instead of running it): accepted or refused, and why.
  std::optional<Bytes> take_system_output(const OrderedEntry& entry) override;
  size_t pending_entries() const override;
  void check_invariants() const override;

  const Options& options() const { return options_; }
  const Rejections& rejections() const { return rejections_; }
  ReplicaId owner_of(ClientId client) const;
  // Local time (µs) after which instance τ is decided: τ + σ + (t+1)·(Δ+ε).
  uint64_t decision_time_us(uint64_t timestamp_us) const;
  size_t backup_count() const { return backups_.size(); }

 private:
  struct Accepted {
    Digest digest{};
    SignedProposal message;  // chain as this replica received it, plus its own endorsement
  };
  struct Instance {
    std::vector<Accepted> values;  // at most two
  };
  using InstanceKey = std::pair<uint64_t, ReplicaId>;  // (timestamp, origin): the total order
  using RequestKey = std::pair<ClientId, Sequence>;

  void advance_clock(Now now);
  void on_signed_proposal(const SignedProposal& message);
  bool chain_valid(const SignedProposal& message, const Digest& digest);
  void accept(const InstanceKey& key, const Digest& digest, const SignedProposal& message);
  // The request's digest when its client signature checks (memoised); nullopt, counted, if not.
  std::optional<Digest> checked_digest(const ClientRequest& request);
  void propose();
  void propose_due_backups();
  void decide_due();
  void execute_decided(const InstanceKey& key, Proposal& proposal);
  void broadcast_proposal(Proposal proposal);
  void drain_decided();
  void on_checkpoint_vote(const CheckpointVote& vote);
  void on_state_request(const StateRequest& request);
  void request_state_if_due();
  void load_caught_up_state(const StateTransfer& transfer);

  // durability.cc
  void at_position(uint64_t position_us);
  void vote(uint64_t position_us, const Digest& snapshot_digest);
  void on_position_vote(const CheckpointVote& vote);
  void try_certify(uint64_t position_us);
  void record_executed(const Proposal& proposal, const Digest& digest);
  void propose_claim_if_due();
  bool on_claim_decided(const InstanceKey& key, const Proposal& proposal);
  bool certificate_valid(const Certificate& certificate) const;
  bool excused(ReplicaId replica) const;
  void bound_position_votes();
  void log_state_replaced(const Certificate& certificate);
  uint64_t claim_period_us() const { return options_.relay_timeout_us; }
  // Boundaries of the order: every certified position when durable, else every checkpoint.
  uint64_t grid_us() const {
    return durable() ? options_.certify_interval_us : options_.checkpoint_interval_us;
  }
  void execute_decided_replayed(Proposal proposal);
  void complete_recovery(const InstanceKey& at, const Certificate& target);
  bool rebuild_to(const Certificate& target);
  void finish_recovery();
  bool load_recovered_state(const StateTransfer& transfer);
  StateTransfer recovery_transfer(uint64_t target_us) const;

  // membership.cc
  void adopt_decided_changes(const InstanceKey& key, const Proposal& proposal);
  void learn_change_early(const ClientRequest& request);
  bool schedule_agrees_from(const Schedule& own, uint64_t boundary_us) const;
  void restart_catch_up();
  size_t catch_up_vouchers_needed(uint64_t boundary_us) const;
  void probe_membership(const CheckpointVote& vote);
  void learn_schedule_on_trust(const Schedule& offered);
  uint64_t change_margin_us(uint64_t executed_us) const;
  bool member_at(uint64_t timestamp_us) const {
    return schedule_.at(timestamp_us).contains(options_.self);
  }
  // A member now, or of a configuration still to come, as far as it knows.
  bool member_from_now_on() const {
    const auto& all = schedule_.configurations();
    return std::any_of(all.begin(), all.end(), [&](const Configuration& c) {
      return c.contains(options_.self) && (&c == &all.back() || (&c + 1)->from_us > local_us_);
    });
  }
  void send_to_members(uint64_t timestamp_us, const ReplicaMessage& message,
                       const std::vector<bool>* skip = nullptr);

  Options options_;
  Schedule schedule_;
  // For each change adopted (epoch 1 on), the timestamp of the instance that ordered it: the
  // state at a boundary b holds the changes ordered below b only (decisions run ahead of
  // execution, so the schedule can already hold later ones). 0 for changes that came with a
  // loaded state, UINT64_MAX for one taken on trust while catching up.
  std::vector<uint64_t> change_ordered_at_us_;
  // The schedule as of boundary b: what a checkpoint there vouches for.
  Schedule schedule_below(uint64_t boundary_us) const;
  bool removed_ = false;
  // Outcomes of the administrator's requests, from their decision to their execution, by
  // (timestamp, origin, index in the batch): what take_system_output hands the service.
  using ChangeKey = std::tuple<uint64_t, ReplicaId, uint64_t>;
  std::map<ChangeKey, Bytes> change_outputs_;
  uint64_t changes_learned_early_ = 0;
  // Catching up outside every configuration it knows: it asked a voter for its checkpoint, to
  // learn the changes from it (their administrator signatures checked, taken on trust).
  bool probing_ = false;
  struct Probe {
    uint64_t boundary_us = 0;
    std::vector<ReplicaId> voters;  // of that boundary, in arrival order
    size_t asked = 0;               // voters asked so far
    uint64_t asked_at_us = 0;
    bool answered = false;  // an answer came (learnt from or not): no more for it
  };
  Probe probe_;
  void probe_next_voter();
  uint64_t local_us_ = 0;  // this replica's clock, made monotone (max of every Now.wall_us seen)
  uint64_t last_proposal_us_ = 0;
  std::map<InstanceKey, Instance> instances_;  // accepted, not yet decided
  std::optional<InstanceKey> last_decided_;    // everything at or below it is decided
  std::vector<ClientRequest> unproposed_;      // to go into this replica's next proposal
  std::set<RequestKey> unproposed_keys_;
  size_t unproposed_bytes_ = 0;
  std::map<RequestKey, uint32_t> in_instances_;  // requests inside undecided accepted values
  struct Backup {
    ClientRequest request;
    uint64_t propose_at_us;
  };
  std::map<RequestKey, Backup> backups_;  // requests held from clients, not yet seen decided
  std::deque<std::pair<uint64_t, RequestKey>> backup_order_;  // (due time, key), due ascending
  // Memos: client signatures already checked, and the requests decided lately
  // with the digest of the copy that was decided first. Bounded FIFOs: they only save work and
  // catch duplicates early; the session table is what makes execution exactly-once.
  std::set<Digest> verified_requests_;
  std::deque<Digest> verified_order_;
  std::map<RequestKey, Digest> decided_digests_;
  std::deque<RequestKey> decided_order_;
  std::vector<OrderedEntry> executable_;
  std::vector<Send> outbox_;
  Rejections rejections_;
  std::vector<PersistRecord> persist_;

  // Decided batches and checkpoint boundaries, in the order, not yet executed: a boundary waits
  // for the Replica's snapshot; while recovering, everything from participation_start_us_ on
  // waits for the loaded state.
  struct DecidedBatch {
    InstanceKey key;
    Proposal proposal;
    Digest digest;  // its proposal_digest, computed when the value was accepted
  };
  struct Boundary {
    uint64_t boundary_us;
  };
  std::deque<std::variant<DecidedBatch, Boundary>> decided_;
  uint64_t next_boundary_us_ = 0;  // 0 until the first input
  std::optional<uint64_t> boundary_due_;
  bool boundary_handed_out_ = false;
  // The latest snapshot taken at a checkpoint boundary (served to replicas catching up).
  struct Snapshot {
    uint64_t position_us = 0;
    Digest order_hash{};
    std::shared_ptr<const Bytes> bytes = std::make_shared<const Bytes>();
    Bytes schedule;  // Schedule::encode() at the boundary: the votes vouch for it too
  };
  Snapshot checkpoint_;
  uint64_t loaded_boundary_us_ = 0;        // a loaded state covers everything stamped below it
  std::vector<uint64_t> state_served_us_;  // per replica: the boundary last sent to it
  // Recovering: instances from participation_start_us_ on are ones it saw whole.
  bool recovering_ = false;
  uint64_t participation_start_us_ = 0;
  // While recovering: batches below this were let go, so no boundary below it can be loaded.
  uint64_t loadable_from_us_ = 0;
  // boundary -> digest -> who signed it, and how
  std::map<uint64_t, std::map<Digest, std::map<ReplicaId, Signature>>> votes_;
  struct Target {
    uint64_t boundary_us;
    Digest digest;
    std::vector<ReplicaId> signers;
  };
  std::optional<Target> target_;  // a vouched-for boundary whose snapshot it is asking for
  // Every boundary t+1 replicas vouched for lately, with the digest: a snapshot asked for at an
  // earlier target may take longer than an interval to arrive (in pieces), and is as good.
  struct Vouched {
    Digest digest{};  // crypto::position_digest of the boundary
    std::vector<std::pair<ReplicaId, Signature>> signatures;
  };
  std::map<uint64_t, Vouched> vouched_;
  uint64_t state_requested_us_ = 0;

  // ---- durability (docs/DESIGN.md §11.8) ----
  Digest order_hash_{};  // running hash of every batch executed (crypto::extend_order_hash)
  Digest last_voted_hash_{};
  uint64_t certified_us_ = 0;  // highest position t+1 replicas certified with this one
  Certificate best_certificate_;
  struct PositionVote {  // its signature checked
    Digest digest{};
    Signature signature{};
  };
  struct PositionVotes {
    std::optional<Certificate> own;  // this replica's vote (signatures: its own)
    std::map<ReplicaId, PositionVote> votes;
  };
  std::map<uint64_t, PositionVotes> position_votes_;
  // The durable state: a base t+1 replicas vouched for (or the empty genesis) and every batch
  // executed after it, in order. A checkpoint writes both; recovery rebuilds from them.
  struct Base {
    Certificate vouch;  // position, order hash, snapshot digest, and t+1 signatures
    std::shared_ptr<const Bytes> snapshot = std::make_shared<const Bytes>();
  };
  Base base_;
  Base genesis_;
  std::vector<Proposal> since_base_;
  bool state_replaced_ = false;
  bool diverged_ = false;
  bool divergence_due_ = false;
  void catch_up_after_divergence();
  void leave_order_if_diverged();
  uint64_t recoveries_completed_ = 0;
  // Recovering from the disk after a crash (docs/DESIGN.md §11.8): claims every claim period
  // until it loads from a live cluster or a whole-cluster recovery completes.
  bool from_disk_ = false;
  // The highest round this replica (in any life) logged claims in before sending them, and the
  // round it claims in now: above any earlier life's, since a recovery that completed may have
  // counted that life's claims where this life cannot see (DESIGN §11.8).
  std::optional<uint64_t> logged_round_;
  uint64_t claim_round_ = 0;
  uint64_t next_claim_us_ = 0;
  struct DecidedClaim {
    uint64_t timestamp_us;
    ReplicaId origin;
    uint64_t start_us;
    uint64_t round;
    Certificate certificate;
  };
  std::deque<DecidedClaim> claims_;
  struct Recovery {
    InstanceKey completed_at;
    Certificate target;
  };
  std::optional<Recovery> recovery_;         // completed, fetching the state below the target
  std::optional<Certificate> recovered_to_;  // the last target reached: served to laggards
};

}  // namespace lockstep::byzantine
