#include "sim/simulator.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <variant>

#include "apps/kv/kv_machine.h"
#include "check/history.h"
#include "check/linearizability.h"
#include "client/core/client_session.h"
#include "core/assert.h"
#include "crypto/crypto.h"
#include "crypto/signing.h"
#include "replica/replica.h"
#include "sim/byzantine.h"
#include "sim/trace.h"
#include "storage/memory_storage.h"
#include "storage/replica_store.h"

namespace lockstep::sim {
namespace {

constexpr uint64_t kUs = 1'000;
constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000'000'000;

// ---- the bounds the failstop model is entitled to ------------------------------------------
//
// Failstop trusts its failure detector (BRIEF §2): a live replica must never look silent for the
// failure timeout, or the others remove it and the run has left the model. So every bound below
// is chosen so that the longest silence of a live, not-long-paused replica, as seen by a peer,
//   short pause + replica link delay + heartbeat interval + tick interval + flush delay
//   = 150 + 100 + 10 + 3 + 0.2 ms < 300 ms,
// stays well under the failure timeout (500 ms), whatever the seed draws. Only a long pause
// (which is budgeted like a crash) may exceed it.
constexpr uint64_t kFailureTimeoutNs = 500 * kMs;
constexpr uint64_t kReplicaDelayMaxNs = 100 * kMs;  // every replica message arrives within this
constexpr uint64_t kShortPauseMaxNs = 150 * kMs;
constexpr uint64_t kHeartbeatMaxNs = 10 * kMs;
constexpr uint64_t kTickMaxNs = 3 * kMs;
constexpr uint64_t kFlushDelayMaxNs = 200 * kUs;
// Durable runs: a step's outputs wait for its fsync, which takes up to this long. A short restart
// (down at most kShortPauseMaxNs) is silent no longer than a short pause.
constexpr uint64_t kSyncLatencyMaxNs = 5 * kMs;
static_assert(kShortPauseMaxNs + kReplicaDelayMaxNs + kHeartbeatMaxNs + kTickMaxNs +
                  kFlushDelayMaxNs + kSyncLatencyMaxNs <
              kFailureTimeoutNs * 3 / 5);
// Long pauses run from where short ones stop to several failure timeouts. Those near the timeout
// are the nasty ones: the replica resumes while the others are removing it. Any of them may lead
// to a removal, so each spends a unit of the fault budget.
constexpr uint64_t kLongPauseMinNs = kShortPauseMaxNs + 1;
constexpr uint64_t kLongPauseMaxNs = 5 * kFailureTimeoutNs;
// Two pauses of one replica are at least this far apart, so that the heartbeat it sends on
// resuming reaches the others before it falls silent again.
constexpr uint64_t kPauseGapNs = kReplicaDelayMaxNs + kHeartbeatMaxNs;

// ---- the durable failstop model ----------------------------------------------------------------
//
// Each replica keeps a ReplicaStore (log + checkpoints) on its own MemoryStorage. Small segments,
// so that they roll and checkpoints truncate the log within a run.
constexpr uint64_t kSegmentBytes = 64 * 1024;
constexpr uint64_t kCheckpointIntervalMin = 50;
constexpr uint64_t kCheckpointIntervalMax = 2000;
// A whole-cluster crash: everyone is down this long, then restarts within a jitter small enough
// that the first one up does not time the others out.
constexpr uint64_t kClusterDowntimeMaxNs = 2 * kSec;
constexpr uint64_t kClusterRestartJitterNs = 100 * kMs;
constexpr uint64_t kClusterCrashesMax = 2;
// Reconfiguration: an operator's add-replica that a member refused is sent again this often.
constexpr uint64_t kAdminRetryNs = 200 * kMs;
constexpr uint32_t kAdminRetriesMax = 100;

// Replica wall clocks start here (about 11.6 days of microseconds): far from zero, so that a
// negative skew or a backward jump never underflows, and far below the 48-bit HLC limit.
constexpr int64_t kWallEpochNs = 1'000'000'000'000'000;
constexpr int64_t kClockJumpMaxNs = 30 * static_cast<int64_t>(kSec);

// After quiescence the cluster runs this long at least, so that relays of a crashed client's
// request (relay timeout <= 100 ms) and the resulting executions happen before the final checks.
constexpr uint64_t kSettleMinNs = 1 * kSec;
constexpr uint64_t kSettleCheckIntervalNs = 50 * kMs;
// A pipelining client has at most this many operations in flight.
constexpr size_t kPipelineDepthMax = 4;
// The fault phase ends here even when the run has not reached its size (a stuck cluster).
constexpr uint64_t kFaultPhaseMaxNs = 60 * kSec;
// Search steps per key for the linearizability checker. Most histories need far fewer; a few
// (one hot key, a dozen clients) need tens of millions, which would make a run take a minute.
// Past the budget the order witness (see check_order_witness) decides instead.
constexpr uint64_t kCheckStepsPerKeyMax = 2'000'000;
// A run that goes on past this many events is itself a failure (a livelock of messages).
constexpr uint64_t kEventsMax = 20'000'000;
// Client deadline: never reached within a run; liveness is judged by the heal-phase bound.
constexpr uint64_t kClientDeadlineNs = 3600 * kSec;

// ---- the byzantine mode's model ---------------------------------------------------------------
//
// The byzantine protocol assumes synchronized clocks and bounded delivery (core.h): every message
// between honest replicas arrives within Δ of being sent, processing included, and honest clocks
// differ by at most ε. Within a seed the simulator keeps both exactly: replica links are capped
// at Δ minus the flush delay (tails, retransmissions and connection resets included, FIFO kept);
// each honest clock stays within ±ε/2 of true time (a bounded skew plus a bounded, drifting
// wander, never a jump); no replica pauses (a paused honest replica would break Δ; a crash is
// one of the t faults). Client links stay as lossy as in failstop: the protocol assumes nothing
// of them.
constexpr uint64_t kDeltaMinUs = 2'000;
constexpr uint64_t kDeltaMaxUs = 20'000;
constexpr uint64_t kEpsilonMinUs = 200;
constexpr uint64_t kEpsilonMaxUs = 3'000;
constexpr int32_t kWanderDriftMaxPpm = 200;
// Byzantine clients' slots in RequestDelivery::client start here (honest ones are below).
constexpr size_t kByzantineClientBase = 1'000'000;
// The administrator's requests (byzantine membership changes), for the trace.
constexpr size_t kAdministratorClient = 2'000'000;
// Byzantine membership changes (docs/DESIGN.md §11.9) on this share of the non-durable seeds
// when drawn (`lockstep sim`); spare slots are listed after the first members.
constexpr uint32_t kByzantineMembershipPerMillion = 300'000;
// Client principals: honest clients 1.., Byzantine ones from here.
constexpr uint32_t kByzantinePrincipalBase = 1000;
constexpr size_t kSniffedRequestsMax = 256;  // honest requests a Byzantine client may replay
// Checkpoints and catching up (docs/DESIGN.md §11.7). Runs last a few seconds, so intervals of
// 50..500 ms of order time give several boundaries per run; never below the runtime's own floor
// (runtime/config.h, kCheckpointIntervalLatencies: 4 decision latencies), which a deployment
// cannot go under either.
constexpr uint64_t kCheckpointIntervalMinUs = 50'000;
constexpr uint64_t kCheckpointIntervalMaxUs = 500'000;
constexpr uint64_t kCheckpointIntervalLatencies = 4;
// A restarted honest replica's machine is down this long at most (on some seeds only short
// outages, below the shortest interval; on others up to a few intervals).
constexpr uint64_t kCatchUpShortDowntimeMaxNs = 40 * kMs;
constexpr uint64_t kCatchUpDowntimeMaxNs = 2 * kSec;
// A rolling restart (every honest replica in turn) that has no budget right now tries again.
constexpr uint64_t kRollingRetryNs = 100 * kMs;
// Durable byzantine runs (docs/DESIGN.md §11.8): on this share of the seeds, with the order
// certified every 1–5 ms of order time; checkpoint boundaries fall on certified positions.
constexpr uint32_t kByzantineDurablePerMillion = 400'000;
constexpr uint64_t kCertifyIntervalMinUs = 1'000;
constexpr uint64_t kCertifyIntervalMaxUs = 5'000;

using RequestKey = std::pair<ClientId, Sequence>;

std::string key_text(const RequestKey& key) {
  return describe_request_key(key.first, key.second);
}

std::string time_text(uint64_t ns) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%llu.%09llu", static_cast<unsigned long long>(ns / kSec),
                static_cast<unsigned long long>(ns % kSec));
  return buffer;
}

// ---- the swarm profile: which faults this seed enables, and how often ----------------------

struct Profile {
  // Network: delay = uniform [low, high], doubled while a coin with `tail` comes up.
  uint64_t delay_low_ns = 0;
  uint64_t delay_high_ns = 0;
  uint32_t tail_per_million = 0;
  uint64_t client_delay_cap_ns = 0;  // client links may be much slower than replica links
  uint32_t retransmit_per_million = 0;
  uint32_t reset_per_million = 0;
  uint32_t client_loss_per_million = 0;
  uint32_t client_duplicate_per_million = 0;
  // Replica stepping: share of inputs whose output is taken a little later (batching).
  uint32_t batch_per_million = 0;
  uint64_t tick_interval_ns = 0;
  uint64_t heartbeat_interval_ns = 0;
  uint64_t relay_timeout_ns = 0;
  uint64_t client_retry_ns = 0;
  // Clocks: skew bound and drift bound (the configured bounds the clocks stay within).
  int64_t skew_max_ns = 0;
  int32_t drift_max_ppm = 0;
  // Budgeted faults (crash, long pause): each unit of t is used with this probability, at a
  // uniformly drawn time of the fault phase.
  uint32_t budget_use_per_million = 0;
  uint32_t long_pause_share_per_million = 0;  // of the budgeted faults, the share of long pauses
  // Fault episodes: relative weights (0 = this kind is off for the seed) and mean spacing.
  uint32_t weight_pause = 0;
  uint32_t weight_partition = 0;
  uint32_t weight_client_crash = 0;
  uint32_t weight_clock_jump = 0;
  uint64_t fault_interval_ns = 0;
  uint64_t think_max_ns = 0;
  uint32_t pipeline_per_million = 0;  // share of clients that pipeline
  // Durable runs: episode weights, the share of crashes that tear unsynced writes, and the share
  // of the planned budgeted crashes that restart after the others removed the replica.
  uint32_t weight_restart = 0;
  uint32_t weight_cluster_crash = 0;
  uint32_t weight_corruption = 0;
  uint32_t torn_per_million = 0;
  uint32_t long_restart_share_per_million = 0;
  // Reconfiguration runs: episode weights.
  uint32_t weight_operator_remove = 0;
  uint32_t weight_rejoin = 0;
  uint32_t weight_wipe_rejoin = 0;
  uint32_t weight_spare_join = 0;
  // Byzantine restarts (kCatchUpRestart): episode weight, the share of restarts that bring back a
  // replica that crashed for good, the chance that a replica restarts again soon after it loaded,
  // every honest replica restarting in turn, and how long a restarted machine stays down.
  uint32_t weight_catch_up = 0;
  uint32_t revive_per_million = 0;
  uint32_t restart_again_per_million = 0;
  bool rolling_restarts = false;
  uint64_t catch_up_downtime_max_ns = 0;
};

// ---- events ---------------------------------------------------------------------------------

struct PeerDelivery {
  ReplicaId from;
  ReplicaId to;
  uint64_t channel_sequence;
  ReplicaMessage message;
};
struct RequestDelivery {
  size_t client;  // slot index, for the trace
  ReplicaId to;
  ClientRequest request;
};
struct ReplyDelivery {
  size_t client;
  ClientReply reply;
  uint64_t generation = 0;  // the sender's (durable runs: dropped if it crashed since)
};
// Byzantine mode: one replica's signed replies to one client, from one take_output.
struct SignedReplyDelivery {
  size_t client;
  SignedReplies batch;
};
struct ByzantineClientAct {
  size_t index;
};
struct ReplicaTick {
  ReplicaId replica;
  uint64_t generation = 0;  // the process it belongs to; a crash ends its chain
};
struct ReplicaFlush {
  ReplicaId replica;
  uint64_t generation = 0;
};
struct ClientTick {
  size_t client;
};
struct ClientWake {
  size_t client;
  size_t lane;
};
// The episodic fault driver's next draw, or (with `planned`) one of the run's budgeted faults,
// which are planned at set-up so they spread over the whole fault phase.
struct FaultDue {
  std::optional<FaultKind> planned;
  std::optional<ReplicaId> target;  // a planned fault meant for this replica
  bool rolling = false;             // byzantine rolling restarts: retried until it happens
};
struct PauseEnd {
  ReplicaId replica;
  uint64_t pause_number;
};
struct LivenessDeadline {};
struct SettleCheck {};
// Durable runs: an fsync of a replica's log completes (its held outputs are released).
struct DiskSync {
  ReplicaId replica;
  uint64_t generation = 0;
};
// Durable runs: a crashed replica's machine comes back and the replica recovers from its disk.
struct RestartDue {
  ReplicaId replica;
  uint64_t generation = 0;
};
// Reconfiguration: an operator's add-replica or remove-replica reaches every live member.
struct AdminDue {
  ReplicaId replica;
  MembershipChange change;
};
// Byzantine: a spare's machine is started (before or after the change that adds it was sent).
struct SpareStart {
  ReplicaId replica;
};

using EventBody = std::variant<PeerDelivery, RequestDelivery, ReplyDelivery, ReplicaTick,
                               ReplicaFlush, ClientTick, ClientWake, FaultDue, PauseEnd,
                               LivenessDeadline, SettleCheck, SignedReplyDelivery,
                               ByzantineClientAct, DiskSync, RestartDue, AdminDue, SpareStart>;

struct Event {
  uint64_t at_ns;
  uint64_t order;  // tiebreak: equal times run in scheduling order (keeps channels FIFO)
  EventBody body;
};

// What the heap orders: the body stays put in a slab, since moving message-carrying variants up
// and down the heap was the simulator's largest cost.
struct QueuedEvent {
  uint64_t at_ns;
  uint64_t order;
  size_t body;  // index into Simulator::bodies_
};

struct EventLater {
  bool operator()(const QueuedEvent& a, const QueuedEvent& b) const {
    return a.at_ns != b.at_ns ? a.at_ns > b.at_ns : a.order > b.order;
  }
};

// ---- participants ---------------------------------------------------------------------------

// A replica's clocks: wall = epoch + t + t*drift + skew + jumps + wander; monotonic = offset + t +
// t*drift. Integer ppm arithmetic, so the same seed gives the same clocks on any machine.
//
// The wander (byzantine mode, where drift and jumps are zero) is a triangle wave of amplitude
// `wander_ns` and period `wander_period_ns`: the clock runs fast, then slow, by the same rate, as a
// clock disciplined by NTP does, so it drifts without ever leaving skew ± wander_ns.
struct ReplicaClock {
  int64_t skew_ns = 0;
  int32_t drift_ppm = 0;
  int64_t jump_ns = 0;
  uint64_t monotonic_offset_ns = 0;
  int32_t monotonic_drift_ppm = 0;
  uint64_t wander_ns = 0;
  uint64_t wander_period_ns = 0;
  uint64_t wander_phase_ns = 0;

  int64_t wander_at(uint64_t sim_ns) const {
    if (wander_ns == 0 || wander_period_ns < 2) return 0;
    const uint64_t u = (sim_ns + wander_phase_ns) % wander_period_ns;
    const uint64_t half = wander_period_ns / 2;
    // 0 -> -A, half -> +A, period -> -A.
    const auto rise = static_cast<uint64_t>(static_cast<Uint128>(2 * wander_ns) *
                                            std::min(u, half) / std::max<uint64_t>(half, 1));
    const auto fall = u > half ? static_cast<uint64_t>(static_cast<Uint128>(2 * wander_ns) *
                                                       (u - half) / std::max<uint64_t>(half, 1))
                               : 0;
    return -static_cast<int64_t>(wander_ns) + static_cast<int64_t>(rise) -
           static_cast<int64_t>(fall);
  }

  Now at(uint64_t sim_ns) const {
    const auto t = static_cast<int64_t>(sim_ns);
    const int64_t wall_ns = kWallEpochNs + t + t / 1'000'000 * drift_ppm +
                            (t % 1'000'000) * drift_ppm / 1'000'000 + skew_ns + jump_ns +
                            wander_at(sim_ns);
    // Monotonic drift is at most 100 ppm in magnitude, so the clock never goes backwards.
    const int64_t monotonic =
        t + t / 1'000'000 * monotonic_drift_ppm + (t % 1'000'000) * monotonic_drift_ppm / 1'000'000;
    return Now{monotonic_offset_ns + static_cast<uint64_t>(monotonic),
               static_cast<uint64_t>(wall_ns) / 1000};
  }
};

using ReplicaInput = std::variant<PeerDelivery, RequestDelivery>;

struct ReplicaSlot {
  std::unique_ptr<Replica> replica;
  // From the replica's StateTransferObserver: states it built as a donor in this step, and the
  // one it loaded in this step.
  std::vector<std::pair<ReplicaId, StateTransfer>> built_transfers;
  std::optional<StateTransfer> loaded_transfer;
  ReplicaClock clock;
  bool crashed = false;
  bool paused = false;
  uint64_t pause_number = 0;
  uint64_t resumed_ns = 0;
  std::deque<ReplicaInput> inbox;  // inputs that arrived while paused, in arrival order
  bool flush_scheduled = false;
  // Counted against t: crashed, or paused long enough to be removed.
  bool budgeted = false;
  bool halted_seen = false;
  // Checker state.
  uint64_t executed_position = 0;      // length of this replica's executed sequence
  std::set<RequestKey> executed_once;  // outcome kExecuted
  std::set<RequestKey> executed_any;   // any outcome: the replica may answer these
  // Bumped at every crash: events, replies and frames of an older process are stale.
  uint64_t generation = 0;
  // Durable runs.
  failstop::Options options;  // to start a new process (with a new incarnation)
  std::unique_ptr<storage::MemoryStorage> disk;
  std::optional<storage::ReplicaStore> store;
  // Outputs of steps whose records are not synced yet, in step order; released by DiskSync.
  struct Held {
    std::vector<Replica::PeerMessage> to_peers;
    std::vector<ClientReply> to_clients;
  };
  std::deque<Held> held;
  bool sync_scheduled = false;
  bool sync_due_on_resume = false;
  // Checkpoint log index -> executed_position when it was taken: where a replica recovered from
  // that checkpoint resumes in the agreed sequence.
  std::map<uint64_t, uint64_t> checkpoint_positions;
  uint64_t checkpoint_position = 0;  // executed_position at the latest checkpoint
  // Executions up to here are backed by synced records (its disk would give them back).
  uint64_t synced_position = 0;
  // The furthest any process of this replica got in the agreed sequence (not reset by restarts).
  uint64_t executed_high = 0;
  uint64_t checkpoint_log_index = 0;
  bool restart_pending = false;
  bool restart_releases_unit = false;  // a short downtime: back as the same member
  bool restart_after_corruption = false;
  bool refused = false;  // recovery refused its damaged disk: down for good
  bool in_cluster_crash = false;
  bool crashed_for_good = false;  // by a replica_crash, and not restarted since
  uint64_t restarts = 0;
  // Reconfiguration.
  bool spare_idle = false;        // the spare slot, not started yet: not a failure
  bool spare_joining = false;     // the spare, started as a joiner and not loaded yet
  bool operator_removed = false;  // barred by an operator; an add must come before it rejoins
  bool admin_removed = false;     // byzantine: a signed change removes (or removed) it
  bool restart_join = false;      // the pending restart starts a joiner (Options::join)
  bool restart_wipe = false;      // ... on an empty disk
  // Operator requests (change, replica) that reached it while paused: handled on resume.
  std::vector<std::pair<MembershipChange, ReplicaId>> pending_admins;
  bool loaded_digest_due = false;
  uint32_t add_retries = 0;  // loaded a state: its digest at the next flush is checked
  uint64_t state_loads = 0;
  // Byzantine mode: the options a new process of this slot starts with (same key, same clock),
  // and a restarted process that has not loaded a checkpoint yet (a unit of t), since when.
  byzantine::Options byzantine_options;
  bool catching_up = false;
  uint64_t catch_up_started_ns = 0;
  // The most pieces an honest donor's transfer to it (since its last load) takes: each costs a
  // round trip, which the catch-up deadline allows for (seeds 1958, 4147).
  uint64_t transfer_pieces = 0;
  // Durable byzantine runs: restarted from its own disk and not serving again yet; an honest
  // replica of a whole-cluster crash that has not served since; executions of a faulty replica
  // (not checked, but they schedule its checkpoints).
  bool restarted_from_disk = false;
  bool cluster_recovering = false;
  uint64_t unchecked_executions = 0;
};

// A replica->replica channel: FIFO by construction (a message never arrives before one sent
// earlier on the same channel), which is what the runtime's per-channel sequence numbers and
// retransmission give the protocol.
struct Channel {
  uint64_t last_delivery_ns = 0;
  uint64_t sent = 0;
  uint64_t delivered = 0;
  // Frames in (lost_after, lost_through] are lost: their sender crashed before they left (a
  // random prefix of the in-flight ones gets out), or, in durable runs, one end crashed while
  // they were in flight (a connection reset loses them all; later frames belong to a new process).
  uint64_t lost_after = UINT64_MAX;
  uint64_t lost_through = UINT64_MAX;
  // Durable runs, the runtime's peer channel (net/peer_channel.h) across restarts: the generation
  // of the receiver's process that the sender's process has connected to (kUnknownGeneration: none
  // yet). Frames for a receiver that is down are dropped when the sender knew its old process
  // (the new one's Hello drops the buffer), and otherwise wait here for the new process.
  static constexpr uint64_t kUnknownGeneration = UINT64_MAX;
  uint64_t receiver_generation_known = 0;
  std::vector<ReplicaMessage> parked;
};

struct Operation {
  Sequence sequence;
  uint64_t history_id;
  check::OpKind kind;
};

struct ClientSlot {
  std::unique_ptr<ClientSession> session;
  bool crashed = false;
  bool crash_armed = false;  // crashes in the middle of its next broadcast
  // In-flight operations, one per lane. A pipelining client has several lanes; each lane is one
  // "client" of the history (which allows one operation at a time per client).
  std::vector<std::optional<Operation>> lanes;
  std::vector<uint64_t> partitioned_until_ns;  // per replica
  uint32_t principal = 0;                      // byzantine mode: whose key signs its requests
  Sequence last_sequence{};
};

// Byzantine mode: a lying client. It has its own principal and key and works on its own keys
// ("byz-..."), so the honest clients' history stays checkable; what it does to the replicas is
// checked by their agreement. (There are no client timestamps in this design, so a client has no
// channel to lie about time.)
enum class ClientLie : uint8_t { kEquivocate, kBadSignature, kImpersonate, kReplay };
inline constexpr size_t kClientLieCount = 4;

std::string_view client_lie_name(ClientLie lie) {
  switch (lie) {
    case ClientLie::kEquivocate:
      return "equivocate";
    case ClientLie::kBadSignature:
      return "bad_signature";
    case ClientLie::kImpersonate:
      return "impersonate";
    case ClientLie::kReplay:
      return "replay";
  }
  return "unknown";
}

struct ByzantineClientSlot {
  uint32_t principal = 0;
  ClientId id{};
  const crypto::Signer* signer = nullptr;
  std::array<bool, kClientLieCount> lies{};
  uint64_t next_sequence = 1;
  std::deque<ClientRequest> sent;  // its own, for replays
};

// ---- the simulator ----------------------------------------------------------------------------

class Simulator {
 public:
  explicit Simulator(const SimOptions& options) : options_(options), random_(options.seed) {
    LOCKSTEP_ASSERT(!byzantine_mode() || !options_.clock_beyond_bounds.value_or(false),
                    "the byzantine mode assumes synchronized clocks");
    draw_profile();
  }

  RunResult run();

 private:
  enum class Phase : uint8_t { kFaults, kHeal, kQuiesce, kDone };

  void draw_profile();
  void draw_byzantine_profile(Random& draw);
  void draw_byzantine_durability();
  void draw_byzantine_membership();
  void set_catch_up_margin();
  void set_up();
  void set_up_byzantine(Random& draw);
  bool byzantine_mode() const { return options_.mode == Mode::kByzantine; }
  bool durable() const { return run_profile_.durable; }
  bool reconfiguration() const { return run_profile_.reconfiguration; }
  bool byzantine_restarts() const { return run_profile_.restarts; }

  // Scheduling.
  void schedule(uint64_t at_ns, EventBody body);
  void dispatch(Event& event);

  // Replicas.
  void deliver_to_replica(ReplicaInput input);
  void step_replica(ReplicaId r, ReplicaInput& input);
  void tick_replica(ReplicaId r);
  void after_step(ReplicaId r);
  void flush_replica(ReplicaId r);
  void send_peer(ReplicaId from, ReplicaId to, ReplicaMessage message);
  void send_injected(ReplicaId from, ByzantineHook::Injection injection);
  void send_reply(ReplicaId from, ClientReply reply);
  void send_signed_replies(ReplicaId from, std::vector<ClientReply> replies);
  void deliver_signed_replies(size_t c, const SignedReplies& batch);
  void record_honest_output(ReplicaId r, const ClientReply& reply);
  void check_accepted(size_t c, const RequestKey& key, const Bytes& result);
  void resume(ReplicaId r);
  void crash(ReplicaId r);
  // Durable runs.
  void release_output(ReplicaId r, std::vector<Replica::PeerMessage> to_peers,
                      std::vector<ClientReply> to_clients);
  void persist(ReplicaId r, Replica::Output& output);
  void maybe_checkpoint(ReplicaId r);
  void write_checkpoint(ReplicaId r);
  void schedule_sync(ReplicaId r);
  void disk_sync(ReplicaId r);
  void restart(ReplicaId r);
  bool crash_for_restart(ReplicaId r, uint64_t downtime_ns, bool releases_unit);
  // A replica that holds the agreed sequence's first `position` executions (recovered or loaded):
  // what it executed and answered, for the exactly-once and reply checks from here on.
  void hold_agreed_prefix(ReplicaSlot& slot, uint64_t position) const;
  bool corrupt_disk(ReplicaId r);
  bool cluster_crash();
  storage::WalOptions wal_options() const;
  void open_fresh_disk(ReplicaSlot& slot);
  bool restart_window_open() const;
  void forget_unsynced_executions(ReplicaId r);
  bool membership_settled() const;
  std::optional<std::string> lost_acknowledged_write() const;
  // Reconfiguration.
  void operator_admin(MembershipChange change, ReplicaId r);
  bool apply_admin(ReplicaId member, MembershipChange change, ReplicaId r);
  void start_joiner(ReplicaId r, bool wipe);
  void wipe_disk(ReplicaId r);
  // Tags the states r built as a donor this step with its position (for on_state_loaded).
  void tag_state_transfers(ReplicaId r);
  // Installs the observer that hands the checkers every state r builds or loads.
  void observe_state_transfers(ReplicaId r);
  // The replica limits of this run: the state transfer piece size is drawn.
  ReplicaLimits limits() const {
    ReplicaLimits limits;
    limits.state_chunks.chunk_bytes = run_profile_.state_chunk_bytes;
    return limits;
  }
  void on_state_loaded(ReplicaId r, const StateTransfer& transfer);
  void check_prefix_digest(ReplicaId r, uint64_t position, const std::string& role);
  void forget_prefix_digests_after(uint64_t position);
  bool try_reconfiguration_fault(FaultKind kind, std::vector<ReplicaId> candidates);
  // Byzantine restarts.
  bool catch_up_restart(std::vector<ReplicaId> candidates, std::optional<ReplicaId> target);
  void restart_byzantine(ReplicaId r);
  void launch_byzantine_process(ReplicaId r, const byzantine::Options& options);
  // Byzantine membership changes signed by the administrator (docs/DESIGN.md §11.9).
  void administrator(MembershipChange change, ReplicaId r);
  void send_signed_change();
  void start_spare(ReplicaId r);
  void track_configurations(ReplicaId r);
  void restart_as_joiner(ReplicaId r);
  // Durable byzantine runs: a replica restarted from its disk serves again.
  void on_recovered(ReplicaId r, const std::string& how);
  // After a whole-cluster crash: what the recovered cluster executes at `position` replaces the
  // agreed sequence from there (uncertified executions may be dropped, acknowledged ones never).
  // Cuts the agreed sequence back to `position` after a whole-cluster crash (`continuation` says
  // what comes there instead, for the failure message).
  void cut_agreed_sequence(ReplicaId r, uint64_t position, const std::string& continuation);
  void record_checkpoint_votes(ReplicaId r, const std::vector<Replica::PeerMessage>& to_peers);
  void on_checkpoint_loaded(ReplicaId r, const StateTransfer& transfer);
  void forge_for_joiner(ReplicaMessage& message);
  std::optional<std::string> catch_up_overdue(uint64_t by_ns) const;

  // Clients.
  void start_operation(size_t c, size_t lane);
  void drain_client(size_t c);
  void send_request(size_t c, const ClientSession::Send& send);
  void crash_client_mid_broadcast(size_t c, std::vector<ClientSession::Send> sends);
  size_t add_client(std::optional<uint32_t> principal = std::nullopt);
  void byzantine_client_act(size_t index);
  void send_byzantine_request(size_t index, ReplicaId to, const ClientRequest& request);

  // Faults and phases.
  void inject_fault();
  bool try_fault(FaultKind kind, std::optional<ReplicaId> target = std::nullopt);
  void count_fault(FaultKind kind, const std::string& detail);
  void maybe_end_fault_phase();
  void heal();
  void maybe_quiesce();
  void settle_check();
  std::optional<std::string> membership_problem() const;
  void final_checks();
  std::vector<check::Operation> resolved_history() const;
  std::optional<std::string> check_order_witness(
      const std::vector<check::Operation>& history) const;

  // Checks.
  void check_budget();
  void fail(std::string violation);
  uint64_t network_delay(uint64_t cap_ns);
  uint64_t think_time();
  bool live(ReplicaId r) const {
    return !replicas_[r.value].crashed && !replicas_[r.value].replica->halted();
  }
  // Failstop timestamps are hybrid clock values; byzantine ones are (τ in µs, origin).
  std::string timestamp_text(const Timestamp& timestamp) const {
    if (!byzantine_mode()) return describe(timestamp);
    return std::to_string(timestamp.clock) + "@r" + std::to_string(timestamp.source.value);
  }
  bool faulty(ReplicaId r) const { return hook_ != nullptr && hook_->is_byzantine(r); }
  // Live, honest and with a state (not a joiner still waiting for one): the replicas the checks
  // hold to the protocol's promises.
  bool serving(ReplicaId r) const {
    return live(r) && !faulty(r) && replicas_[r.value].replica->serving();
  }

  void trace(std::string line);
  void trace_event_start(const Event& event);
  void end_trace_event();

  SimOptions options_;
  Random random_;  // everything random in the run comes from here
  Profile profile_;
  RunProfile run_profile_;
  Phase phase_ = Phase::kFaults;

  std::vector<QueuedEvent> queue_;  // a binary heap ordered by EventLater
  std::vector<EventBody> bodies_;   // slab of event bodies, reused through free_bodies_
  std::vector<size_t> free_bodies_;
  uint64_t next_order_ = 0;
  uint64_t now_ns_ = 0;
  uint64_t events_ = 0;
  EventHash hash_;

  std::vector<ReplicaSlot> replicas_;
  std::vector<std::vector<Channel>> channels_;  // [from][to]
  std::vector<ClientSlot> clients_;
  std::map<ClientId, size_t> client_by_id_;
  check::HistoryRecorder history_;
  uint64_t writes_ = 0;  // makes every written value unique

  // Checkers.
  std::vector<Replica::Executed> reference_;  // the one sequence every replica's is a prefix of
  // Which serving replicas (and which process of each: its generation) each request reached, for
  // the relay check on crashed clients.
  std::map<RequestKey, std::set<std::pair<uint32_t, uint64_t>>> receivers_;
  // Operations of crashed clients, and when each request first executed anywhere.
  struct CrashedOperation {
    uint64_t history_id;
    RequestKey request;
    check::OpKind kind;
  };
  std::vector<CrashedOperation> crashed_ops_;
  std::map<RequestKey, uint64_t> history_ids_;  // every request a client sent -> its operation
  std::map<RequestKey, uint64_t> first_executed_ns_;
  uint32_t budget_used_ = 0;
  // Durable runs: replicas down in a whole-cluster crash (the budget does not apply to it).
  uint32_t cluster_down_ = 0;
  uint64_t cluster_crashes_ = 0;
  // Durable byzantine runs: honest replicas of a whole-cluster crash not serving yet (the budget
  // does not apply until all are), whether the agreed sequence may still be cut back where the
  // recovered cluster continues (from the crash until the first execution past its end or the
  // first cut), and restarted replicas that served again.
  uint32_t cluster_recovering_ = 0;
  bool cluster_rewrite_open_ = false;
  uint64_t boundary_voted_before_crash_us_ = 0;  // the last boundary honest votes named then
  uint64_t recoveries_completed_ = 0;
  uint64_t crashes_ended_by_cluster_crash_ = 0;
  uint64_t recoveries_with_ruling_ = 0;
  // The whole-cluster recovery under way runs with the operator's ruling (the faulty replicas
  // excused): they then behave as they like, their own claims included.
  bool cluster_ruling_ = false;
  uint64_t last_restart_ns_ = 0;

  // Reconfiguration checkers. Every StateTransfer a donor sends is tagged (by a hash of its two
  // blobs) with the donor's position in the agreed sequence and its service digest when it was
  // filled; `prefix_digests_` holds the service digest seen at a position of the agreed sequence
  // (by a donor, a joiner that loaded, or a replica at a flush), which every replica seen at that
  // position later must match.
  struct TransferTag {
    uint64_t position = 0;
    uint64_t digest = 0;
    uint32_t donor = 0;
  };
  std::map<uint64_t, TransferTag> transfer_tags_;
  std::map<uint64_t, std::pair<uint64_t, std::string>> prefix_digests_;
  uint64_t state_transfers_loaded_ = 0;
  uint64_t state_chunks_sent_ = 0;
  uint64_t admin_nonce_ = 0;

  // The byzantine mode.
  ByzantineHook* hook_ = nullptr;  // options_.hooks.byzantine, or drawn_hook_
  std::unique_ptr<DrawnByzantineHook> drawn_hook_;
  uint64_t replica_delay_cap_ns_ = kReplicaDelayMaxNs;
  uint32_t byzantine_replicas_drawn_ = 0;
  std::vector<std::unique_ptr<crypto::Signer>> replica_signers_;
  std::map<uint32_t, std::unique_ptr<crypto::Signer>> client_signers_;  // by principal
  std::unique_ptr<crypto::Verifier> verifier_;
  std::map<uint32_t, uint32_t> sessions_;  // per honest principal: sessions started
  std::vector<ByzantineClientSlot> byzantine_clients_;
  std::deque<ClientRequest> sniffed_;  // honest requests seen on client links
  // What honest replicas answered (the first kOk result for each request), and results honest
  // clients accepted before any honest replica's answer was seen (checked when it is).
  std::map<RequestKey, std::pair<ReplicaId, Bytes>> honest_outputs_;
  std::map<RequestKey, std::pair<size_t, Bytes>> unconfirmed_accepts_;
  // Byzantine checkpoints: the digest honest replicas signed for each boundary (and the first
  // who did), which is what a replica catching up must load.
  std::map<uint64_t, std::pair<Digest, uint32_t>> honest_checkpoints_;
  // A restarted replica started this long ago must have loaded (see catch_up_overdue).
  uint64_t catch_up_margin_ns_ = 0;
  uint64_t snapshots_refused_ = 0;    // by processes that are gone (the live ones count at the end)
  uint64_t late_behaviour_seed_ = 0;  // forge_state and later behaviours draw from this
  // Byzantine membership changes: the spares listed after the first members, when the first
  // change is sent, whether an honest member is removed after it, the administrator's key, the
  // configuration the honest replicas adopted last, and the change in flight.
  uint32_t spares_ = 0;
  bool spares_start_late_ = false;
  uint64_t change_at_ns_ = 0;
  bool removal_planned_ = false;
  const crypto::Signer* administrator_signer_ = nullptr;
  Configuration adopted_;
  uint32_t administrator_session_ = 0;
  struct ChangeInFlight {
    MembershipChange kind;
    ReplicaId replica;
    ConfigurationChange change;
    ClientRequest request;
    uint32_t signings = 0;
  };
  std::optional<ChangeInFlight> change_in_flight_;
  // From a change's signing until its new members loaded a state (or the removed one halted):
  // the replicas it adds count against the new t until then, so no replica crashes meanwhile
  // (DESIGN §11.9: a new member loads at the change's boundary from the old members' votes, or
  // later from t'+1 caught-up new ones).
  bool membership_changing() const;
  std::vector<ReplicaId> rolling_order_;
  size_t rolling_next_ = 0;
  std::optional<ReplicaId> rolling_target_;

  uint64_t heal_ns_ = 0;
  uint64_t quiesce_ns_ = 0;
  uint64_t ops_submitted_ = 0;
  uint64_t ops_completed_ = 0;
  uint64_t ops_unknown_ = 0;
  FaultCounts faults_{};
  uint64_t episodes_ = 0;

  std::optional<std::string> violation_;
  bool tracing_ = false;
  std::deque<std::string> trace_tail_;
  std::string trace_header_;   // the current event
  std::string current_trace_;  // what happened during it, one indented line each
  bool trace_quiet_ = false;   // a timer event: shown only when something happened
};

void Simulator::draw_profile() {
  // The profile comes from its own stream, so that the schedule and the workload do not shift
  // when a profile parameter is added.
  Random draw = random_.fork();
  Profile& p = profile_;
  run_profile_.mode = options_.mode;
  // State transfers in pieces on half the seeds, from a stream of their own (no other draw moves).
  Random pieces(options_.seed ^ 0x5ec7c4u);
  // (Not with the planted forged load: it forges whole StateTransfers.)
  const bool in_pieces = pieces.chance(500'000) && !options_.planted.load_forged_state;
  run_profile_.state_chunk_bytes =
      in_pieces ? pieces.between(32, 512) : ReplicaLimits{}.state_chunks.chunk_bytes;
  uint32_t t = 0;
  if (byzantine_mode()) {
    // n = 2t+1 grows fast and every instance costs O(n^2) messages: t = 3 on a few seeds only.
    t = options_.t.value_or(draw.chance(50'000) ? 3 : static_cast<uint32_t>(draw.between(1, 2)));
  } else {
    t = options_.t.value_or(static_cast<uint32_t>(draw.between(1, 3)));
  }
  LOCKSTEP_ASSERT(t >= 1 && t <= 8, "t must be in 1..8");
  run_profile_.t = t;
  run_profile_.replicas = byzantine_mode() ? 2 * t + 1 : t + 1;
  run_profile_.clients = options_.clients.value_or(static_cast<uint32_t>(draw.between(2, 12)));
  LOCKSTEP_ASSERT(run_profile_.clients >= 1, "a run needs a client");
  run_profile_.keys = static_cast<uint32_t>(draw.between(1, 5));
  run_profile_.fault_phase_ns = draw.between(1500 * kMs, 5 * kSec);
  run_profile_.clock_beyond_bounds =
      !byzantine_mode() && options_.clock_beyond_bounds.value_or(draw.chance(150'000));

  p.delay_low_ns = draw.between(20 * kUs, 500 * kUs);
  p.delay_high_ns = p.delay_low_ns + draw.between(0, 3 * kMs);
  p.tail_per_million = static_cast<uint32_t>(draw.between(0, 300'000));
  p.client_delay_cap_ns = draw.chance(300'000) ? draw.between(100 * kMs, 2 * kSec) : 50 * kMs;
  // Each per-message fault is on for about half the seeds, at a rate drawn for the seed.
  auto maybe_rate = [&](uint32_t max_per_million) -> uint32_t {
    return draw.chance(500'000) ? static_cast<uint32_t>(draw.between(1, max_per_million)) : 0;
  };
  p.retransmit_per_million = maybe_rate(50'000);
  p.reset_per_million = maybe_rate(5'000);
  p.client_loss_per_million = maybe_rate(200'000);
  p.client_duplicate_per_million = maybe_rate(100'000);
  p.batch_per_million = maybe_rate(900'000);
  p.pipeline_per_million = maybe_rate(1'000'000);
  p.tick_interval_ns = draw.between(1 * kMs, kTickMaxNs);
  p.heartbeat_interval_ns = draw.between(2 * kMs, kHeartbeatMaxNs);
  p.relay_timeout_ns = draw.between(20 * kMs, 100 * kMs);
  p.client_retry_ns = draw.between(50 * kMs, 300 * kMs);
  p.skew_max_ns = static_cast<int64_t>(draw.between(0, 100 * kMs));
  p.drift_max_ppm = static_cast<int32_t>(draw.between(0, 500));

  // Episode kinds: each on with some probability; short pauses and partitions are always
  // possible, so the schedule can reach faults_min whatever else is off.
  auto maybe_weight = [&](uint32_t on_per_million) -> uint32_t {
    return draw.chance(on_per_million) ? static_cast<uint32_t>(draw.between(1, 10)) : 0;
  };
  constexpr std::array<uint32_t, 4> kBudgetUse = {0, 300'000, 700'000, 1'000'000};
  p.budget_use_per_million = kBudgetUse[draw.below(kBudgetUse.size())];
  p.long_pause_share_per_million = static_cast<uint32_t>(draw.between(0, 1'000'000));
  p.weight_client_crash = maybe_weight(600'000);
  p.weight_clock_jump = run_profile_.clock_beyond_bounds ? maybe_weight(800'000) : 0;
  p.weight_pause = static_cast<uint32_t>(draw.between(1, 10));
  p.weight_partition = static_cast<uint32_t>(draw.between(1, 10));
  const uint64_t episodes_target = draw.between(options_.faults_min, 3 * options_.faults_min);
  p.fault_interval_ns = run_profile_.fault_phase_ns / std::max<uint64_t>(episodes_target, 1);

  // Think time spreads the operations over the fault phase: each client runs ops / clients
  // operations in about fault_phase_ns.
  const uint64_t per_client =
      std::max<uint64_t>(1, options_.ops / std::max<uint32_t>(run_profile_.clients, 1));
  p.think_max_ns = 2 * run_profile_.fault_phase_ns / per_client;
  if (byzantine_mode()) {
    draw_byzantine_profile(draw);
    draw_byzantine_durability();
    draw_byzantine_membership();
    return;
  }
  // Durability is drawn last, from the profile's own stream, so that a seed that draws a
  // non-durable run runs exactly as it did before durability existed.
  run_profile_.durable = options_.durable.value_or(draw.chance(350'000));
  if (durable()) {
    run_profile_.checkpoint_interval = draw.between(kCheckpointIntervalMin, kCheckpointIntervalMax);
    // An fsync: instant (a battery-backed cache) on some seeds, a fast SSD on most, a slow disk
    // on some.
    run_profile_.sync_latency_ns = draw.chance(200'000) ? 0
                                   : draw.chance(600'000)
                                       ? draw.between(10 * kUs, 1 * kMs)
                                       : draw.between(1 * kMs, kSyncLatencyMaxNs);
    p.weight_restart = static_cast<uint32_t>(draw.between(2, 10));
    p.weight_cluster_crash = draw.chance(600'000) ? static_cast<uint32_t>(draw.between(1, 3)) : 0;
    p.weight_corruption = draw.chance(600'000) ? static_cast<uint32_t>(draw.between(1, 4)) : 0;
    p.torn_per_million = maybe_rate(1'000'000);
    p.long_restart_share_per_million = static_cast<uint32_t>(draw.between(0, 1'000'000));
  }
  // Reconfiguration, drawn after everything else for the same reason. Each kind is on for most
  // reconfiguring seeds; a spare slot (a cluster of t+1 members and one more listed replica) on
  // a share of them.
  const bool drawn_reconfiguration = draw.chance(500'000);
  run_profile_.reconfiguration =
      options_.reconfiguration.value_or(options_.draw_reconfiguration && drawn_reconfiguration);
  if (!reconfiguration()) return;
  auto reconfiguration_weight = [&]() -> uint32_t {
    return draw.chance(700'000) ? static_cast<uint32_t>(draw.between(1, 6)) : 0;
  };
  p.weight_operator_remove = reconfiguration_weight();
  p.weight_rejoin = reconfiguration_weight();
  p.weight_wipe_rejoin = reconfiguration_weight();
  if (draw.chance(400'000)) {
    run_profile_.spare = static_cast<int32_t>(draw.below(run_profile_.replicas + 1));
    ++run_profile_.replicas;
    p.weight_spare_join = static_cast<uint32_t>(draw.between(2, 8));
  }
  // Rejoining needs something to rejoin: with reconfiguration on, the budget is always in use.
  if (p.weight_rejoin != 0 && p.budget_use_per_million == 0) p.budget_use_per_million = 700'000;
}

void Simulator::draw_byzantine_profile(Random& draw) {
  Profile& p = profile_;
  RunProfile& run = run_profile_;
  run.delta_us = draw.between(kDeltaMinUs, kDeltaMaxUs);
  run.epsilon_us = draw.between(kEpsilonMinUs, kEpsilonMaxUs);
  // Every honest message within Δ, processing (the flush delay) included.
  replica_delay_cap_ns_ = run.delta_us * kUs - kFlushDelayMaxNs;
  // Honest clocks within ±ε/2 of true time (1 µs kept for the truncation to µs): skew and
  // wander share that, and nothing else moves them.
  p.skew_max_ns = static_cast<int64_t>(run.epsilon_us * kUs / 2 - kUs);
  p.drift_max_ppm = static_cast<int32_t>(draw.between(0, kWanderDriftMaxPpm));
  // No pauses, no clock jumps, and a unit of the budget is spent by a crash, never a removal.
  p.weight_pause = 0;
  p.weight_clock_jump = 0;
  p.long_pause_share_per_million = 0;
  const uint32_t t = run.t;
  run.byzantine_replicas = options_.byzantine_replicas.value_or(
      // Mostly at least one liar, often the whole budget (the Dolev–Strong attacks need t).
      draw.chance(150'000)   ? 0
      : draw.chance(500'000) ? t
                             : static_cast<uint32_t>(draw.between(1, t)));
  LOCKSTEP_ASSERT(run.byzantine_replicas <= t, "at most t faulty replicas");
  run.byzantine_clients =
      options_.byzantine_clients.value_or(static_cast<uint32_t>(draw.between(0, 3)));
  byzantine_replicas_drawn_ = run.byzantine_replicas;

  // Checkpoints and restarts (§11.7), drawn last so that every draw above kept its value.
  const byzantine::Options defaults;
  const uint64_t latency_us = defaults.slot_us + (t + 1) * (run.delta_us + run.epsilon_us);
  const uint64_t interval_floor_us =
      std::max(kCheckpointIntervalMinUs, kCheckpointIntervalLatencies * latency_us);
  run.checkpoint_interval_us = draw.between(
      interval_floor_us, std::max(kCheckpointIntervalMaxUs, interval_floor_us + 100'000));
  const bool drawn_restarts = draw.chance(750'000);
  run.restarts = options_.restarts.value_or(drawn_restarts);
  const auto weight_catch_up = static_cast<uint32_t>(draw.between(2, 10));
  p.revive_per_million = static_cast<uint32_t>(draw.between(0, 500'000));
  p.restart_again_per_million = static_cast<uint32_t>(draw.between(0, 600'000));
  p.rolling_restarts = draw.chance(300'000);
  p.catch_up_downtime_max_ns =
      draw.chance(500'000) ? kCatchUpShortDowntimeMaxNs : kCatchUpDowntimeMaxNs;
  late_behaviour_seed_ = draw.next_u64();
  // A restart needs a free unit of t: on most seeds whose liars took the whole budget, one
  // fewer liar (a new draw; the liars drawn above keep their places).
  const bool free_a_unit = draw.chance(600'000);
  if (run.restarts && free_a_unit && !options_.byzantine_replicas && run.byzantine_replicas == t) {
    --run.byzantine_replicas;
    byzantine_replicas_drawn_ = run.byzantine_replicas;
  }
  if (run.restarts) {
    p.weight_catch_up = weight_catch_up;
  } else {
    p.rolling_restarts = false;
  }
  set_catch_up_margin();
}

void Simulator::set_catch_up_margin() {
  // A restarted replica loads by: its participation start (σ + 2D after its first input), the
  // first boundary after it (an interval), that boundary's votes (decided a latency after it,
  // then Δ), the request and the snapshot (2Δ); one more interval in case its donors moved on
  // (or crashed) before they answered, and one more latency and a tick of slack.
  const RunProfile& run = run_profile_;
  const byzantine::Options defaults;
  const uint64_t latency_us = defaults.slot_us + (run.t + 1) * (run.delta_us + run.epsilon_us);
  catch_up_margin_ns_ =
      (2 * run.checkpoint_interval_us + 3 * latency_us + 4 * (run.delta_us + run.epsilon_us)) *
          kUs +
      kTickMaxNs + 10 * kMs;
}

void Simulator::draw_byzantine_durability() {
  // From a stream of its own, so that a seed that draws a non-durable run is exactly the run it
  // was before durability existed in this mode.
  Random draw(options_.seed ^ 0xd0ab1e5u);
  const bool drawn = draw.chance(kByzantineDurablePerMillion);
  run_profile_.durable = options_.durable.value_or(drawn);
  if (!durable()) return;
  RunProfile& run = run_profile_;
  Profile& p = profile_;
  run.certify_interval_us = draw.between(kCertifyIntervalMinUs, kCertifyIntervalMaxUs);
  // Checkpoint boundaries on certified positions: rounded up to a multiple of the interval.
  run.checkpoint_interval_us = (run.checkpoint_interval_us + run.certify_interval_us - 1) /
                               run.certify_interval_us * run.certify_interval_us;
  set_catch_up_margin();
  run.checkpoint_interval = draw.between(kCheckpointIntervalMin, kCheckpointIntervalMax);
  // Persist, then send: a step's messages wait for its fsync, so an honest message takes the
  // flush delay + the fsync + the link, and all three together stay within Δ: the fsync gets at
  // most a quarter of Δ and the links what is left.
  const uint64_t sync_max_ns = std::min(kSyncLatencyMaxNs, run.delta_us * kUs / 4);
  run.sync_latency_ns = draw.chance(200'000) ? 0 : draw.between(10 * kUs, sync_max_ns);
  replica_delay_cap_ns_ = run.delta_us * kUs - kFlushDelayMaxNs - run.sync_latency_ns;
  p.weight_restart = static_cast<uint32_t>(draw.between(2, 10));
  p.weight_cluster_crash = draw.chance(600'000) ? static_cast<uint32_t>(draw.between(1, 3)) : 0;
  p.weight_corruption = draw.chance(600'000) ? static_cast<uint32_t>(draw.between(1, 4)) : 0;
  p.torn_per_million = draw.chance(500'000) ? static_cast<uint32_t>(draw.between(1, 1'000'000)) : 0;
}

void Simulator::draw_byzantine_membership() {
  // From a stream of its own, so that a seed that draws no change runs exactly as before. Not
  // with durability (§11.9: not built together).
  Random draw(options_.seed ^ 0x3e3b3e5u);
  const bool drawn = draw.chance(kByzantineMembershipPerMillion);
  run_profile_.reconfiguration =
      !durable() && options_.reconfiguration.value_or(options_.draw_reconfiguration && drawn);
  if (!reconfiguration()) return;
  // One or two spares, added one change each (a change moves one replica); then, on most seeds,
  // an honest first member removed (every configuration keeps t' >= t, so the fault budget drawn
  // for t still holds).
  spares_ = draw.chance(500'000) ? 2 : 1;
  run_profile_.spare = static_cast<int32_t>(run_profile_.replicas);
  run_profile_.replicas += spares_;
  spares_start_late_ = draw.chance(300'000);
  change_at_ns_ = draw.between(run_profile_.fault_phase_ns / 10, run_profile_.fault_phase_ns / 2);
  removal_planned_ = draw.chance(600'000);
}

void Simulator::set_up() {
  const uint32_t n = run_profile_.replicas;
  Random draw = random_.fork();
  channels_.assign(n, std::vector<Channel>(n));
  replicas_.resize(n);
  hook_ = options_.hooks.byzantine;
  if (byzantine_mode()) {
    set_up_byzantine(draw);
  } else {
    for (uint32_t i = 0; i < n; ++i) {
      failstop::Options o;
      o.self = ReplicaId{i};
      o.replica_count = n;
      o.incarnation = draw.between(1, UINT64_MAX);
      o.heartbeat_interval_ns = profile_.heartbeat_interval_ns;
      o.failure_timeout_ns = kFailureTimeoutNs;
      o.relay_timeout_ns = profile_.relay_timeout_ns;
      o.planted = options_.planted.failstop;
      o.durable = durable();
      if (run_profile_.spare >= 0) {
        for (uint32_t m = 0; m < n; ++m) {
          if (static_cast<int32_t>(m) != run_profile_.spare)
            o.initial_members.push_back(ReplicaId{m});
        }
      }
      ReplicaSlot& slot = replicas_[i];
      slot.options = o;
      slot.replica = std::make_unique<Replica>(o, std::make_unique<kv::KvMachine>(), limits());
      observe_state_transfers(ReplicaId{i});
      if (durable()) open_fresh_disk(slot);
      slot.clock.skew_ns =
          static_cast<int64_t>(draw.between(0, 2 * profile_.skew_max_ns)) - profile_.skew_max_ns;
      slot.clock.drift_ppm = static_cast<int32_t>(draw.between(0, 2 * profile_.drift_max_ppm)) -
                             profile_.drift_max_ppm;
      slot.clock.monotonic_offset_ns = draw.between(0, 1000 * kSec);
      slot.clock.monotonic_drift_ppm = static_cast<int32_t>(draw.between(0, 200)) - 100;
      // Ticks start at a random phase, so replicas do not step in lockstep with each other.
      const uint64_t first_tick = draw.between(0, profile_.tick_interval_ns);
      if (static_cast<int32_t>(i) == run_profile_.spare) {
        // The spare's machine is off until an operator adds it (kSpareJoin starts it).
        slot.crashed = true;
        slot.spare_idle = true;
        ++slot.generation;
        for (uint32_t other = 0; other < n; ++other) {
          channels_[i][other].receiver_generation_known = Channel::kUnknownGeneration;
          channels_[other][i].receiver_generation_known = Channel::kUnknownGeneration;
        }
        continue;
      }
      schedule(first_tick, ReplicaTick{ReplicaId{i}});
    }
  }
  // A Byzantine replica is a faulty one: it spends a unit of t, so at most t - b more may crash.
  for (uint32_t i = 0; i < n; ++i) {
    if (faulty(ReplicaId{i})) {
      LOCKSTEP_ASSERT(budget_used_ < run_profile_.t, "more Byzantine replicas than t");
      ++budget_used_;
      replicas_[i].budgeted = true;
    }
  }
  for (uint32_t c = 0; c < run_profile_.clients; ++c) {
    add_client(byzantine_mode() ? std::optional<uint32_t>(1 + c) : std::nullopt);
  }
  schedule(draw.between(0, 2 * profile_.fault_interval_ns), FaultDue{});
  for (uint32_t unit = 0; unit < run_profile_.t; ++unit) {
    if (!draw.chance(profile_.budget_use_per_million)) continue;
    FaultKind kind = draw.chance(profile_.long_pause_share_per_million)
                         ? FaultKind::kReplicaLongPause
                         : FaultKind::kReplicaCrash;
    const uint64_t at = draw.between(0, run_profile_.fault_phase_ns);
    // Durable runs: some crashes restart too late, after the others removed the replica.
    if (durable() && kind == FaultKind::kReplicaCrash &&
        draw.chance(profile_.long_restart_share_per_million)) {
      kind = FaultKind::kReplicaLongRestart;
    }
    schedule(at, FaultDue{kind, std::nullopt, false});
  }
  // Byzantine rolling restarts: every honest replica in turn, the next once the last has loaded
  // (drawn at the end of set-up, so that the draws above kept their values).
  if (byzantine_mode() && profile_.rolling_restarts) {
    for (uint32_t i = 0; i < n; ++i) {
      if (!faulty(ReplicaId{i})) rolling_order_.push_back(ReplicaId{i});
    }
    for (size_t i = rolling_order_.size(); i > 1; --i)
      std::swap(rolling_order_[i - 1], rolling_order_[draw.below(i)]);
    if (!rolling_order_.empty()) {
      schedule(draw.between(0, run_profile_.fault_phase_ns / 3),
               FaultDue{FaultKind::kCatchUpRestart, rolling_order_.front(), true});
    }
  }
}

void Simulator::set_up_byzantine(Random& draw) {
  const uint32_t n = run_profile_.replicas;
  // Keys: SimScheme (a keyed MAC: ~0.2 µs a signature), derived from the seed. One Verifier holds
  // every principal's secret; hooks are handed only the faulty replicas' Signers.
  auto derive = [&] {
    std::array<uint8_t, 32> seed{};
    for (size_t i = 0; i < seed.size(); i += 8) {
      const uint64_t word = draw.next_u64();
      for (size_t b = 0; b < 8; ++b)
        seed[i + b] = static_cast<uint8_t>(word >> (8 * b));
    }
    return crypto::derive_key_pair(crypto::Scheme::kSim, seed);
  };
  crypto::KeyDirectory directory;
  std::vector<crypto::KeyPair> secrets;
  for (uint32_t i = 0; i < n; ++i) {
    const crypto::KeyPair keys = derive();
    directory.replicas.push_back(keys.public_key);
    secrets.push_back(keys);
    replica_signers_.push_back(crypto::make_signer(crypto::Scheme::kSim, keys));
  }
  auto add_principal = [&](uint32_t principal) {
    const crypto::KeyPair keys = derive();
    directory.clients.emplace(principal, keys.public_key);
    secrets.push_back(keys);
    client_signers_.emplace(principal, crypto::make_signer(crypto::Scheme::kSim, keys));
  };
  for (uint32_t c = 0; c < run_profile_.clients; ++c)
    add_principal(1 + c);
  for (uint32_t b = 0; b < run_profile_.byzantine_clients; ++b)
    add_principal(kByzantinePrincipalBase + b);
  // (Last, so that every key drawn above keeps its value.)
  if (reconfiguration()) {
    add_principal(kAdminPrincipal);
    administrator_signer_ = client_signers_.at(kAdminPrincipal).get();
  }
  verifier_ = crypto::make_verifier(crypto::Scheme::kSim, std::move(directory), std::move(secrets));
  // The first configuration: every listed replica but the spares.
  std::vector<ReplicaId> first_members;
  for (uint32_t i = 0; i < n - spares_; ++i)
    first_members.push_back(ReplicaId{i});
  adopted_ = Schedule(first_members).latest();

  const byzantine::Options defaults;
  if (hook_ == nullptr) {
    // Faulty replicas among the first members (a spare is nobody's unit of t yet).
    std::vector<uint32_t> order(n - spares_);
    for (uint32_t i = 0; i < order.size(); ++i)
      order[i] = i;
    for (size_t i = order.size(); i > 1; --i)
      std::swap(order[i - 1], order[draw.below(i)]);
    AdversarySetup setup;
    setup.t = run_profile_.t;
    setup.replica_count = n;
    setup.delta_us = run_profile_.delta_us;
    setup.epsilon_us = run_profile_.epsilon_us;
    setup.slot_us = defaults.slot_us;
    for (uint32_t k = 0; k < byzantine_replicas_drawn_; ++k) {
      setup.faulty.emplace(ReplicaId{order[k]}, replica_signers_[order[k]].get());
    }
    drawn_hook_ = std::make_unique<DrawnByzantineHook>(std::move(setup), draw);
    Random late_draw(late_behaviour_seed_);
    drawn_hook_->draw_late_behaviours(late_draw);
    hook_ = drawn_hook_.get();
    run_profile_.behaviours = drawn_hook_->describe();
  } else {
    run_profile_.behaviours = "hook";
  }
  run_profile_.byzantine_replicas = 0;
  for (uint32_t i = 0; i < n; ++i)
    run_profile_.byzantine_replicas += faulty(ReplicaId{i}) ? 1 : 0;

  for (uint32_t i = 0; i < n; ++i) {
    byzantine::Options o;
    o.self = ReplicaId{i};
    o.replica_count = n;
    o.t = run_profile_.t;
    o.delta_us = run_profile_.delta_us;
    o.epsilon_us = run_profile_.epsilon_us;
    o.signer = replica_signers_[i].get();
    o.verifier = verifier_.get();
    o.planted = options_.planted.byzantine;
    o.checkpoint_interval_us = run_profile_.checkpoint_interval_us;
    if (spares_ > 0) o.members = first_members;
    // Durable: every replica, faulty ones too (they run the honest code underneath).
    if (durable()) o.certify_interval_us = run_profile_.certify_interval_us;
    ReplicaSlot& slot = replicas_[i];
    slot.byzantine_options = o;
    slot.replica = std::make_unique<Replica>(o, std::make_unique<kv::KvMachine>(), limits());
    observe_state_transfers(ReplicaId{i});
    if (durable()) open_fresh_disk(slot);
    // |skew| + wander <= ε/2 - 1 µs: two honest clocks never differ by more than ε.
    const auto bound = static_cast<uint64_t>(profile_.skew_max_ns);
    slot.clock.wander_ns = draw.between(0, bound);
    const uint64_t skew_room = bound - slot.clock.wander_ns;
    slot.clock.skew_ns =
        static_cast<int64_t>(draw.between(0, 2 * skew_room)) - static_cast<int64_t>(skew_room);
    const auto drift_ppm = static_cast<uint64_t>(draw.between(0, profile_.drift_max_ppm));
    if (drift_ppm > 0 && slot.clock.wander_ns > 0) {
      // The triangle wave's slope 4A/P is the drift rate.
      slot.clock.wander_period_ns = 4 * slot.clock.wander_ns * 1'000'000 / drift_ppm;
      slot.clock.wander_phase_ns = draw.between(0, slot.clock.wander_period_ns);
    } else {
      slot.clock.wander_ns = 0;
    }
    slot.clock.monotonic_offset_ns = draw.between(0, 1000 * kSec);
    slot.clock.monotonic_drift_ppm = static_cast<int32_t>(draw.between(0, 200)) - 100;
    const uint64_t first_tick = draw.between(0, profile_.tick_interval_ns);
    if (i >= n - spares_) {
      // A spare: its machine runs from the start (it learns of the change that adds it), or is
      // started only once the change was sent (it must find out from the members' votes).
      slot.spare_joining = true;
      if (spares_start_late_) {
        slot.crashed = true;
        slot.spare_idle = true;
        ++slot.generation;
        continue;
      }
    }
    schedule(first_tick, ReplicaTick{ReplicaId{i}});
  }
  if (reconfiguration()) {
    schedule(change_at_ns_, AdminDue{ReplicaId{n - spares_}, MembershipChange::kAdd});
  }

  for (uint32_t b = 0; b < run_profile_.byzantine_clients; ++b) {
    ByzantineClientSlot client;
    client.principal = kByzantinePrincipalBase + b;
    client.id = client_id_of(client.principal, 1);
    client.signer = client_signers_.at(client.principal).get();
    bool any = false;
    for (bool& lie : client.lies) {
      lie = draw.chance(500'000);
      any |= lie;
    }
    if (!any) client.lies[draw.below(kClientLieCount)] = true;
    std::string text = "c" + std::to_string(b) + ":";
    for (size_t k = 0; k < kClientLieCount; ++k) {
      if (!client.lies[k]) continue;
      if (text.back() != ':') text += "+";
      text += client_lie_name(static_cast<ClientLie>(k));
    }
    run_profile_.behaviours += (run_profile_.behaviours.empty() ? "" : " ") + text;
    byzantine_clients_.push_back(std::move(client));
    schedule(draw.between(0, 50 * kMs), ByzantineClientAct{b});
  }
}

size_t Simulator::add_client(std::optional<uint32_t> principal) {
  const size_t c = clients_.size();
  ClientId id{};
  ClientOptions o;
  if (principal) {
    // Byzantine mode: the id is bound to the principal's key; a client that replaces a crashed
    // one runs the next session of the same principal.
    id = client_id_of(*principal, ++sessions_[*principal]);
    o.reply_quorum = run_profile_.t + 1;
    o.signer = client_signers_.at(*principal).get();
    if (spares_ > 0) o.initial_members = replicas_.front().byzantine_options.members;
    o.membership_verifier = verifier_.get();
    o.planted_accept_short_quorum = options_.planted.accept_short_quorum;
  } else {
    id = ClientId{random_.next_u64()};
    while (client_by_id_.contains(id))
      id = ClientId{random_.next_u64()};
  }
  o.replica_count = run_profile_.replicas;
  o.retry_interval_ns = profile_.client_retry_ns;
  o.deadline_ns = kClientDeadlineNs;
  // Most clients wait for each reply; on some seeds some pipeline, which exercises the session
  // table with several cached replies and the acknowledgement watermark.
  const size_t depth =
      random_.chance(profile_.pipeline_per_million) ? random_.between(2, kPipelineDepthMax) : 1;
  o.outstanding_max = static_cast<uint32_t>(depth);
  ClientSlot slot;
  slot.lanes.resize(depth);
  slot.session = std::make_unique<ClientSession>(id, o);
  slot.partitioned_until_ns.assign(run_profile_.replicas, 0);
  slot.principal = principal.value_or(0);
  clients_.push_back(std::move(slot));
  client_by_id_.emplace(id, c);
  for (size_t lane = 0; lane < depth; ++lane) {
    schedule(now_ns_ + random_.between(0, profile_.think_max_ns), ClientWake{c, lane});
  }
  schedule(now_ns_ + random_.between(1, profile_.client_retry_ns / 4), ClientTick{c});
  return c;
}

void Simulator::schedule(uint64_t at_ns, EventBody body) {
  LOCKSTEP_ASSERT(at_ns >= now_ns_, "events are never scheduled in the past");
  size_t index;
  if (free_bodies_.empty()) {
    index = bodies_.size();
    bodies_.push_back(std::move(body));
  } else {
    index = free_bodies_.back();
    free_bodies_.pop_back();
    bodies_[index] = std::move(body);
  }
  queue_.push_back(QueuedEvent{at_ns, next_order_++, index});
  std::push_heap(queue_.begin(), queue_.end(), EventLater{});
}

uint64_t Simulator::think_time() {
  // Behind the schedule that spreads `ops` over the fault phase (lossy links and few clients
  // make operations slow), clients hurry, so that runs reach their size without running long.
  const auto due = static_cast<uint64_t>(static_cast<Uint128>(options_.ops) *
                                         std::min(now_ns_, run_profile_.fault_phase_ns) /
                                         std::max<uint64_t>(run_profile_.fault_phase_ns, 1));
  const uint64_t think_max =
      ops_submitted_ < due ? profile_.think_max_ns / 8 : profile_.think_max_ns;
  return random_.between(0, think_max);
}

uint64_t Simulator::network_delay(uint64_t cap_ns) {
  return random_.long_tailed(profile_.delay_low_ns, profile_.delay_high_ns,
                             profile_.tail_per_million, cap_ns);
}

void Simulator::fail(std::string violation) {
  if (violation_) return;
  violation_ = std::move(violation);
  trace("VIOLATION: " + *violation_);
}

void Simulator::trace(std::string line) {
  if (!tracing_) return;
  current_trace_ += "\n    ";
  current_trace_ += line;
}

void Simulator::end_trace_event() {
  // Timer events that did nothing visible (most ticks) are left out, so the tail shows the last
  // events that mattered rather than the last few milliseconds of timers.
  if (!(trace_quiet_ && current_trace_.empty())) {
    std::string text = std::move(trace_header_) + current_trace_;
    if (options_.trace_sink) options_.trace_sink(text);
    trace_tail_.push_back(std::move(text));
    if (trace_tail_.size() > options_.trace_tail_events) trace_tail_.pop_front();
  }
  trace_header_.clear();
  current_trace_.clear();
}

void Simulator::count_fault(FaultKind kind, const std::string& detail) {
  ++faults_[static_cast<size_t>(kind)];
  if (is_episode(kind)) ++episodes_;
  hash_.add(0xfa000000 + static_cast<uint64_t>(kind));
  if (tracing_) trace("fault " + std::string(fault_kind_name(kind)) + " " + detail);
}

// ---- the event loop ---------------------------------------------------------------------------

RunResult Simulator::run() {
  tracing_ = options_.trace;
  set_up();
  while (!violation_ && phase_ != Phase::kDone) {
    if (queue_.empty()) {
      fail("the event queue ran empty (nothing left to drive the cluster)");
      break;
    }
    std::pop_heap(queue_.begin(), queue_.end(), EventLater{});
    const QueuedEvent next = queue_.back();
    queue_.pop_back();
    Event event{next.at_ns, next.order, std::move(bodies_[next.body])};
    free_bodies_.push_back(next.body);
    LOCKSTEP_ASSERT(event.at_ns >= now_ns_, "simulated time never goes backwards");
    now_ns_ = event.at_ns;
    ++events_;
    hash_.add(event.at_ns);
    hash_.add(event.body.index());
    if (tracing_) trace_event_start(event);
    dispatch(event);
    if (phase_ == Phase::kFaults) maybe_end_fault_phase();
    if (events_ >= kEventsMax) fail("event limit reached: the run does not converge");
    if (tracing_) end_trace_event();
  }

  RunResult result;
  result.seed = options_.seed;
  result.passed = !violation_;
  if (violation_) result.violation = *violation_;
  result.profile = run_profile_;
  result.events = events_;
  result.simulated_ns = now_ns_;
  result.ops_submitted = ops_submitted_;
  result.ops_completed = ops_completed_;
  result.ops_unknown = ops_unknown_;
  result.faults = faults_;
  result.fault_episodes = episodes_;
  result.event_log_hash = hash_.value();
  result.state_transfers_loaded = state_transfers_loaded_;
  result.state_chunks_sent = state_chunks_sent_;
  result.snapshots_refused = snapshots_refused_;
  result.recoveries_completed = recoveries_completed_;
  result.crashes_ended_by_cluster_crash = crashes_ended_by_cluster_crash_;
  result.recoveries_with_ruling = recoveries_with_ruling_;
  for (const ReplicaSlot& slot : replicas_) {
    if (byzantine_mode() && !faulty(slot.replica->id())) {
      result.snapshots_refused += slot.replica->rejected_state_transfers();
    }
  }
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    if (live(ReplicaId{i})) {
      result.final_view = std::max(result.final_view, replicas_[i].replica->core().view().value);
    }
  }
  result.trace_tail.assign(trace_tail_.begin(), trace_tail_.end());
  return result;
}

void Simulator::trace_event_start(const Event& event) {
  std::string line = "[" + time_text(event.at_ns) + "] #" + std::to_string(events_) + " ";
  std::visit(
      [&](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, PeerDelivery>) {
          line += "r" + std::to_string(e.to.value) + " <- r" + std::to_string(e.from.value) + " " +
                  describe(e.message);
        } else if constexpr (std::is_same_v<T, RequestDelivery>) {
          line += "r" + std::to_string(e.to.value) +
                  (e.client == kAdministratorClient ? " <- administrator"
                   : e.client >= kByzantineClientBase
                       ? " <- byzantine client" + std::to_string(e.client - kByzantineClientBase)
                       : " <- client" + std::to_string(e.client)) +
                  " " + describe(e.request);
        } else if constexpr (std::is_same_v<T, SignedReplyDelivery>) {
          line += "client" + std::to_string(e.client) + " <- r" +
                  std::to_string(e.batch.replica.value) + " signed";
          for (const ClientReply& reply : e.batch.replies)
            line += " " + describe(reply);
        } else if constexpr (std::is_same_v<T, ByzantineClientAct>) {
          line += "byzantine client" + std::to_string(e.index) + " acts";
        } else if constexpr (std::is_same_v<T, ReplyDelivery>) {
          line += "client" + std::to_string(e.client) + " <- r" +
                  std::to_string(e.reply.replica.value) + " " + describe(e.reply);
        } else if constexpr (std::is_same_v<T, ReplicaTick>) {
          line += "r" + std::to_string(e.replica.value) + " tick";
        } else if constexpr (std::is_same_v<T, ReplicaFlush>) {
          line += "r" + std::to_string(e.replica.value) + " flush";
        } else if constexpr (std::is_same_v<T, ClientTick>) {
          line += "client" + std::to_string(e.client) + " tick";
        } else if constexpr (std::is_same_v<T, ClientWake>) {
          line += "client" + std::to_string(e.client) + "." + std::to_string(e.lane) + " wakes";
        } else if constexpr (std::is_same_v<T, FaultDue>) {
          line += e.planned ? "planned fault" : "fault schedule";
        } else if constexpr (std::is_same_v<T, PauseEnd>) {
          line += "r" + std::to_string(e.replica.value) + " pause ends";
        } else if constexpr (std::is_same_v<T, LivenessDeadline>) {
          line += "liveness deadline";
        } else if constexpr (std::is_same_v<T, DiskSync>) {
          line += "r" + std::to_string(e.replica.value) + " fsync done";
        } else if constexpr (std::is_same_v<T, RestartDue>) {
          line += "r" + std::to_string(e.replica.value) + " restarts";
        } else if constexpr (std::is_same_v<T, SpareStart>) {
          line += "r" + std::to_string(e.replica.value) + " (a spare) starts";
        } else if constexpr (std::is_same_v<T, AdminDue>) {
          line += std::string("operator: ") +
                  (e.change == MembershipChange::kAdd ? "add-replica " : "remove-replica ") +
                  std::to_string(e.replica.value);
        } else {
          static_assert(std::is_same_v<T, SettleCheck>);
          line += "settle check";
        }
      },
      event.body);
  trace_header_ = std::move(line);
  trace_quiet_ = std::holds_alternative<ReplicaTick>(event.body) ||
                 std::holds_alternative<ReplicaFlush>(event.body) ||
                 std::holds_alternative<ClientTick>(event.body) ||
                 std::holds_alternative<SettleCheck>(event.body) ||
                 std::holds_alternative<DiskSync>(event.body);
}

void Simulator::dispatch(Event& event) {
  std::visit(
      [&](auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, PeerDelivery>) {
          Channel& channel = channels_[e.from.value][e.to.value];
          // Sequence 0: injected by a faulty sender outside the channel's order (sim/hooks.h).
          if (e.channel_sequence != 0) ++channel.delivered;
          if (e.channel_sequence > channel.lost_after &&
              e.channel_sequence <= channel.lost_through) {
            trace(durable() ? "lost: a connection reset (an end of it crashed)"
                            : "lost: its sender crashed before the frame left");
            return;
          }
          hash_message(hash_, e.message);
          deliver_to_replica(std::move(e));
        } else if constexpr (std::is_same_v<T, RequestDelivery>) {
          hash_request(hash_, e.request);
          deliver_to_replica(std::move(e));
        } else if constexpr (std::is_same_v<T, ReplyDelivery>) {
          hash_reply(hash_, e.reply);
          ClientSlot& client = clients_[e.client];
          if (client.crashed) return;
          if (durable() && replicas_[e.reply.replica.value].generation != e.generation) {
            trace("lost: its sender crashed before the reply arrived");
            return;
          }
          client.session->on_reply(now_ns_, e.reply);
          drain_client(e.client);
        } else if constexpr (std::is_same_v<T, SignedReplyDelivery>) {
          hash_.add(e.batch.replica.value);
          for (const ClientReply& reply : e.batch.replies)
            hash_reply(hash_, reply);
          if (clients_[e.client].crashed) return;
          deliver_signed_replies(e.client, e.batch);
          drain_client(e.client);
        } else if constexpr (std::is_same_v<T, ByzantineClientAct>) {
          byzantine_client_act(e.index);
        } else if constexpr (std::is_same_v<T, ReplicaTick>) {
          ReplicaSlot& slot = replicas_[e.replica.value];
          // A crashed replica's tick chain ends (a restarted one starts its own).
          if (slot.crashed || e.generation != slot.generation) return;
          schedule(now_ns_ + profile_.tick_interval_ns, ReplicaTick{e.replica, e.generation});
          if (!slot.paused) tick_replica(e.replica);
        } else if constexpr (std::is_same_v<T, ReplicaFlush>) {
          ReplicaSlot& slot = replicas_[e.replica.value];
          if (e.generation != slot.generation) return;
          slot.flush_scheduled = false;
          if (slot.crashed) return;
          if (slot.paused) return;  // resume flushes
          flush_replica(e.replica);
          slot.replica->core().check_invariants();
        } else if constexpr (std::is_same_v<T, ClientTick>) {
          ClientSlot& client = clients_[e.client];
          if (client.crashed) return;
          schedule(now_ns_ + profile_.client_retry_ns / 4, ClientTick{e.client});
          client.session->tick(now_ns_);
          drain_client(e.client);
        } else if constexpr (std::is_same_v<T, ClientWake>) {
          start_operation(e.client, e.lane);
        } else if constexpr (std::is_same_v<T, FaultDue>) {
          if (phase_ != Phase::kFaults) return;
          if (e.planned) {
            if (try_fault(*e.planned, e.target)) {
              if (e.rolling) rolling_target_ = e.target;
            } else if (e.rolling) {
              trace("rolling restart not possible now; tried again later");
              schedule(now_ns_ + kRollingRetryNs, e);
            } else {
              trace("planned fault not possible now; skipped");
            }
            return;
          }
          // The schedule is spent once the drawn duration has passed with enough episodes; the
          // phase may go on until the workload reaches its size, with per-message faults only,
          // so that slow seeds are not buried under ever more episodes.
          if (now_ns_ >= run_profile_.fault_phase_ns && episodes_ >= options_.faults_min) return;
          inject_fault();
          schedule(now_ns_ + random_.between(profile_.fault_interval_ns / 2,
                                             profile_.fault_interval_ns * 3 / 2),
                   FaultDue{});
        } else if constexpr (std::is_same_v<T, PauseEnd>) {
          ReplicaSlot& slot = replicas_[e.replica.value];
          if (slot.paused && slot.pause_number == e.pause_number) resume(e.replica);
        } else if constexpr (std::is_same_v<T, LivenessDeadline>) {
          for (size_t c = 0; c < clients_.size(); ++c) {
            const ClientSlot& client = clients_[c];
            if (client.crashed) continue;
            for (const std::optional<Operation>& op : client.lanes) {
              if (!op) continue;
              fail("liveness: client" + std::to_string(c) + "'s request " +
                   key_text({client.session->id(), op->sequence}) + " is still outstanding " +
                   time_text(options_.liveness_bound_ns) + "s after the faults healed");
              return;
            }
          }
        } else if constexpr (std::is_same_v<T, DiskSync>) {
          ReplicaSlot& slot = replicas_[e.replica.value];
          if (slot.crashed || e.generation != slot.generation) return;
          slot.sync_scheduled = false;
          if (slot.paused) {
            slot.sync_due_on_resume = true;  // the fsync is done; the process is frozen
            return;
          }
          disk_sync(e.replica);
          if (!slot.crashed) slot.replica->core().check_invariants();
        } else if constexpr (std::is_same_v<T, RestartDue>) {
          const ReplicaSlot& slot = replicas_[e.replica.value];
          if (!slot.crashed || !slot.restart_pending || e.generation != slot.generation) return;
          restart(e.replica);
        } else if constexpr (std::is_same_v<T, AdminDue>) {
          if (byzantine_mode()) {
            administrator(e.change, e.replica);
          } else {
            operator_admin(e.change, e.replica);
          }
        } else if constexpr (std::is_same_v<T, SpareStart>) {
          start_spare(e.replica);
        } else {
          static_assert(std::is_same_v<T, SettleCheck>);
          settle_check();
        }
      },
      event.body);
}

// ---- replicas ---------------------------------------------------------------------------------

void Simulator::deliver_to_replica(ReplicaInput input) {
  const ReplicaId to = std::visit([](const auto& e) { return e.to; }, input);
  ReplicaSlot& slot = replicas_[to.value];
  if (slot.crashed) {
    trace("dropped: r" + std::to_string(to.value) + " has crashed");
    return;
  }
  if (slot.paused) {
    // A paused process takes no steps; what arrives waits in its socket buffers.
    slot.inbox.push_back(std::move(input));
    trace("queued: r" + std::to_string(to.value) + " is paused");
    return;
  }
  step_replica(to, input);
}

void Simulator::step_replica(ReplicaId r, ReplicaInput& input) {
  ReplicaSlot& slot = replicas_[r.value];
  const Now now = slot.clock.at(now_ns_);
  std::visit(
      [&](auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, PeerDelivery>) {
          if (byzantine_mode() && options_.planted.load_forged_state && !slot.replica->serving()) {
            forge_for_joiner(e.message);
          }
          // A state loaded in this step, whole or from its last piece (the observer keeps it).
          slot.loaded_transfer.reset();
          slot.replica->on_peer_message(now, e.from, std::move(e.message));
          if (slot.loaded_transfer) {
            const StateTransfer loaded = std::move(*slot.loaded_transfer);
            slot.loaded_transfer.reset();
            if (byzantine_mode()) {
              on_checkpoint_loaded(r, loaded);
            } else {
              on_state_loaded(r, loaded);
            }
          }
        } else {
          const RequestKey key{e.request.client, e.request.sequence};
          if (slot.replica->serving() && e.client < kByzantineClientBase) {
            receivers_[key].emplace(r.value, slot.generation);
          }
          slot.replica->on_client_request(now, std::move(e.request));
        }
      },
      input);
  after_step(r);
}

void Simulator::tick_replica(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  slot.replica->tick(slot.clock.at(now_ns_));
  after_step(r);
}

void Simulator::after_step(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  // A real event loop takes the output once per batch of inputs, not per input: deferring the
  // take a little lets several inputs share one ReplicaUpdate, as they would in the runtime.
  if (random_.chance(profile_.batch_per_million)) {
    if (!slot.flush_scheduled) {
      slot.flush_scheduled = true;
      schedule(now_ns_ + random_.between(1, kFlushDelayMaxNs), ReplicaFlush{r, slot.generation});
    }
  } else {
    flush_replica(r);
  }
  slot.replica->core().check_invariants();
}

void Simulator::flush_replica(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  Replica::Output output = slot.replica->take_output();
  if (byzantine_mode()) track_configurations(r);
  for (const Replica::PeerMessage& send : output.to_peers) {
    const auto* piece = std::get_if<StateChunk>(&send.message);
    if (piece == nullptr) continue;
    ++state_chunks_sent_;
    if (!faulty(r) && send.to.value < replicas_.size() && run_profile_.state_chunk_bytes != 0) {
      uint64_t& pieces = replicas_[send.to.value].transfer_pieces;
      const uint64_t chunk = run_profile_.state_chunk_bytes;
      pieces = std::max<uint64_t>(pieces, (piece->total + chunk - 1) / chunk);
    }
  }

  for (const Replica::Executed& executed : output.executed) {
    hash_.add(executed.timestamp.clock);
    hash_.add(executed.timestamp.source.value);
    hash_.add(executed.client.value);
    hash_.add(executed.sequence.value);
    hash_.add(static_cast<uint64_t>(executed.outcome));
    const RequestKey key{executed.client, executed.sequence};
    const char* outcome = executed.outcome == Service::Outcome::kExecuted    ? "executed"
                          : executed.outcome == Service::Outcome::kDuplicate ? "duplicate"
                                                                             : "stale";
    if (tracing_) {
      trace("r" + std::to_string(r.value) + " runs " + key_text(key) + " at " +
            timestamp_text(executed.timestamp) + ": " + outcome);
    }
    // A faulty replica owes nothing: what it executes is not checked.
    if (faulty(r)) {
      ++slot.unchecked_executions;
      continue;
    }
    // Agreement: this replica's k-th execution must be the k-th of the one sequence.
    const uint64_t position = slot.executed_position++;
    if (position < reference_.size()) {
      const Replica::Executed& expected = reference_[position];
      const bool differs =
          expected.timestamp != executed.timestamp || expected.client != executed.client ||
          expected.sequence != executed.sequence || expected.outcome != executed.outcome;
      if (differs && cluster_rewrite_open_) {
        cut_agreed_sequence(r, position,
                            key_text(key) + " at " + timestamp_text(executed.timestamp));
        if (violation_) return;
        reference_.push_back(executed);
      } else if (differs) {
        fail("agreement: r" + std::to_string(r.value) + "'s execution #" +
             std::to_string(position + 1) + " is " + key_text(key) + " at " +
             timestamp_text(executed.timestamp) + " (" + outcome + "), but another replica's is " +
             key_text({expected.client, expected.sequence}) + " at " +
             timestamp_text(expected.timestamp) +
             (slot.restarts > 0 ? " (r" + std::to_string(r.value) + " restarted " +
                                      std::to_string(slot.restarts) +
                                      " times: did its disk lose what it had executed?)"
                                : ""));
      }
    } else if (byzantine_mode() && durable() && position > reference_.size()) {
      fail("agreement: r" + std::to_string(r.value) + "'s execution #" +
           std::to_string(position + 1) + " (" + key_text(key) + " at " +
           timestamp_text(executed.timestamp) + ") follows executions the agreed sequence no " +
           "longer has: it ends at #" + std::to_string(reference_.size()) +
           " since the whole-cluster recovery (r" + std::to_string(r.value) +
           " recovered a state beyond what the cluster kept)");
      return;
    } else {
      reference_.push_back(executed);
      // The recovered cluster went past the end of the sequence it had: no cut from here on.
      cluster_rewrite_open_ = false;
    }
    if (executed.outcome == Service::Outcome::kExecuted) first_executed_ns_.emplace(key, now_ns_);
    if (executed.outcome == Service::Outcome::kExecuted && !slot.executed_once.insert(key).second) {
      fail("exactly-once: r" + std::to_string(r.value) + " executed " + key_text(key) +
           " a second time (at " + timestamp_text(executed.timestamp) + ")");
    }
    slot.executed_any.insert(key);
  }

  if (byzantine_mode() && !faulty(r) && !violation_) {
    if (slot.catching_up && slot.replica->serving() && slot.cluster_recovering) {
      // A whole-cluster recovery completed (no snapshot needed: it continues from the highest
      // certified position among every replica's claim).
      // Everything the old sequence holds from that position on is gone at once (a checkpoint
      // of the recovered state must not be mapped to the old sequence's positions; seed 1633).
      const uint64_t target = slot.replica->byzantine_core()->recovered_to_us();
      const auto cut = std::partition_point(
          reference_.begin(), reference_.end(),
          [&](const Replica::Executed& e) { return e.timestamp.clock < target; });
      if (cluster_rewrite_open_ && cut != reference_.end()) {
        cut_agreed_sequence(
            r, static_cast<uint64_t>(cut - reference_.begin()),
            "the end of the recovered order (certified below " + std::to_string(target) + ")");
        if (violation_) return;
      }
      on_recovered(r, "takes part in the whole-cluster recovery and serves again");
    } else if (slot.catching_up && slot.replica->serving()) {
      // Every load passes the observer (observe_state_transfers), whole or in pieces; a single
      // replica restarted from its disk catches up by a load too (docs/DESIGN.md §11.8).
      fail("simulator: r" + std::to_string(r.value) + " serves again but no load was observed" +
           (slot.restarted_from_disk ? " (restarted from its disk while the others were up)" : ""));
      return;
    }
    slot.built_transfers.clear();  // byzantine donors serve a boundary's snapshot: checked at load
    record_checkpoint_votes(r, output.to_peers);
    // A replica that loaded a checkpoint: its digest where its next flush lands is kept (and
    // checked against anyone else's seen there).
    if (slot.loaded_digest_due) {
      slot.loaded_digest_due = false;
      check_prefix_digest(r, slot.executed_position, "after loading a checkpoint");
    } else if (slot.replica->serving() && prefix_digests_.contains(slot.executed_position)) {
      check_prefix_digest(r, slot.executed_position, "at a flush");
    }
  }
  if (reconfiguration() && !byzantine_mode() && !violation_) {
    tag_state_transfers(r);
    if (slot.loaded_digest_due) {
      slot.loaded_digest_due = false;
      check_prefix_digest(r, slot.executed_position, "after loading a state");
    } else if (slot.replica->serving() && prefix_digests_.contains(slot.executed_position)) {
      check_prefix_digest(r, slot.executed_position, "at a flush");
    }
  }
  if (durable()) {
    slot.executed_high = std::max(slot.executed_high, slot.executed_position);
    persist(r, output);
    if (violation_) return;
    if (!slot.sync_scheduled) slot.synced_position = slot.executed_position;
  } else {
    release_output(r, std::move(output.to_peers), std::move(output.to_clients));
  }
  // A faulty replica's own messages: replays, floods, late values (only while clients run, so
  // that the cluster can settle for the final checks).
  if (byzantine_mode() && faulty(r) && (phase_ == Phase::kFaults || phase_ == Phase::kHeal) &&
      (cluster_recovering_ == 0 || cluster_ruling_)) {
    const ByzantineHook::Step step{r, now_ns_, slot.clock.at(now_ns_), kWallEpochNs};
    for (ByzantineHook::Injection& injection : hook_->on_step(step, random_))
      send_injected(r, std::move(injection));
  }

  if (slot.replica->halted() && !slot.halted_seen) {
    slot.halted_seen = true;
    trace("r" + std::to_string(r.value) + " halts: removed from the membership");
    if (byzantine_mode()) {
      // Only a change the administrator signed removes a byzantine replica.
      if (!slot.admin_removed) {
        fail("membership: r" + std::to_string(r.value) +
             " halted, but no change the administrator signed removes it");
      }
    } else if (!slot.budgeted) {
      fail("failure detection: r" + std::to_string(r.value) +
           " was removed although it was never silent for the failure timeout (the simulator "
           "kept every live replica's silence under " +
           time_text(kShortPauseMaxNs + kReplicaDelayMaxNs + kHeartbeatMaxNs + kTickMaxNs) + "s)" +
           (slot.restarts > 0
                ? "; it had restarted from its disk " + std::to_string(slot.restarts) +
                      " times: did it lose state it had acknowledged?"
                : ""));
    }
    check_budget();
  }
}

void Simulator::release_output(ReplicaId r, std::vector<Replica::PeerMessage> to_peers,
                               std::vector<ClientReply> to_clients) {
  ReplicaSlot& slot = replicas_[r.value];
  // Byzantine mode: a replica's replies to one client leave together, under one signature.
  std::map<ClientId, std::vector<ClientReply>> signed_batches;
  for (ClientReply& reply : to_clients) {
    hash_reply(hash_, reply);
    const RequestKey key{reply.client, reply.sequence};
    if (!faulty(r)) {
      if (reply.status == ReplyStatus::kOk && !slot.executed_any.contains(key)) {
        fail("reply before execution: r" + std::to_string(r.value) + " answered " + key_text(key) +
             " with " + describe_result(reply.result) + " before executing it in the agreed order");
      }
      if (reply.replica != r) {
        fail("r" + std::to_string(r.value) + " sent a reply signed as r" +
             std::to_string(reply.replica.value));
      }
    }
    if (!byzantine_mode()) {
      send_reply(r, std::move(reply));
      continue;
    }
    if (faulty(r)) {
      const ClientReply original = reply;
      if (!hook_->on_client_reply(r, reply, random_)) {
        count_fault(FaultKind::kByzantineDrop,
                    "r" + std::to_string(r.value) + " withholds its reply to " + key_text(key));
        continue;
      }
      if (reply != original) {
        count_fault(FaultKind::kByzantineLie, "r" + std::to_string(r.value) + " answers " +
                                                  key_text(key) + " with " +
                                                  describe_result(reply.result));
      }
    } else {
      record_honest_output(r, reply);
    }
    signed_batches[reply.client].push_back(std::move(reply));
  }
  for (auto& [client, replies] : signed_batches)
    send_signed_replies(r, std::move(replies));

  for (Replica::PeerMessage& message : to_peers) {
    send_peer(r, message.to, std::move(message.message));
  }
}

void Simulator::check_budget() {
  // A whole-cluster crash is an episode of its own: everyone restarts from a synced disk (and in
  // byzantine mode recovers together, so the episode lasts until every honest replica serves).
  if (cluster_down_ > 0 || cluster_recovering_ > 0) return;
  uint32_t failed = 0;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    const ReplicaSlot& slot = replicas_[i];
    // The spare counts from when it has loaded a state (before, it was never a member). A joiner
    // has no state of its own: it counts like the failure it replaces.
    if (slot.spare_idle || slot.spare_joining || slot.admin_removed) continue;
    if (slot.crashed || slot.replica->halted() || !slot.replica->serving() ||
        faulty(ReplicaId{i})) {
      ++failed;
    }
  }
  if (failed > run_profile_.t) {
    fail("fault budget: " + std::to_string(failed) +
         " replicas are crashed, removed, refusing to recover or Byzantine, t = " +
         std::to_string(run_profile_.t));
  }
}

void Simulator::send_peer(ReplicaId from, ReplicaId to, ReplicaMessage message) {
  LOCKSTEP_ASSERT(to.value < replicas_.size(), "message to a replica outside the cluster");
  // A whole-cluster recovery needs a decided claim from every replica the operator did not rule
  // out (docs/DESIGN.md §11.8): a faulty replica that withholds or equivocates its own claim
  // holds it up by design. Without a ruling, while one is under way, a faulty replica's own
  // claims leave as its core made them (and it injects nothing); everything else it sends,
  // relays of the others' claims included, still passes its hook. With one, nothing bypasses it.
  const auto* proposal = std::get_if<SignedProposal>(&message);
  const bool own_claim = cluster_recovering_ > 0 && !cluster_ruling_ && proposal != nullptr &&
                         proposal->proposal.origin == from && !proposal->proposal.claim.empty() &&
                         proposal->chain.size() == 1;
  if (faulty(from) && !own_claim) {
    std::optional<ReplicaMessage> original;
    if (byzantine_mode()) original = message;
    if (!hook_->on_peer_send(from, to, message, random_)) {
      if (byzantine_mode()) {
        count_fault(FaultKind::kByzantineDrop,
                    "r" + std::to_string(from.value) + "->r" + std::to_string(to.value));
      }
      return;
    }
    if (original && *original != message) {
      count_fault(FaultKind::kByzantineAlter, "r" + std::to_string(from.value) + "->r" +
                                                  std::to_string(to.value) + " " +
                                                  (tracing_ ? describe(message) : ""));
    }
  }
  Channel& channel = channels_[from.value][to.value];
  if (durable() && replicas_[to.value].crashed) {
    if (channel.receiver_generation_known == Channel::kUnknownGeneration) {
      trace("queued: r" + std::to_string(to.value) + " is down; r" + std::to_string(from.value) +
            " never reached its old process, so the frame waits for the new one");
      channel.parked.push_back(std::move(message));
    } else {
      trace("lost: r" + std::to_string(to.value) +
            " is down (its new process drops what was queued for the old one)");
    }
    return;
  }
  // Failstop: 100 ms; byzantine: Δ minus the flush delay (every honest message within Δ).
  const uint64_t cap = replica_delay_cap_ns_;
  uint64_t delay = network_delay(cap);
  if (phase_ == Phase::kFaults) {
    // Loss on a replica channel is repaired by the runtime's retransmission: the frame arrives
    // late, and (FIFO) so does everything behind it.
    if (random_.chance(profile_.retransmit_per_million)) {
      delay += random_.between(5 * kMs, 40 * kMs);
      count_fault(FaultKind::kRetransmit,
                  "r" + std::to_string(from.value) + "->r" + std::to_string(to.value));
    }
    // A connection reset: nothing gets through until the reconnect and resend.
    if (random_.chance(profile_.reset_per_million)) {
      const uint64_t spike = random_.between(std::min(10 * kMs, cap), cap);
      channel.last_delivery_ns = std::max(channel.last_delivery_ns, now_ns_ + spike);
      count_fault(FaultKind::kConnectionReset, "r" + std::to_string(from.value) + "->r" +
                                                   std::to_string(to.value) + " for " +
                                                   time_text(spike) + "s");
    }
  }
  delay = std::min(delay, cap);
  const uint64_t at = std::max(now_ns_ + delay, channel.last_delivery_ns);
  LOCKSTEP_ASSERT(at <= now_ns_ + cap, "replica link delay stays in its bound");
  channel.last_delivery_ns = at;
  schedule(at, PeerDelivery{from, to, ++channel.sent, std::move(message)});
}

void Simulator::send_injected(ReplicaId from, ByzantineHook::Injection injection) {
  LOCKSTEP_ASSERT(injection.to.value < replicas_.size(),
                  "message to a replica outside the cluster");
  if (injection.to == from) return;
  count_fault(FaultKind::kByzantineInject, "r" + std::to_string(from.value) + "->r" +
                                               std::to_string(injection.to.value) + " " +
                                               (tracing_ ? describe(injection.message) : ""));
  const uint64_t at = injection.deliver_at_ns ? std::max(*injection.deliver_at_ns, now_ns_)
                                              : now_ns_ + network_delay(replica_delay_cap_ns_);
  schedule(at, PeerDelivery{from, injection.to, 0, std::move(injection.message)});
}

void Simulator::send_reply(ReplicaId from, ClientReply reply) {
  if (faulty(from) && !hook_->on_client_reply(from, reply, random_)) return;
  auto it = client_by_id_.find(reply.client);
  if (it == client_by_id_.end()) return;  // not one of ours; a real replica drops it too
  const size_t c = it->second;
  if (clients_[c].crashed) return;
  if (now_ns_ < clients_[c].partitioned_until_ns[from.value]) return;
  if (phase_ == Phase::kFaults && random_.chance(profile_.client_loss_per_million)) {
    count_fault(FaultKind::kClientLoss,
                "reply r" + std::to_string(from.value) + "->client" + std::to_string(c));
    return;
  }
  if (phase_ == Phase::kFaults && random_.chance(profile_.client_duplicate_per_million)) {
    count_fault(FaultKind::kClientDuplicate,
                "reply r" + std::to_string(from.value) + "->client" + std::to_string(c));
    schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns),
             ReplyDelivery{c, reply, replicas_[from.value].generation});
  }
  schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns),
           ReplyDelivery{c, std::move(reply), replicas_[from.value].generation});
}

void Simulator::send_signed_replies(ReplicaId from, std::vector<ClientReply> replies) {
  auto it = client_by_id_.find(replies.front().client);
  if (it == client_by_id_.end()) return;  // a Byzantine client's, or nobody's: nobody listens
  const size_t c = it->second;
  if (clients_[c].crashed) return;
  if (now_ns_ < clients_[c].partitioned_until_ns[from.value]) return;
  SignedReplies batch =
      crypto::sign_replies(*replica_signers_[from.value], from, std::move(replies));
  // The runtime attaches them once per connection and epoch; here, every batch carries them.
  batch.membership_changes = replicas_[from.value].replica->membership_proofs();
  if (phase_ == Phase::kFaults && random_.chance(profile_.client_loss_per_million)) {
    count_fault(FaultKind::kClientLoss,
                "replies r" + std::to_string(from.value) + "->client" + std::to_string(c));
    return;
  }
  if (phase_ == Phase::kFaults && random_.chance(profile_.client_duplicate_per_million)) {
    count_fault(FaultKind::kClientDuplicate,
                "replies r" + std::to_string(from.value) + "->client" + std::to_string(c));
    schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns), SignedReplyDelivery{c, batch});
  }
  schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns),
           SignedReplyDelivery{c, std::move(batch)});
}

void Simulator::deliver_signed_replies(size_t c, const SignedReplies& batch) {
  // What a real client does with a batch: check the signature, then hand each reply to the
  // session with the replica's signed statement of it (its share of a reply certificate).
  std::vector<Digest> digests;
  if (!crypto::verify_replies(*verifier_, batch, &digests)) {
    trace("client" + std::to_string(c) + " drops r" + std::to_string(batch.replica.value) +
          "'s replies: the signature does not check");
    return;
  }
  clients_[c].session->learn_membership(batch.replica, batch.membership_changes);
  ReplyProof proof{batch.replica, std::move(digests), 0, batch.signature};
  for (uint32_t i = 0; i < batch.replies.size(); ++i) {
    proof.index = i;
    proof.epoch = batch.replies[i].epoch;
    clients_[c].session->on_reply(now_ns_, batch.replies[i], &proof);
  }
}

void Simulator::record_honest_output(ReplicaId r, const ClientReply& reply) {
  if (reply.status != ReplyStatus::kOk) return;
  const RequestKey key{reply.client, reply.sequence};
  auto [output, inserted] = honest_outputs_.emplace(key, std::pair{r, reply.result});
  if (!inserted && output->second.second != reply.result) {
    fail("reply agreement: honest r" + std::to_string(output->second.first.value) + " answered " +
         key_text(key) + " with " + describe_result(output->second.second) + ", honest r" +
         std::to_string(r.value) + " with " + describe_result(reply.result));
    return;
  }
  auto pending = unconfirmed_accepts_.find(key);
  if (pending == unconfirmed_accepts_.end()) return;
  if (pending->second.second != reply.result) {
    fail("accepted result: client" + std::to_string(pending->second.first) + " accepted " +
         describe_result(pending->second.second) + " for " + key_text(key) + ", but honest r" +
         std::to_string(r.value) + " answered " + describe_result(reply.result));
  }
  unconfirmed_accepts_.erase(pending);
}

void Simulator::check_accepted(size_t c, const RequestKey& key, const Bytes& result) {
  // A client may complete only with a result some honest replica gave (t+1 matching replies
  // include an honest one): the direct check that quorum logic keeps liars out.
  auto output = honest_outputs_.find(key);
  if (output == honest_outputs_.end()) {
    unconfirmed_accepts_.emplace(key, std::pair{c, result});
    return;
  }
  if (output->second.second != result) {
    fail("accepted result: client" + std::to_string(c) + " accepted " + describe_result(result) +
         " for " + key_text(key) + ", but honest r" + std::to_string(output->second.first.value) +
         " answered " + describe_result(output->second.second));
  }
}

void Simulator::resume(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  slot.paused = false;
  slot.resumed_ns = now_ns_;
  trace("r" + std::to_string(r.value) + " resumes with " + std::to_string(slot.inbox.size()) +
        " queued inputs");
  if (slot.sync_due_on_resume) {
    slot.sync_due_on_resume = false;
    disk_sync(r);
  }
  // An operator's request that came while it was frozen waited in its socket buffer.
  for (const auto& [change, target] : std::exchange(slot.pending_admins, {})) {
    if (violation_) break;
    apply_admin(r, change, target);
  }
  // Everything that queued up is processed now, in arrival order and before any later arrival,
  // which keeps every channel FIFO across the pause.
  while (!slot.inbox.empty() && !violation_) {
    ReplicaInput input = std::move(slot.inbox.front());
    slot.inbox.pop_front();
    step_replica(r, input);
  }
  if (!violation_) tick_replica(r);
}

void Simulator::crash(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  slot.crashed = true;
  slot.paused = false;  // a crash ends a pause for good: nothing resumes
  slot.inbox.clear();
  ++slot.generation;  // its timers, pending syncs and replies in flight die with it
  // Its pending flush dies with it (the event is dropped as stale): a new process starts afresh.
  slot.flush_scheduled = false;
  if (!durable()) {
    // Frames already sent may or may not have left the machine: a prefix of each channel's
    // in-flight frames arrives, the rest is lost with the process (a crash mid-broadcast).
    for (Channel& channel : channels_[r.value]) {
      channel.lost_after = random_.between(channel.delivered, channel.sent);
    }
  } else {
    // The process may come back, so its connections reset: nothing in flight from or to it is
    // ever delivered (a frame of the old process must not reach anyone after it crashed, and
    // the new process starts its connections afresh).
    for (uint32_t other = 0; other < replicas_.size(); ++other) {
      for (Channel* channel : {&channels_[r.value][other], &channels_[other][r.value]}) {
        channel->lost_after = channel->delivered;
        channel->lost_through = channel->sent;
      }
      channels_[r.value][other].parked.clear();  // the old process's frames die with it
      channels_[r.value][other].receiver_generation_known = Channel::kUnknownGeneration;
    }
    forget_unsynced_executions(r);
    slot.held.clear();  // outputs waiting for their fsync never leave
    slot.sync_scheduled = false;
    slot.sync_due_on_resume = false;
    slot.flush_scheduled = false;
    slot.store.reset();  // no I/O: what was not synced is up to the disk's crash below
    if (random_.chance(profile_.torn_per_million)) {
      const uint64_t torn_seed = random_.next_u64();
      slot.disk->crash(torn_seed);
      count_fault(
          FaultKind::kTornWrite,
          "r" + std::to_string(r.value) + " kept a prefix of its unsynced writes, the last torn");
    } else {
      slot.disk->crash();
    }
  }
  if (options_.hooks.disk) options_.hooks.disk->on_crash(r, random_);
  check_budget();
}

// ---- durability (durable failstop runs) -------------------------------------------------------

void Simulator::open_fresh_disk(ReplicaSlot& slot) {
  slot.disk = std::make_unique<storage::MemoryStorage>();
  storage::StoreRecovery recovery;
  slot.store.emplace(storage::ReplicaStore::open(*slot.disk, wal_options(), recovery));
}

storage::WalOptions Simulator::wal_options() const {
  storage::WalOptions options;
  options.segment_bytes = kSegmentBytes;
  options.sync_policy = storage::SyncPolicy::kAlways;
  // Every append is written to the disk at once (unsynced), so that a crash can tear it.
  options.buffer_bytes_max = 0;
  return options;
}

void Simulator::persist(ReplicaId r, Replica::Output& output) {
  ReplicaSlot& slot = replicas_[r.value];
  const bool planted = options_.planted.persist_after_send;
  if (planted) {
    // Planted bug: the step's messages and replies leave before its records are durable.
    release_output(r, std::move(output.to_peers), std::move(output.to_clients));
  }
  try {
    // A joiner that loaded a donor's state in this step: a checkpoint of it goes to the disk
    // before the step's records (which describe changes to that state, not to what the disk
    // held), as the runtime does. Its position: the loaded one plus this step's executions.
    const bool checkpoint_first =
        output.loaded_state && slot.store->next_index() > slot.checkpoint_log_index;
    if (checkpoint_first) write_checkpoint(r);
    for (const OrderingCore::PersistRecord& record : output.persist) {
      if (record.payload.size() + storage::kWalRecordHeaderBytes > kSegmentBytes) {
        fail("durability: r" + std::to_string(r.value) + " must persist a record of " +
             std::to_string(record.payload.size()) + " bytes, more than a log segment holds (" +
             std::to_string(kSegmentBytes) + ")");
        return;
      }
      slot.store->append(record.type, record.payload);
      hash_.add(record.type);
      hash_.add(record.payload.size());
    }
    if (output.loaded_state && !checkpoint_first) {
      // The disk's last checkpoint is at the next index (an old disk with nothing logged since):
      // it cannot be replaced in place, so this one follows the step's records.
      if (slot.store->next_index() > slot.checkpoint_log_index) {
        write_checkpoint(r);
      } else {
        fail("simulator: r" + std::to_string(r.value) +
             " loaded a state but can write no checkpoint of it (nothing logged since the last)");
        return;
      }
    }
    maybe_checkpoint(r);
  } catch (const std::exception& error) {
    fail("durability: r" + std::to_string(r.value) + "'s store failed: " + error.what());
    return;
  }
  if (planted) {
    if (!output.persist.empty()) schedule_sync(r);
    return;
  }
  // Persist, then send: the outputs wait for the fsync that covers this step's records (and
  // behind outputs already waiting, so that every channel stays FIFO).
  if (output.persist.empty() && slot.held.empty()) {
    release_output(r, std::move(output.to_peers), std::move(output.to_clients));
    return;
  }
  if (output.to_peers.empty() && output.to_clients.empty() && output.persist.empty()) return;
  slot.held.push_back(ReplicaSlot::Held{std::move(output.to_peers), std::move(output.to_clients)});
  schedule_sync(r);
}

void Simulator::schedule_sync(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  if (slot.sync_scheduled) return;
  slot.sync_scheduled = true;
  schedule(now_ns_ + run_profile_.sync_latency_ns, DiskSync{r, slot.generation});
}

void Simulator::disk_sync(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  try {
    slot.store->commit(now_ns_);
  } catch (const std::exception& error) {
    fail("durability: r" + std::to_string(r.value) + "'s commit failed: " + error.what());
    return;
  }
  slot.synced_position = slot.executed_position;
  // One fsync covers every record appended so far: everything held may go (group commit).
  std::deque<ReplicaSlot::Held> held = std::move(slot.held);
  slot.held.clear();
  for (ReplicaSlot::Held& batch : held) {
    if (violation_) return;
    release_output(r, std::move(batch.to_peers), std::move(batch.to_clients));
  }
}

void Simulator::maybe_checkpoint(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  // A faulty replica's executions are not checked (no position), but it checkpoints as often.
  const uint64_t executed = faulty(r) ? slot.unchecked_executions : slot.executed_position;
  if (executed < slot.checkpoint_position + run_profile_.checkpoint_interval) return;
  // A checkpoint at the index of the current one could not replace it crash-safely (the store
  // refuses); wait for a record.
  if (slot.store->next_index() <= slot.checkpoint_log_index) return;
  write_checkpoint(r);
}

void Simulator::write_checkpoint(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  const uint64_t log_index = slot.store->next_index();
  const Replica::CheckpointData data = slot.replica->checkpoint();
  slot.store->write_checkpoint(
      storage::Checkpoint{log_index, data.protocol_state, data.service_snapshot});
  // write_checkpoint synced the log first, and the checkpoint itself is durable.
  slot.synced_position = slot.executed_position;
  slot.checkpoint_positions[log_index] = slot.executed_position;
  slot.checkpoint_position = faulty(r) ? slot.unchecked_executions : slot.executed_position;
  slot.checkpoint_log_index = log_index;
  hash_.add(0xc0000000 + log_index);
  trace("r" + std::to_string(r.value) + " checkpoints at log index " + std::to_string(log_index) +
        " (execution #" + std::to_string(slot.executed_position) + ")");
}

void Simulator::forget_unsynced_executions(ReplicaId r) {
  // What a replica executed in memory but had not synced when it crashed was never visible (its
  // replies and messages waited for the fsync) and is gone. When no other replica got as far, the
  // agreed sequence so far ends where this replica's disk does: the cluster may order something
  // else there (a replica alone in its view executes its own entries at once). The checkers then
  // hold the rest of the run to that shorter sequence, and acknowledged writes to the history.
  ReplicaSlot& slot = replicas_[r.value];
  uint64_t keep = slot.synced_position;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    if (i == r.value) continue;
    keep = std::max(keep, std::min<uint64_t>(replicas_[i].executed_high, reference_.size()));
  }
  if (keep < reference_.size()) {
    trace("r" + std::to_string(r.value) + " crashed with executions #" + std::to_string(keep + 1) +
          "..#" + std::to_string(reference_.size()) +
          " unsynced and no other replica past them: they are forgotten");
    for (uint64_t i = keep; i < reference_.size(); ++i) {
      if (reference_[i].outcome != Service::Outcome::kExecuted) continue;
      first_executed_ns_.erase(RequestKey{reference_[i].client, reference_[i].sequence});
    }
    reference_.resize(keep);
    forget_prefix_digests_after(keep);
    hash_.add(0xd0000000 + keep);
  }
  slot.executed_high = std::min<uint64_t>(slot.executed_high, reference_.size());
}

bool Simulator::restart_window_open() const {
  // From a crash that will restart until a failure timeout after the restart: the recovered
  // replica may still be waiting to hear from every member of its recovered view.
  if (last_restart_ns_ != 0 && now_ns_ < last_restart_ns_ + kFailureTimeoutNs) return true;
  for (const ReplicaSlot& slot : replicas_) {
    if (slot.restart_pending) return true;
  }
  return false;
}

bool Simulator::membership_settled() const {
  // No failure in progress: no long pause, and every failed replica already removed from the view
  // of every replica that is up.
  std::vector<ReplicaId> up;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    const ReplicaSlot& slot = replicas_[i];
    if (slot.paused && slot.budgeted) return false;
    if (!slot.crashed && !slot.replica->halted()) up.push_back(ReplicaId{i});
  }
  for (ReplicaId r : up) {
    for (ReplicaId member : replicas_[r.value].replica->core().members()) {
      if (std::find(up.begin(), up.end(), member) == up.end()) return false;
    }
  }
  return true;
}

void Simulator::hold_agreed_prefix(ReplicaSlot& slot, uint64_t position) const {
  slot.executed_once.clear();
  slot.executed_any.clear();
  for (uint64_t i = 0; i < position && i < reference_.size(); ++i) {
    const RequestKey key{reference_[i].client, reference_[i].sequence};
    if (reference_[i].outcome == Service::Outcome::kExecuted) slot.executed_once.insert(key);
    slot.executed_any.insert(key);
  }
}

bool Simulator::crash_for_restart(ReplicaId r, uint64_t downtime_ns, bool releases_unit) {
  ReplicaSlot& slot = replicas_[r.value];
  crash(r);
  slot.restart_pending = true;
  slot.restart_releases_unit = releases_unit;
  slot.restart_after_corruption = false;
  schedule(now_ns_ + downtime_ns, RestartDue{r, slot.generation});
  return true;
}

bool Simulator::corrupt_disk(ReplicaId r) {
  // A bad byte in what was synced: a checkpoint, or a log record that is not the last one of the
  // log (a damaged last record looks exactly like a torn tail and is dropped silently, storage/
  // wal.h "limits": replication, not the disk, covers that, and it is outside this fault).
  ReplicaSlot& slot = replicas_[r.value];
  struct Target {
    std::string file;
    uint64_t end;  // corrupt a byte in [0, end)
  };
  std::vector<Target> targets;
  std::vector<std::string> segments;
  for (const std::string& name : slot.disk->list()) {
    if (name.starts_with("checkpoint-")) {
      targets.push_back(Target{name, slot.disk->contents(name).size()});
    } else if (name.starts_with("wal-")) {
      segments.push_back(name);
    }
  }
  std::sort(segments.begin(), segments.end());
  for (size_t i = 0; i < segments.size(); ++i) {
    const Bytes bytes = slot.disk->contents(segments[i]);
    // Records back to back from offset 0: 24-byte header, payload length at offset 8.
    uint64_t offset = 0;
    uint64_t last_start = 0;
    while (offset + 24 <= bytes.size()) {
      uint64_t length = 0;
      for (int b = 0; b < 4; ++b)
        length |= static_cast<uint64_t>(bytes[offset + 8 + b]) << (8 * b);
      if (bytes[offset + 12] == 0 || offset + 24 + length > bytes.size()) break;  // free space
      last_start = offset;
      offset += 24 + length;
    }
    const uint64_t end = i + 1 == segments.size() ? last_start : offset;
    if (end > 0) targets.push_back(Target{segments[i], end});
  }
  if (targets.empty()) return false;
  const Target& target = targets[random_.below(targets.size())];
  const uint64_t offset = random_.below(target.end);
  const auto mask = static_cast<uint8_t>(random_.between(1, 255));
  slot.disk->corrupt(target.file, offset, mask);
  count_fault(FaultKind::kDiskCorruption, "r" + std::to_string(r.value) + " " + target.file +
                                              " byte " + std::to_string(offset));
  return true;
}

bool Simulator::cluster_crash() {
  if (cluster_crashes_ >= kClusterCrashesMax) return false;
  std::vector<ReplicaId> up;
  // Byzantine: the recovery needs every replica's claim, so a replica that crashed earlier (for
  // good) restarts from its disk with the others, and none may be without a usable disk (refused,
  // joining, never synced) or still catching up.
  std::vector<ReplicaId> down;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    const ReplicaSlot& slot = replicas_[i];
    if (slot.restart_pending) return false;  // one restart episode at a time
    // (A faulty replica may be catching up at any time: one that left the honest order goes
    // back to it, DESIGN §11.8; that does not keep the cluster from crashing.)
    const bool behind = !faulty(ReplicaId{i}) && (slot.catching_up || !slot.replica->serving());
    if (byzantine_mode() &&
        (slot.refused || behind || (slot.store && slot.store->next_index() == 0))) {
      return false;
    }
    if (!slot.crashed && !slot.replica->halted()) {
      up.push_back(ReplicaId{i});
    } else if (byzantine_mode()) {
      down.push_back(ReplicaId{i});
    }
  }
  if (up.empty()) return false;
  if (!byzantine_mode() && (!membership_settled() || restart_window_open())) return false;
  ++cluster_crashes_;
  const uint64_t downtime = random_.between(1 * kMs, kClusterDowntimeMaxNs);
  // Byzantine, with faulty replicas: half the time the operator rules them out of the recovery
  // (every replica restarts with the same recovery_excused, `--recover-without`). That loses no
  // acknowledged write: every certificate has an honest signer, whose claim still counts.
  std::vector<ReplicaId> ruled_out;
  if (byzantine_mode() && run_profile_.byzantine_replicas > 0 && random_.chance(500'000)) {
    for (uint32_t i = 0; i < replicas_.size(); ++i) {
      if (faulty(ReplicaId{i})) ruled_out.push_back(ReplicaId{i});
    }
  }
  std::string ruling;
  for (ReplicaId r : ruled_out)
    ruling += (ruling.empty() ? "; the operator rules out r" : ", r") + std::to_string(r.value);
  count_fault(FaultKind::kClusterCrash,
              std::to_string(up.size()) + " replicas, down for " + time_text(downtime) + "s" +
                  (down.empty() ? ""
                                : "; " + std::to_string(down.size()) +
                                      " crashed earlier restart with them") +
                  ruling);
  cluster_down_ = static_cast<uint32_t>(up.size() + down.size());
  if (byzantine_mode()) {
    cluster_ruling_ = !ruled_out.empty();
    if (cluster_ruling_) ++recoveries_with_ruling_;
    for (ReplicaSlot& slot : replicas_)
      slot.byzantine_options.recovery_excused = ruled_out;
    cluster_rewrite_open_ = true;
    boundary_voted_before_crash_us_ =
        honest_checkpoints_.empty() ? 0 : honest_checkpoints_.rbegin()->first;
    for (uint32_t i = 0; i < replicas_.size(); ++i) {
      if (faulty(ReplicaId{i})) continue;
      replicas_[i].cluster_recovering = true;
      ++cluster_recovering_;
    }
  }
  for (ReplicaId r : up) {
    replicas_[r.value].in_cluster_crash = true;
    crash_for_restart(r, downtime + random_.between(0, kClusterRestartJitterNs), false);
  }
  for (ReplicaId r : down) {
    ReplicaSlot& slot = replicas_[r.value];
    // Back with the others: a crash for good no longer (its unit of t is free once it serves).
    if (std::exchange(slot.crashed_for_good, false)) ++crashes_ended_by_cluster_crash_;
    slot.in_cluster_crash = true;
    slot.restart_pending = true;
    slot.restart_releases_unit = false;
    slot.restart_after_corruption = false;
    schedule(now_ns_ + downtime + random_.between(0, kClusterRestartJitterNs),
             RestartDue{r, slot.generation});
  }
  return true;
}

void Simulator::restart(ReplicaId r) {
  if (byzantine_mode() && !durable()) {
    restart_byzantine(r);
    return;
  }
  ReplicaSlot& slot = replicas_[r.value];
  slot.restart_pending = false;
  ++slot.restarts;
  // A joiner (reconfiguration): a fresh process with Options::join, on a wiped disk or its old
  // one. Non-durable runs have no disk: every restart there is a joiner's.
  bool join = std::exchange(slot.restart_join, false);
  const bool wipe = std::exchange(slot.restart_wipe, false);
  LOCKSTEP_ASSERT(durable() || join, "a non-durable replica restarts only as a joiner");
  if (wipe && durable()) wipe_disk(r);
  storage::StoreRecovery recovery;
  std::optional<storage::ReplicaStore> store;
  try {
    if (durable()) store.emplace(storage::ReplicaStore::open(*slot.disk, wal_options(), recovery));
  } catch (const storage::WalCorruption& error) {
    slot.refused = true;
    count_fault(FaultKind::kRecoveryRefused,
                "r" + std::to_string(r.value) + " (log damaged): " + error.what());
  } catch (const storage::StoreCorruption& error) {
    slot.refused = true;
    count_fault(FaultKind::kRecoveryRefused,
                "r" + std::to_string(r.value) + " (store damaged): " + error.what());
  } catch (const std::exception& error) {
    fail("durability: r" + std::to_string(r.value) + "'s store failed to open: " + error.what());
    return;
  }
  if (slot.in_cluster_crash) {
    slot.in_cluster_crash = false;
    --cluster_down_;
  }
  if (slot.refused) {
    // It stays down; its unit of the budget (taken when the damage was done) stays spent.
    if (!slot.restart_after_corruption) {
      fail("durability: r" + std::to_string(r.value) +
           " refused to recover a disk that was never damaged (only crashed)");
    }
    check_budget();
    return;
  }
  slot.store = std::move(store);
  // Byzantine: a disk with nothing on it (crashed before its first fsync) is a new machine; it
  // starts as a joiner, as an operator would start it.
  if (byzantine_mode() && !recovery.checkpoint && recovery.records.empty()) join = true;
  if (byzantine_mode()) {
    // The same key and clock; `join` only on a wiped disk (a catch-up restart).
    snapshots_refused_ += slot.replica->rejected_state_transfers();
    byzantine::Options options = slot.byzantine_options;
    options.join = join;
    slot.replica = std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>(), limits());
  } else {
    failstop::Options options = slot.options;
    options.incarnation = random_.between(1, UINT64_MAX);
    slot.options = options;  // without `join`: a later restart from its disk recovers as usual
    options.join = join;
    slot.replica = std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>(), limits());
  }
  observe_state_transfers(r);
  Replica::CheckpointData data;
  uint64_t position = 0;
  if (recovery.checkpoint) {
    data.protocol_state = recovery.checkpoint->protocol_state;
    data.service_snapshot = recovery.checkpoint->service_snapshot;
    auto known = slot.checkpoint_positions.find(recovery.checkpoint->log_index);
    if (known == slot.checkpoint_positions.end()) {
      fail("durability: r" + std::to_string(r.value) + " recovered a checkpoint at log index " +
           std::to_string(recovery.checkpoint->log_index) + " that it never wrote");
      return;
    }
    position = known->second;
    if (byzantine_mode()) {
      // A durable byzantine checkpoint holds the base t+1 replicas vouched for (its service
      // snapshot) and the batches after it (the core's half, run again when its recovery
      // completes): the replica resumes at the base, the agreed prefix stamped below it.
      const std::optional<byzantine::DurableState> state =
          byzantine::decode_durable_state(recovery.checkpoint->protocol_state);
      if (!state) {
        fail("durability: r" + std::to_string(r.value) +
             " wrote a checkpoint whose protocol state does not decode");
        return;
      }
      const uint64_t base_us = state->base_and_batches.base.position_us;
      position =
          faulty(r)
              ? 0
              : static_cast<uint64_t>(std::partition_point(reference_.begin(), reference_.end(),
                                                           [&](const Replica::Executed& e) {
                                                             return e.timestamp.clock < base_us;
                                                           }) -
                                      reference_.begin());
    }
  }
  if (position > reference_.size()) {
    fail("simulator: r" + std::to_string(r.value) + " recovered to execution #" +
         std::to_string(position) + " but the agreed sequence has only " +
         std::to_string(reference_.size()) + " (an execution it had synced was forgotten)");
    return;
  }
  std::vector<OrderingCore::PersistRecord> records;
  records.reserve(recovery.records.size());
  for (storage::StoredRecord& record : recovery.records)
    records.push_back(OrderingCore::PersistRecord{record.type, std::move(record.payload)});
  try {
    if (durable()) slot.replica->recover(data, records);
  } catch (const std::exception& error) {
    if (slot.restart_after_corruption) {
      // A damaged disk whose records no longer fit what is left of it (e.g. a joiner's only
      // checkpoint, the state it loaded, was hit): the replica refuses to start, as when the
      // store refuses. It stays down; its unit stays spent.
      slot.refused = true;
      count_fault(FaultKind::kRecoveryRefused,
                  "r" + std::to_string(r.value) +
                      " (records do not fit the damaged disk): " + error.what());
      check_budget();
      return;
    }
    fail("durability: r" + std::to_string(r.value) +
         " could not rebuild itself from its disk: " + error.what());
    return;
  }
  // Agreement across the restart: the new process continues the agreed sequence from where its
  // checkpoint was taken; it has executed (and may answer) exactly what comes before.
  slot.executed_position = position;
  slot.synced_position = position;
  slot.checkpoint_position = position;
  slot.unchecked_executions = 0;
  slot.checkpoint_log_index = recovery.checkpoint ? recovery.checkpoint->log_index : 0;
  hold_agreed_prefix(slot, position);
  slot.crashed = false;
  slot.halted_seen = false;
  slot.resumed_ns = now_ns_;
  last_restart_ns_ = now_ns_;
  if (slot.restart_releases_unit && slot.budgeted && slot.replica->serving()) {
    // Back within the failure timeout: the same member again, no longer failed.
    slot.budgeted = false;
    --budget_used_;
  }
  // (After a damaged disk that may be right: what is left of it can be a joiner's records without
  // the state it loaded, and the replica then asks to join again, as a failed one.)
  if (!byzantine_mode() && slot.restart_releases_unit && !join && !slot.restart_after_corruption &&
      !slot.replica->serving() && !slot.replica->halted()) {
    fail("failure detection: r" + std::to_string(r.value) +
         " recovered from its disk as removed (a joiner) although it was never down for the "
         "failure timeout");
    return;
  }
  hash_.add(0xe0000000 + position);
  if (byzantine_mode()) {
    // Recovering (restarted from its disk) or joining (wiped): it serves nothing until it has
    // caught up from a live cluster or the whole-cluster recovery has completed.
    slot.flush_scheduled = false;
    slot.loaded_digest_due = false;
    slot.restarted_from_disk = !join;
    slot.catching_up = !faulty(r) && !slot.replica->serving();
    slot.catch_up_started_ns = now_ns_;
    if (!faulty(r) && slot.replica->serving() && !join &&
        (recovery.checkpoint || !records.empty())) {
      fail("durability: r" + std::to_string(r.value) +
           " serves at once after recovering from its disk (a restarted replica must catch up or "
           "take part in a whole-cluster recovery first)");
      return;
    }
    if (cluster_down_ == 0 && cluster_recovering_ > 0) {
      // The last replica of a whole-cluster crash is up: the recovery's time starts now.
      for (ReplicaSlot& other : replicas_) {
        if (other.cluster_recovering) other.catch_up_started_ns = now_ns_;
      }
    }
  }
  if (!durable()) {
    trace("r" + std::to_string(r.value) + " starts as a joiner (a new process, no state)");
  } else
    trace("r" + std::to_string(r.value) + " recovers from its disk" + (join ? " as a joiner" : "") +
          (wipe ? " (wiped)" : "") + ": " +
          (recovery.checkpoint
               ? "checkpoint at log index " + std::to_string(recovery.checkpoint->log_index) +
                     " (execution #" + std::to_string(position) + ")"
               : std::string("no checkpoint")) +
          ", " + std::to_string(records.size()) + " log records" +
          (recovery.log.torn_bytes_dropped > 0
               ? ", torn tail of " + std::to_string(recovery.log.torn_bytes_dropped) +
                     " bytes dropped"
               : "") +
          (recovery.skipped_checkpoints.empty()
               ? ""
               : ", skipped " + std::to_string(recovery.skipped_checkpoints.size()) +
                     " damaged checkpoint(s)") +
          (slot.replica->halted() ? "; its disk says it was removed: halted" : "") +
          (!join && !slot.replica->halted() && !slot.replica->serving()
               ? (byzantine_mode() ? "; recovering"
                                   : "; its disk says it was removed: it asks to join")
               : ""));
  slot.replica->core().check_invariants();
  schedule(now_ns_ + random_.between(0, profile_.tick_interval_ns),
           ReplicaTick{r, slot.generation});
  // Connections come up with every replica that is up: each side learns the other's process,
  // and frames queued for this process by senders that never knew its old one go out now.
  for (uint32_t other = 0; other < replicas_.size() && !durable(); ++other) {
    // Non-durable: frames in flight to or from the old process never reach the new one, nor
    // anyone from it (its connections are new); from here on the channels carry everything.
    Channel& inbound = channels_[other][r.value];
    inbound.lost_after = inbound.delivered;
    inbound.lost_through = inbound.sent;
    Channel& outbound = channels_[r.value][other];
    outbound.lost_after = std::min(outbound.lost_after, outbound.sent);
    outbound.lost_through = outbound.sent;
  }
  for (uint32_t other = 0; other < replicas_.size() && durable(); ++other) {
    if (other == r.value || replicas_[other].crashed) continue;
    channels_[r.value][other].receiver_generation_known = replicas_[other].generation;
    Channel& inbound = channels_[other][r.value];
    inbound.receiver_generation_known = slot.generation;
    std::vector<ReplicaMessage> parked = std::move(inbound.parked);
    inbound.parked.clear();
    for (ReplicaMessage& message : parked)
      send_peer(ReplicaId{other}, r, std::move(message));
  }
  if (slot.replica->halted()) {
    slot.halted_seen = true;
    if (!slot.budgeted) {
      fail("failure detection: r" + std::to_string(r.value) +
           " recovered as removed although it was never down for the failure timeout");
    }
  }
  check_budget();
}

std::optional<std::string> Simulator::lost_acknowledged_write() const {
  // Every write a client saw acknowledged must be in the state of every live replica (with
  // durability, across crashes, restarts and whole-cluster crashes alike).
  std::map<uint64_t, RequestKey> request_of;
  for (const auto& [key, id] : history_ids_)
    request_of.emplace(id, key);
  // ... and in the final agreed history (byzantine: of the honest replicas; after a whole-cluster
  // crash, the sequence the recovered cluster continued).
  std::set<RequestKey> agreed;
  for (const Replica::Executed& executed : reference_) {
    if (executed.outcome == Service::Outcome::kExecuted)
      agreed.emplace(executed.client, executed.sequence);
  }
  const std::vector<check::Operation>& operations = history_.operations();
  for (size_t id = 0; id < operations.size(); ++id) {
    const check::Operation& op = operations[id];
    if (op.outcome != check::Outcome::kOk || op.kind == check::OpKind::kGet) continue;
    auto key = request_of.find(id);
    if (key == request_of.end()) continue;
    if (!agreed.contains(key->second)) {
      return "acknowledged write lost: " + std::string(check::op_kind_name(op.kind)) + " " +
             op.key + " " + key_text(key->second) + " completed at " +
             time_text(op.return_ns.value_or(0)) + "s, but it is not in the agreed sequence (" +
             std::to_string(reference_.size()) + " executions, " +
             std::to_string(cluster_crashes_) + " whole-cluster crashes)";
    }
    for (uint32_t i = 0; i < replicas_.size(); ++i) {
      if (!serving(ReplicaId{i}) || replicas_[i].executed_any.contains(key->second)) continue;
      return "acknowledged write lost: " + std::string(check::op_kind_name(op.kind)) + " " +
             op.key + " " + key_text(key->second) + " completed at " +
             time_text(op.return_ns.value_or(0)) + "s, but live r" + std::to_string(i) +
             " (restarted " + std::to_string(replicas_[i].restarts) + " times) has not executed it";
    }
  }
  return std::nullopt;
}

// ---- reconfiguration (failstop) ---------------------------------------------------------------

namespace {
// Identifies a StateTransfer by its content (FNV-1a over both blobs), so that the tag its donor
// got follows it through held outputs, parked frames and duplicates alike.
uint64_t transfer_hash(const StateTransfer& transfer) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  auto mix = [&](const Bytes& bytes) {
    for (uint8_t byte : bytes) {
      hash ^= byte;
      hash *= 0x100000001b3ULL;
    }
    hash ^= bytes.size();
    hash *= 0x100000001b3ULL;
  };
  mix(transfer.protocol_state);
  mix(transfer.service_snapshot);
  return hash;
}
}  // namespace

void Simulator::operator_admin(MembershipChange change, ReplicaId r) {
  // `lockstep admin` sends the request to every replica of the cluster file; the members answer
  // (a paused one when it resumes: the request waits in its socket buffer). Crashed, halted and
  // joining replicas cannot take it (a joiner refuses: "ask a member").
  bool refused = false;
  bool reached = false;
  for (uint32_t i = 0; i < replicas_.size() && !violation_; ++i) {
    ReplicaSlot& slot = replicas_[i];
    if (slot.crashed || slot.replica->halted() || !slot.replica->serving()) continue;
    reached = true;
    if (slot.paused) {
      slot.pending_admins.emplace_back(change, r);
      continue;
    }
    refused |= !apply_admin(ReplicaId{i}, change, r);
  }
  // No member took it (all down at that moment, a whole-cluster crash): `lockstep admin` says
  // so and the operator runs it again.
  refused |= !reached;
  // An add that a member refuses because the replica is still a member there (its removal is
  // under way) would leave it barred at that member: the operator tries again, as one would
  // after reading the refusal.
  ReplicaSlot& target = replicas_[r.value];
  if (change == MembershipChange::kAdd && refused && !target.replica->serving() &&
      target.add_retries < kAdminRetriesMax) {
    ++target.add_retries;
    schedule(now_ns_ + kAdminRetryNs, AdminDue{r, MembershipChange::kAdd});
  }
}

bool Simulator::apply_admin(ReplicaId member, MembershipChange change, ReplicaId r) {
  ReplicaSlot& slot = replicas_[member.value];
  if (slot.crashed) return false;
  const AdminReply reply =
      slot.replica->on_admin(slot.clock.at(now_ns_), AdminRequest{++admin_nonce_, change, r});
  hash_.add(0xad000000 + (reply.accepted ? 1 : 0));
  trace("r" + std::to_string(member.value) +
        (change == MembershipChange::kAdd ? " add-replica " : " remove-replica ") +
        std::to_string(r.value) + (reply.accepted ? ": accepted: " : ": refused: ") + reply.detail);
  after_step(member);
  return reply.accepted;
}

void Simulator::wipe_disk(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  slot.store.reset();
  slot.disk = std::make_unique<storage::MemoryStorage>();
  slot.checkpoint_positions.clear();
  slot.checkpoint_position = 0;
  slot.checkpoint_log_index = 0;
  slot.synced_position = 0;
  slot.refused = false;
}

void Simulator::start_joiner(ReplicaId r, bool wipe) {
  ReplicaSlot& slot = replicas_[r.value];
  LOCKSTEP_ASSERT(slot.crashed, "a joiner's process starts on a stopped machine");
  slot.restart_join = true;
  slot.restart_wipe = wipe;
  slot.restart_releases_unit = false;
  slot.restart_after_corruption = false;
  restart(r);
}

void Simulator::tag_state_transfers(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  std::vector<std::pair<ReplicaId, StateTransfer>> built = std::exchange(slot.built_transfers, {});
  if (built.empty()) return;
  if (!slot.replica->serving()) {
    fail("state transfer: r" + std::to_string(r.value) +
         " sent its state although it does not serve (halted or joining)");
    return;
  }
  // The Replica filled these at the end of this step (fill_state_transfers): its state then is
  // its executions so far, which the agreement check matched to the agreed prefix of this length.
  const TransferTag tag{slot.executed_position, slot.replica->service().digest(), r.value};
  for (const auto& [to, transfer] : built) {
    transfer_tags_[transfer_hash(transfer)] = tag;
    trace("r" + std::to_string(r.value) + " sends r" + std::to_string(to.value) +
          " its state at execution #" + std::to_string(tag.position));
  }
  check_prefix_digest(r, tag.position, "as a donor");
}

void Simulator::observe_state_transfers(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  Replica::StateTransferObserver observer;
  observer.built = [this, r](ReplicaId to, const StateTransfer& transfer) {
    replicas_[r.value].built_transfers.emplace_back(to, transfer);
  };
  observer.loaded = [this, r](const StateTransfer& transfer) {
    replicas_[r.value].loaded_transfer = transfer;
  };
  slot.replica->observe_state_transfers(std::move(observer));
}

void Simulator::check_prefix_digest(ReplicaId r, uint64_t position, const std::string& role) {
  // Every replica's service state at a position of the agreed sequence is a function of that
  // prefix alone (deterministic execution), so every digest seen there must be the same.
  const uint64_t digest = replicas_[r.value].replica->service().digest();
  const std::string who = "r" + std::to_string(r.value) + " " + role;
  auto [seen, inserted] = prefix_digests_.emplace(position, std::pair{digest, who});
  if (inserted || seen->second.first == digest) return;
  fail("state digest: " + who + " has service digest " + std::to_string(digest) +
       " at execution #" + std::to_string(position) + " of the agreed sequence, but " +
       seen->second.second + " had " + std::to_string(seen->second.first) + " there");
}

void Simulator::forget_prefix_digests_after(uint64_t position) {
  prefix_digests_.erase(prefix_digests_.upper_bound(position), prefix_digests_.end());
}

void Simulator::on_state_loaded(ReplicaId r, const StateTransfer& transfer) {
  // Which prefix of the agreed sequence the joiner now holds. Soundness: the transfer's bytes
  // are exactly what its donor's Replica filled at the end of one step, when the donor had
  // executed the agreed prefix of length p (each of its executions matched the agreed sequence)
  // and had service digest D (checked against every other replica seen at p). The joiner's own
  // digest cannot be observed between the load and the executions of the same step, so:
  //  1. the snapshot bytes it loaded, restored into a fresh Service (the code the Replica runs),
  //     must give D: the joiner starts from the state of the prefix p;
  //  2. its executions from here must be the agreed sequence from p+1 (agreement as a
  //     continuation; they are checked as they come);
  //  3. its digest at its next flush, at some p+e, must equal every other replica's at p+e
  //     (prefix_digests_), and at quiescence all serving replicas' digests must be equal.
  ReplicaSlot& slot = replicas_[r.value];
  ++state_transfers_loaded_;
  ++slot.state_loads;
  auto tag = transfer_tags_.find(transfer_hash(transfer));
  if (tag == transfer_tags_.end()) {
    fail("state transfer: r" + std::to_string(r.value) + " loaded a state from r" +
         std::to_string(transfer.sender.value) + " that no serving donor sent");
    return;
  }
  const TransferTag& loaded = tag->second;
  if (loaded.position > reference_.size()) {
    fail("simulator: r" + std::to_string(r.value) + " loaded a state at execution #" +
         std::to_string(loaded.position) + " but the agreed sequence has only " +
         std::to_string(reference_.size()));
    return;
  }
  try {
    Service scratch(std::make_unique<kv::KvMachine>());
    scratch.restore(transfer.service_snapshot);
    if (scratch.digest() != loaded.digest) {
      fail("state transfer: r" + std::to_string(r.value) +
           " loaded a service snapshot whose digest " + std::to_string(scratch.digest()) +
           " is not r" + std::to_string(loaded.donor) + "'s at execution #" +
           std::to_string(loaded.position) + " (" + std::to_string(loaded.digest) + ")");
      return;
    }
  } catch (const std::exception& error) {
    fail("state transfer: r" + std::to_string(r.value) +
         " loaded a snapshot that does not decode: " + error.what());
    return;
  }
  slot.executed_position = loaded.position;
  slot.executed_high = std::max(slot.executed_high, loaded.position);
  slot.synced_position = loaded.position;
  hold_agreed_prefix(slot, loaded.position);
  slot.loaded_digest_due = true;
  slot.spare_joining = false;
  slot.operator_removed = false;
  if (slot.budgeted) {
    // A member with a state again: the failure it replaced is over.
    slot.budgeted = false;
    --budget_used_;
  }
  hash_.add(0xb0000000 + loaded.position);
  trace("r" + std::to_string(r.value) + " loads r" + std::to_string(loaded.donor) +
        "'s state (view " + std::to_string(transfer.view.value) + "): execution #" +
        std::to_string(loaded.position) + " of the agreed sequence");
}

bool Simulator::try_reconfiguration_fault(FaultKind kind, std::vector<ReplicaId> candidates) {
  // Durable runs: a replica recovered from its disk waits to hear from every member of its view
  // before it suspects anyone (see try_fault), so membership changes start, like restarts, only
  // when no failure is in progress and no restarted replica may still be waiting.
  if (durable() && (restart_window_open() || !membership_settled())) return false;
  auto pick = [&](const std::vector<ReplicaId>& from) { return from[random_.below(from.size())]; };
  const auto later = [&] { return random_.between(1 * kMs, 1 * kSec); };
  switch (kind) {
    case FaultKind::kOperatorRemove: {
      // A unit of t: the removed replica halts, and stays out unless an operator adds it back.
      if (budget_used_ >= run_profile_.t || candidates.empty()) return false;
      const ReplicaId r = pick(candidates);
      ReplicaSlot& slot = replicas_[r.value];
      ++budget_used_;
      slot.budgeted = true;
      slot.operator_removed = true;
      count_fault(kind, "r" + std::to_string(r.value));
      operator_admin(MembershipChange::kRemove, r);
      return true;
    }
    case FaultKind::kWipeRejoin: {
      // Back (as a joiner, without its state) long before the failure timeout: the members see a
      // new incarnation ask to join, remove the old one and add the new one. A unit of t until it
      // has loaded a state.
      if (budget_used_ >= run_profile_.t) return false;
      std::erase_if(candidates, [&](ReplicaId r) {
        const ReplicaSlot& slot = replicas_[r.value];
        return slot.paused || now_ns_ < slot.resumed_ns + kPauseGapNs;
      });
      if (candidates.empty()) return false;
      const ReplicaId r = pick(candidates);
      ReplicaSlot& slot = replicas_[r.value];
      const uint64_t downtime = random_.between(1 * kMs, kShortPauseMaxNs);
      ++budget_used_;
      slot.budgeted = true;
      count_fault(kind, "r" + std::to_string(r.value) + " down for " + time_text(downtime) +
                            "s, disk wiped, back as a joiner");
      crash_for_restart(r, downtime, false);
      slot.restart_join = true;
      slot.restart_wipe = true;
      return true;
    }
    case FaultKind::kRejoin: {
      // A replica that failed (crashed for good, removed after a long pause or restart, removed
      // by an operator, refused its damaged disk) comes back as a new process and joins.
      std::vector<ReplicaId> down;
      for (uint32_t i = 0; i < replicas_.size(); ++i) {
        const ReplicaSlot& slot = replicas_[i];
        if (slot.spare_idle || slot.spare_joining || slot.restart_pending ||
            slot.in_cluster_crash) {
          continue;
        }
        if (slot.crashed || slot.replica->halted()) down.push_back(ReplicaId{i});
      }
      if (down.empty()) return false;
      const ReplicaId r = pick(down);
      ReplicaSlot& slot = replicas_[r.value];
      // Durable runs: its old disk (recovery finds it removed and it asks to join by itself;
      // started with --join or not), or a wiped one. A disk that recovery refused is wiped.
      const bool wipe = !durable() || slot.refused || random_.chance(500'000);
      const bool join = wipe || random_.chance(500'000);
      if (!slot.crashed) crash(r);  // a halted process is stopped first
      std::string detail = "r" + std::to_string(r.value) +
                           (durable() ? (wipe ? " with a wiped disk" : " with its old disk") : "") +
                           (join ? " (--join)" : "");
      const bool add_first = random_.chance(500'000);
      if (slot.operator_removed && !add_first) {
        const uint64_t delay = later();
        detail += "; the operator adds it " + time_text(delay) + "s later";
        schedule(now_ns_ + delay, AdminDue{r, MembershipChange::kAdd});
      } else if (slot.operator_removed) {
        detail += " after an operator add";
      }
      count_fault(kind, detail);
      if (slot.operator_removed && add_first) operator_admin(MembershipChange::kAdd, r);
      if (violation_) return true;
      if (wipe && durable()) wipe_disk(r);
      if (join) {
        start_joiner(r, false);
      } else {
        slot.restart_releases_unit = false;
        slot.restart_after_corruption = false;
        restart(r);
      }
      return true;
    }
    case FaultKind::kSpareJoin: {
      std::optional<ReplicaId> spare;
      for (uint32_t i = 0; i < replicas_.size(); ++i) {
        if (replicas_[i].spare_idle) spare = ReplicaId{i};
      }
      if (!spare) return false;
      ReplicaSlot& slot = replicas_[spare->value];
      slot.spare_idle = false;
      slot.spare_joining = true;
      const bool add_first = random_.chance(500'000);
      const uint64_t delay = add_first ? 0 : later();
      count_fault(kind,
                  "r" + std::to_string(spare->value) +
                      (add_first ? " after the operator's add"
                                 : " before the operator's add (" + time_text(delay) + "s later)"));
      if (add_first) {
        operator_admin(MembershipChange::kAdd, *spare);
      } else {
        schedule(now_ns_ + delay, AdminDue{*spare, MembershipChange::kAdd});
      }
      if (violation_) return true;
      start_joiner(*spare, false);
      return true;
    }
    default:
      return false;
  }
}

// ---- byzantine restarts: checkpoints and catching up (docs/DESIGN.md §11.7) -------------------

bool Simulator::catch_up_restart(std::vector<ReplicaId> candidates,
                                 std::optional<ReplicaId> target) {
  // An honest replica that crashed for good may come back too: its unit of t stays spent until
  // it has loaded. (The budget may be full; that is when this is the only restart possible.)
  std::vector<ReplicaId> down;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    const ReplicaSlot& slot = replicas_[i];
    if (slot.crashed && !slot.restart_pending && !faulty(ReplicaId{i}) && !slot.spare_idle) {
      down.push_back(ReplicaId{i});
    }
  }
  if (target) {
    std::erase_if(candidates, [&](ReplicaId r) { return r != *target; });
    std::erase_if(down, [&](ReplicaId r) { return r != *target; });
  }
  auto pick = [&](const std::vector<ReplicaId>& from) { return from[random_.below(from.size())]; };
  const bool budget_full = budget_used_ >= run_profile_.t || candidates.empty();
  if (!down.empty() && (target || budget_full || random_.chance(profile_.revive_per_million))) {
    const ReplicaId r = pick(down);
    count_fault(FaultKind::kCatchUpRestart, "r" + std::to_string(r.value) +
                                                " comes back after its crash: a new process "
                                                "with --join");
    restart_as_joiner(r);
    return true;
  }
  if (budget_full) return false;
  const ReplicaId r = pick(candidates);
  ReplicaSlot& slot = replicas_[r.value];
  const uint64_t downtime = random_.between(1 * kMs, profile_.catch_up_downtime_max_ns);
  ++budget_used_;
  slot.budgeted = true;
  count_fault(
      FaultKind::kCatchUpRestart,
      "r" + std::to_string(r.value) + " down for " + time_text(downtime) +
          "s, back without its state (--join)" +
          (slot.restarts > 0 ? " (restart " + std::to_string(slot.restarts + 1) + ")" : ""));
  crash(r);
  slot.restart_pending = true;
  // Durable runs: the machine's disk is wiped too (restart() then starts a joiner on it).
  slot.restart_join = true;
  slot.restart_wipe = true;
  slot.restart_releases_unit = false;
  slot.restart_after_corruption = false;
  schedule(now_ns_ + downtime, RestartDue{r, slot.generation});
  return true;
}

void Simulator::restart_as_joiner(ReplicaId r) {
  if (!durable()) {
    restart_byzantine(r);
    return;
  }
  ReplicaSlot& slot = replicas_[r.value];
  slot.restart_join = true;
  slot.restart_wipe = true;
  slot.restart_releases_unit = false;
  slot.restart_after_corruption = false;
  restart(r);
}

void Simulator::on_recovered(ReplicaId r, const std::string& how) {
  ReplicaSlot& slot = replicas_[r.value];
  const bool from_disk = std::exchange(slot.restarted_from_disk, false);
  if (from_disk) ++recoveries_completed_;
  slot.catching_up = false;
  slot.transfer_pieces = 0;
  // (A faulty replica that caught up after a whole-cluster crash stays faulty: its unit stays.)
  if (slot.budgeted && !faulty(r)) {
    slot.budgeted = false;
    --budget_used_;
  }
  if (std::exchange(slot.cluster_recovering, false)) --cluster_recovering_;
  if (!how.empty()) {
    trace("r" + std::to_string(r.value) + " " + how + ", " +
          time_text(now_ns_ - slot.catch_up_started_ns) + "s after its restart" +
          (from_disk ? " from its disk" : ""));
  }
  if (from_disk || !how.empty()) hash_.add(0xe2000000 + r.value);
  check_budget();
}

void Simulator::cut_agreed_sequence(ReplicaId r, uint64_t position,
                                    const std::string& continuation) {
  // After a whole-cluster crash the cluster continues from the highest certified position among
  // every replica's claim (docs/DESIGN.md §11.8): executions past it were never acknowledged (an
  // honest replica holds replies until their position is certified) and may be replaced. So the
  // first recovered execution that differs from the agreed sequence cuts it back there, once per
  // crash; the cut must drop nothing an honest replica had acknowledged.
  const uint64_t old_size = reference_.size();
  for (uint64_t i = position; i < old_size; ++i) {
    const Replica::Executed& dropped = reference_[i];
    if (dropped.outcome != Service::Outcome::kExecuted) continue;
    const RequestKey key{dropped.client, dropped.sequence};
    auto acknowledged = honest_outputs_.find(key);
    if (acknowledged != honest_outputs_.end()) {
      fail("durability: after the whole-cluster crash r" + std::to_string(r.value) +
           "'s execution #" + std::to_string(position + 1) + " is " + continuation +
           ", so the recovered cluster dropped #" + std::to_string(i + 1) + " " + key_text(key) +
           " at " + timestamp_text(dropped.timestamp) + ", which honest r" +
           std::to_string(acknowledged->second.first.value) +
           " had acknowledged (a reply leaves only once its position is certified)");
      return;
    }
    first_executed_ns_.erase(key);
  }
  // Votes cast before the crash for boundaries past the first dropped instance named a state
  // that is gone (those cast since the recovery name the state it continues from: kept).
  const uint64_t first_dropped_us = reference_[position].timestamp.clock;
  if (first_dropped_us < boundary_voted_before_crash_us_) {
    honest_checkpoints_.erase(honest_checkpoints_.upper_bound(first_dropped_us),
                              honest_checkpoints_.upper_bound(boundary_voted_before_crash_us_));
  }
  reference_.resize(position);
  forget_prefix_digests_after(position);
  for (ReplicaSlot& slot : replicas_)
    slot.executed_high = std::min<uint64_t>(slot.executed_high, position);
  cluster_rewrite_open_ = false;
  hash_.add(0xd1000000 + position);
  trace("the recovered cluster continues differently from execution #" +
        std::to_string(position + 1) + " (r" + std::to_string(r.value) +
        "): the agreed sequence is cut from " + std::to_string(old_size) + " to " +
        std::to_string(position) + " executions, none acknowledged");
}

void Simulator::restart_byzantine(ReplicaId r) {
  // A new process in the slot: the same key and clock, no state (the crashed one's Replica is
  // dropped here), `join`. It counts against t (slot.budgeted) until it has loaded a checkpoint.
  ReplicaSlot& slot = replicas_[r.value];
  LOCKSTEP_ASSERT(slot.crashed && slot.budgeted, "a restart follows a budgeted crash");
  slot.restart_pending = false;
  ++slot.restarts;
  snapshots_refused_ += slot.replica->rejected_state_transfers();
  byzantine::Options options = slot.byzantine_options;
  options.join = true;
  slot.catching_up = true;
  slot.catch_up_started_ns = now_ns_;
  hash_.add(0xe1000000 + r.value);
  trace("r" + std::to_string(r.value) +
        " starts as a joiner: a new process without state (--join), restart " +
        std::to_string(slot.restarts));
  launch_byzantine_process(r, options);
  check_budget();
}

void Simulator::launch_byzantine_process(ReplicaId r, const byzantine::Options& options) {
  ReplicaSlot& slot = replicas_[r.value];
  slot.replica = std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>(), limits());
  observe_state_transfers(r);
  slot.crashed = false;
  slot.halted_seen = false;
  slot.resumed_ns = now_ns_;
  slot.flush_scheduled = false;
  slot.loaded_digest_due = false;
  // Agreement as a continuation starts at the position of the checkpoint it loads; until then
  // it executes nothing and answers nobody.
  slot.executed_position = 0;
  slot.executed_once.clear();
  slot.executed_any.clear();
  // Its connections are new: frames in flight to or from the old process never arrive.
  for (uint32_t other = 0; other < replicas_.size(); ++other) {
    Channel& inbound = channels_[other][r.value];
    inbound.lost_after = inbound.delivered;
    inbound.lost_through = inbound.sent;
    Channel& outbound = channels_[r.value][other];
    outbound.lost_after = std::min(outbound.lost_after, outbound.sent);
    outbound.lost_through = outbound.sent;
  }
  slot.replica->core().check_invariants();
  schedule(now_ns_ + random_.between(0, profile_.tick_interval_ns),
           ReplicaTick{r, slot.generation});
}

// ---- byzantine membership changes (docs/DESIGN.md §11.9) ---------------------------------------

void Simulator::administrator(MembershipChange kind, ReplicaId r) {
  if (phase_ == Phase::kDone) return;
  if (change_in_flight_) {
    ChangeInFlight& pending = *change_in_flight_;
    if (adopted_.epoch >= pending.change.epoch) {
      const ChangeInFlight done = std::move(pending);
      change_in_flight_.reset();  // adopted (track_configurations saw it)
      if (done.kind != MembershipChange::kAdd) return;
      // The next spare (one replica per change), then perhaps a removal.
      const uint64_t next_ns =
          now_ns_ + random_.between(1 * kMs, run_profile_.checkpoint_interval_us * kUs);
      if (done.replica.value + 1 < replicas_.size()) {
        schedule(next_ns, AdminDue{ReplicaId{done.replica.value + 1}, MembershipChange::kAdd});
      } else if (removal_planned_) {
        schedule(next_ns, AdminDue{ReplicaId{0}, MembershipChange::kRemove});
      }
      return;
    }
    // Not adopted by its boundary (refused as too soon, or lost): a new change, later.
    if (kWallEpochNs + now_ns_ > pending.change.effective_us * kUs + catch_up_margin_ns_) {
      trace("administrator: epoch " + std::to_string(pending.change.epoch) +
            " not adopted by its boundary; signing it again");
      send_signed_change();
      return;
    }
    // Still in flight: the administrator's client retries (the session table answers repeats).
    for (uint32_t to = 0; to < replicas_.size(); ++to) {
      if (!random_.chance(profile_.client_loss_per_million)) {
        schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns),
                 RequestDelivery{kAdministratorClient, ReplicaId{to}, pending.request});
      }
    }
    schedule(now_ns_ + profile_.client_retry_ns, AdminDue{pending.replica, pending.kind});
    return;
  }
  // A new change waits until every replica that crashed is back and caught up (the operator
  // repairs first, then reconfigures; see membership_changing).
  for (const ReplicaSlot& slot : replicas_) {
    if (slot.restart_pending || slot.catching_up || (slot.crashed && !slot.spare_idle)) {
      schedule(now_ns_ + random_.between(10 * kMs, 200 * kMs), AdminDue{r, kind});
      return;
    }
  }
  // A new change: the spares in, or an honest first member out (never a faulty one: the budget
  // of faulty replicas is the smallest t of the configurations).
  ChangeInFlight pending{kind, r, {}, {}, 0};
  std::vector<ReplicaId> members = adopted_.members;
  if (kind == MembershipChange::kAdd) {
    members.push_back(r);
  } else {
    std::vector<ReplicaId> candidates;
    for (ReplicaId m : adopted_.members) {
      const ReplicaSlot& slot = replicas_[m.value];
      if (!faulty(m) && !slot.budgeted && !slot.crashed && slot.replica->serving() &&
          m.value < replicas_.size() - spares_) {
        candidates.push_back(m);
      }
    }
    if (candidates.empty()) return;
    pending.replica = candidates[random_.below(candidates.size())];
    // No fault touches it from now on: it leaves at the change.
    replicas_[pending.replica.value].admin_removed = true;
    std::erase(members, pending.replica);
  }
  std::sort(members.begin(), members.end());
  pending.change.members = std::move(members);
  change_in_flight_ = std::move(pending);
  send_signed_change();
}

void Simulator::send_signed_change() {
  ChangeInFlight& pending = *change_in_flight_;
  // The boundary: past the core's margin (a decision latency, n·ε, Δ and a slot) after the
  // change is ordered, which can take the client link's delay and a relay timeout, rounded up
  // to the checkpoint grid.
  const uint64_t d = run_profile_.delta_us + run_profile_.epsilon_us;
  const uint64_t latency_us = byzantine::Options{}.slot_us + (run_profile_.t + 2) * d;
  // Replica clocks read wall time: the simulated time since the epoch they start from.
  const uint64_t order_by_us =
      (kWallEpochNs + now_ns_) / kUs + profile_.client_delay_cap_ns / kUs + 4 * latency_us;
  const uint64_t earliest_us = order_by_us + latency_us +
                               replicas_.size() * run_profile_.epsilon_us + run_profile_.delta_us +
                               random_.between(0, 300'000);
  const uint64_t grid = run_profile_.checkpoint_interval_us;
  pending.change.epoch = adopted_.epoch + 1;
  pending.change.effective_us = (earliest_us / grid + 1) * grid;
  pending.request = ClientRequest{client_id_of(kAdminPrincipal, ++administrator_session_),
                                  Sequence{1},
                                  Sequence{1},
                                  encode_configuration_change(pending.change),
                                  {}};
  crypto::sign_request(*administrator_signer_, pending.request);
  ++pending.signings;
  std::string members;
  for (ReplicaId m : pending.change.members)
    members += " r" + std::to_string(m.value);
  trace("administrator: epoch " + std::to_string(pending.change.epoch) + ", members" + members +
        " from " + std::to_string(pending.change.effective_us) + " us");
  // Counted once per change, however often it is signed again.
  if (pending.signings == 1) {
    count_fault(
        pending.kind == MembershipChange::kAdd ? FaultKind::kSpareJoin : FaultKind::kOperatorRemove,
        "the administrator signs epoch " + std::to_string(pending.change.epoch));
  }
  for (uint32_t to = 0; to < replicas_.size(); ++to) {
    schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns),
             RequestDelivery{kAdministratorClient, ReplicaId{to}, pending.request});
  }
  schedule(now_ns_ + profile_.client_retry_ns, AdminDue{pending.replica, pending.kind});
  // The operator starts a late spare's machine after sending the change, but early enough that
  // a checkpoint boundary's votes reach it before the change's boundary: it learns of the change
  // from them and loads the state there, which the old members vouch for (DESIGN §11.9). Later
  // than that, it would need t'+1 caught-up members of the new configuration, and the faulty
  // ones with the spares still loading can be more than t'.
  const uint64_t boundary_ns = pending.change.effective_us * kUs - kWallEpochNs;
  const uint64_t lead_ns = 2 * run_profile_.checkpoint_interval_us * kUs +
                           8 * (run_profile_.delta_us + run_profile_.epsilon_us) * kUs;
  const uint64_t latest_ns = boundary_ns > now_ns_ + lead_ns ? boundary_ns - lead_ns : now_ns_ + 1;
  if (pending.kind == MembershipChange::kAdd && replicas_[pending.replica.value].spare_idle) {
    schedule(random_.between(now_ns_ + 1, std::max(now_ns_ + 1, latest_ns)),
             SpareStart{pending.replica});
  }
}

void Simulator::start_spare(ReplicaId r) {
  ReplicaSlot& slot = replicas_[r.value];
  if (!slot.spare_idle) return;
  slot.spare_idle = false;
  trace("r" + std::to_string(r.value) +
        " (a spare) starts, after the change that adds it was sent");
  launch_byzantine_process(r, slot.byzantine_options);
  if (slot.catching_up) slot.catch_up_started_ns = std::max(slot.catch_up_started_ns, now_ns_);
}

void Simulator::track_configurations(ReplicaId r) {
  // What the honest replicas adopted (they all adopt the same, at a change's decision): a spare
  // added must then load a state, a member removed halts at the boundary.
  if (!reconfiguration() || faulty(r) || !replicas_[r.value].replica->serving()) return;
  const Schedule& schedule = replicas_[r.value].replica->byzantine_core()->schedule();
  for (const Configuration& next : schedule.configurations()) {
    if (next.epoch <= adopted_.epoch) continue;
    if (next.epoch != adopted_.epoch + 1) {
      fail("membership: r" + std::to_string(r.value) + " adopted epoch " +
           std::to_string(next.epoch) + " after " + std::to_string(adopted_.epoch));
      return;
    }
    if (!change_in_flight_ || next.members != change_in_flight_->change.members ||
        next.from_us != change_in_flight_->change.effective_us) {
      fail("membership: r" + std::to_string(r.value) + " adopted epoch " +
           std::to_string(next.epoch) + ", which is not the change the administrator signed");
      return;
    }
    for (ReplicaId m : next.members) {
      ReplicaSlot& slot = replicas_[m.value];
      if (adopted_.contains(m) || slot.catching_up) continue;
      // The checkpoint at the boundary is the first it may load.
      slot.catching_up = true;
      slot.catch_up_started_ns = std::max(now_ns_, next.from_us * kUs - kWallEpochNs);
    }
    trace("r" + std::to_string(r.value) + " adopted epoch " + std::to_string(next.epoch) +
          " (t = " + std::to_string(next.t) + ")");
    hash_.add(0xc0000000 + next.epoch);
    adopted_ = next;
  }
}

void Simulator::record_checkpoint_votes(ReplicaId r,
                                        const std::vector<Replica::PeerMessage>& to_peers) {
  // An honest replica's vote (as its core signed it, before any network): the digest of its
  // snapshot at the boundary. Honest replicas executed the same prefix there, so every honest
  // vote for a boundary names one digest, and that is what a joiner must load.
  uint64_t last_boundary = 0;
  for (const Replica::PeerMessage& send : to_peers) {
    const auto* vote = std::get_if<CheckpointVote>(&send.message);
    if (vote == nullptr || vote->boundary_us == last_boundary) continue;
    last_boundary = vote->boundary_us;
    if (vote->replica != r) {
      fail("r" + std::to_string(r.value) + " sent a checkpoint vote signed as r" +
           std::to_string(vote->replica.value));
      return;
    }
    auto [known, inserted] =
        honest_checkpoints_.emplace(vote->boundary_us, std::pair{vote->digest, r.value});
    trace("r" + std::to_string(r.value) + " votes for its snapshot at boundary " +
          std::to_string(vote->boundary_us));
    if (!inserted && known->second.first != vote->digest) {
      fail("checkpoint agreement: honest r" + std::to_string(known->second.second) + " and r" +
           std::to_string(r.value) + " signed different snapshot digests for boundary " +
           std::to_string(vote->boundary_us) + " (their states differ there)" +
           (replicas_[r.value].restarts > 0
                ? "; r" + std::to_string(r.value) + " restarted " +
                      std::to_string(replicas_[r.value].restarts) + " times"
                : ""));
      return;
    }
  }
}

void Simulator::on_checkpoint_loaded(ReplicaId r, const StateTransfer& transfer) {
  // What a joiner loaded must be the honest state at its boundary b: the snapshot's digest is
  // the one honest replicas signed for b (the core checks t+1 votes; this checks that they
  // named the honest state, whoever signed them). The honest state at b is the agreed sequence's
  // prefix of the instances stamped below b, so the joiner continues the agreed sequence from
  // there (agreement, exactly-once and replies as a continuation); its digest at its next flush
  // is kept for anyone seen at that position, and at the end all digests must be equal.
  ReplicaSlot& slot = replicas_[r.value];
  ++state_transfers_loaded_;
  ++slot.state_loads;
  // A vote names the order's running hash there with the snapshot's digest (the transfer carries
  // the hash; a whole-cluster recovery's transfer is a vouched base plus batches after it, and the
  // base is what must be honest).
  // A catch-up's transfer also carries the membership schedule the votes vouch for (§11.9).
  std::optional<byzantine::BaseAndBatches> carried;
  std::optional<Schedule> loaded_schedule;
  if (auto parts = byzantine::decode_catch_up_state(transfer.protocol_state)) {
    carried = byzantine::decode_base_and_batches(parts->first);
    loaded_schedule = decode_schedule(parts->second, slot.byzantine_options.members, *verifier_,
                                      slot.byzantine_options.replica_count);
  } else {
    carried = byzantine::decode_base_and_batches(transfer.protocol_state);
    loaded_schedule = Schedule(slot.byzantine_options.members);  // a recovery's base: no change
  }
  if (!carried || !loaded_schedule) {
    fail("catch-up: r" + std::to_string(r.value) + " loaded an undecodable state from r" +
         std::to_string(transfer.sender.value));
    return;
  }
  const uint64_t boundary = carried->base.position_us;
  const Digest loaded = crypto::position_digest(
      carried->base.order_hash,
      byzantine::vouched_snapshot_digest(transfer.service_snapshot, *loaded_schedule));
  auto honest = honest_checkpoints_.find(boundary);
  // Base 0 is the empty state (the core checks it against its own genesis): nothing to vouch.
  if (boundary == 0) {
    // nothing to compare with an honest vote
  } else if (honest == honest_checkpoints_.end()) {
    fail("catch-up: r" + std::to_string(r.value) + " loaded r" +
         std::to_string(transfer.sender.value) + "'s snapshot for boundary " +
         std::to_string(boundary) + ", for which no honest replica signed a digest");
    return;
  } else if (honest->second.first != loaded) {
    fail("catch-up: r" + std::to_string(r.value) + " loaded a forged snapshot from r" +
         std::to_string(transfer.sender.value) + " at boundary " + std::to_string(boundary) +
         ": its digest is not the one honest r" + std::to_string(honest->second.second) +
         " signed for that boundary");
    return;
  }
  const auto below = std::partition_point(
      reference_.begin(), reference_.end(),
      [&](const Replica::Executed& e) { return e.timestamp.clock < boundary; });
  const auto position = static_cast<uint64_t>(below - reference_.begin());
  try {
    Service scratch(std::make_unique<kv::KvMachine>());
    scratch.restore(transfer.service_snapshot);
    const uint64_t digest = scratch.digest();
    auto [seen, inserted] = prefix_digests_.emplace(
        position, std::pair{digest, "r" + std::to_string(r.value) + " loading boundary " +
                                        std::to_string(boundary)});
    if (!inserted && seen->second.first != digest) {
      fail("state digest: r" + std::to_string(r.value) + " loaded a snapshot whose digest at " +
           "execution #" + std::to_string(position) + " differs from " + seen->second.second +
           "'s there");
      return;
    }
  } catch (const std::exception& error) {
    fail("catch-up: r" + std::to_string(r.value) +
         " loaded a snapshot that does not decode: " + error.what());
    return;
  }
  slot.executed_position = position;
  hold_agreed_prefix(slot, position);
  slot.loaded_digest_due = true;
  slot.spare_joining = false;  // a member from now on: a unit of t like any other
  on_recovered(r, "");
  hash_.add(0xb1000000 + position);
  trace("r" + std::to_string(r.value) + " loads r" + std::to_string(transfer.sender.value) +
        "'s snapshot at boundary " + std::to_string(boundary) + " (execution #" +
        std::to_string(position) + " of the agreed sequence), " +
        time_text(now_ns_ - slot.catch_up_started_ns) + "s after its restart");
  if (phase_ != Phase::kFaults) return;
  if (rolling_target_ == r) {
    rolling_target_.reset();
    if (++rolling_next_ < rolling_order_.size()) {
      schedule(now_ns_ + random_.between(1 * kMs, run_profile_.checkpoint_interval_us * kUs),
               FaultDue{FaultKind::kCatchUpRestart, rolling_order_[rolling_next_], true});
    }
  }
  // Soon again: before its next boundary, while it serves from the state it just loaded.
  if (random_.chance(profile_.restart_again_per_million)) {
    schedule(now_ns_ + random_.between(1 * kMs, run_profile_.checkpoint_interval_us * kUs),
             FaultDue{FaultKind::kCatchUpRestart, r, false});
  }
}

void Simulator::forge_for_joiner(ReplicaMessage& message) {
  // The planted load_forged_state: as if t+1 replicas vouched for a forged state.
  if (auto* vote = std::get_if<CheckpointVote>(&message)) {
    if (vote->replica.value >= replica_signers_.size()) return;
    vote->digest = forged_position_digest(vote->boundary_us);
    vote->signature = replica_signers_[vote->replica.value]->sign(
        crypto::checkpoint_vote_signing_bytes(vote->replica, vote->boundary_us, vote->digest));
  } else if (auto* transfer = std::get_if<StateTransfer>(&message)) {
    // The order hash the votes named travels with the snapshot (the joiner checks both).
    transfer->protocol_state = forged_protocol_state(transfer->view.value);
    transfer->service_snapshot = forged_snapshot(transfer->view.value);
  }
}

std::optional<std::string> Simulator::catch_up_overdue(uint64_t by_ns) const {
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    const ReplicaSlot& slot = replicas_[i];
    if (!live(ReplicaId{i}) || !slot.catching_up) continue;
    // A transfer in pieces takes a round trip (and a flush at each end) per piece.
    const uint64_t d_ns = (run_profile_.delta_us + run_profile_.epsilon_us) * kUs;
    const uint64_t margin_ns =
        catch_up_margin_ns_ + slot.transfer_pieces * 2 * (d_ns + kFlushDelayMaxNs);
    if (slot.catch_up_started_ns + margin_ns > by_ns) continue;
    return "r" + std::to_string(i) + ", restarted at " + time_text(slot.catch_up_started_ns) +
           "s, has not loaded a checkpoint within " + time_text(margin_ns) +
           "s (2 intervals + 3 decision latencies + 4 D + a tick + 10 ms, + 2 (D + a flush) for "
           "each of " +
           std::to_string(slot.transfer_pieces) + " pieces; " +
           std::to_string(slot.replica->byzantine_core()->votes_held()) + " votes held, " +
           std::to_string(slot.replica->rejected_state_transfers()) + " snapshots refused)";
  }
  return std::nullopt;
}

// ---- clients ----------------------------------------------------------------------------------

void Simulator::start_operation(size_t c, size_t lane) {
  ClientSlot& client = clients_[c];
  if (client.crashed || client.lanes[lane] || phase_ != Phase::kFaults) return;
  const std::string key = "k" + std::to_string(random_.below(run_profile_.keys));
  kv::Command command;
  command.key = key;
  check::OpKind kind = check::OpKind::kGet;
  const uint64_t roll = random_.below(10);
  if (roll < 4) {
    command.op = kv::Op::kGet;
  } else {
    // Unique values make the history cheap to check and every read attributable to one write.
    command.value = "v" + std::to_string(++writes_) + ";";
    command.op = roll < 7 ? kv::Op::kPut : kv::Op::kAppend;
    kind = roll < 7 ? check::OpKind::kPut : check::OpKind::kAppend;
  }
  const Sequence sequence = client.session->submit(now_ns_, kv::encode_command(command));
  const uint64_t id =
      history_.invoke(c * kPipelineDepthMax + lane, kind, key, command.value, "", now_ns_);
  client.lanes[lane] = Operation{sequence, id, kind};
  client.last_sequence = sequence;
  history_ids_.emplace(RequestKey{client.session->id(), sequence}, id);
  ++ops_submitted_;
  hash_.add(sequence.value);
  if (tracing_) {
    trace("client" + std::to_string(c) + " starts " + key_text({client.session->id(), sequence}) +
          ": " + describe_command(kv::encode_command(command)));
  }
  drain_client(c);
}

void Simulator::drain_client(size_t c) {
  ClientSlot& client = clients_[c];
  std::vector<ClientSession::Send> sends = client.session->take_sends();
  if (client.crash_armed && !sends.empty() && phase_ == Phase::kFaults) {
    crash_client_mid_broadcast(c, std::move(sends));
    return;
  }
  for (const ClientSession::Send& send : sends)
    send_request(c, send);

  for (ClientSession::Completion& completion : client.session->take_completions()) {
    auto lane = std::find_if(client.lanes.begin(), client.lanes.end(), [&](const auto& op) {
      return op && op->sequence == completion.sequence;
    });
    if (lane == client.lanes.end()) continue;
    const Operation op = **lane;
    lane->reset();
    if (completion.status != ClientSession::Status::kOk) {
      // The deadline (an hour) is far beyond any run's length, so this means the session's
      // deadline logic misfired; liveness itself is judged by the heal-phase bound.
      fail("client" + std::to_string(c) + "'s request " +
           key_text({client.session->id(), op.sequence}) + " timed out before its deadline");
      return;
    }
    if (byzantine_mode()) {
      check_accepted(c, {client.session->id(), op.sequence}, completion.result);
      if (violation_) return;
    }
    auto result = kv::decode_result(completion.result);
    if (!result || result->code == kv::ResultCode::kError) {
      fail("client" + std::to_string(c) + " got a malformed or error result " +
           describe_result(completion.result));
      return;
    }
    std::optional<std::string> output;
    if (op.kind == check::OpKind::kGet) {
      output = result->code == kv::ResultCode::kNotFound ? std::string() : result->value;
    }
    history_.complete_ok(op.history_id, std::move(output), now_ns_);
    ++ops_completed_;
    if (tracing_) {
      trace("client" + std::to_string(c) + " completes " +
            key_text({client.session->id(), op.sequence}) + " = " +
            describe_result(completion.result) + " from r" +
            std::to_string(completion.replied_by.value));
    }
    if (phase_ == Phase::kFaults) {
      schedule(now_ns_ + think_time(),
               ClientWake{c, static_cast<size_t>(lane - client.lanes.begin())});
    } else {
      maybe_quiesce();
    }
  }
}

void Simulator::send_request(size_t c, const ClientSession::Send& send) {
  ClientSlot& client = clients_[c];
  if (now_ns_ < client.partitioned_until_ns[send.to.value]) return;
  if (!byzantine_clients_.empty()) {
    // What a Byzantine client on the network may record and replay later.
    sniffed_.push_back(send.request);
    if (sniffed_.size() > kSniffedRequestsMax) sniffed_.pop_front();
  }
  if (phase_ == Phase::kFaults && random_.chance(profile_.client_loss_per_million)) {
    count_fault(FaultKind::kClientLoss,
                "request client" + std::to_string(c) + "->r" + std::to_string(send.to.value));
    return;
  }
  if (phase_ == Phase::kFaults && random_.chance(profile_.client_duplicate_per_million)) {
    count_fault(FaultKind::kClientDuplicate,
                "request client" + std::to_string(c) + "->r" + std::to_string(send.to.value));
    schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns),
             RequestDelivery{c, send.to, send.request});
  }
  schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns),
           RequestDelivery{c, send.to, send.request});
}

void Simulator::crash_client_mid_broadcast(size_t c, std::vector<ClientSession::Send> sends) {
  ClientSlot& client = clients_[c];
  // A proper, non-empty subset of the broadcast leaves before the crash (a client that sent to
  // nobody or to everybody is not crashing *mid*-broadcast).
  size_t keep = sends.size() <= 1 ? sends.size() : random_.between(1, sends.size() - 1);
  for (size_t i = sends.size(); i > 1; --i)
    std::swap(sends[i - 1], sends[random_.below(i)]);
  sends.resize(keep);
  std::string receivers;
  for (const ClientSession::Send& send : sends) {
    receivers += " r" + std::to_string(send.to.value);
    send_request(c, send);
  }
  client.crashed = true;
  client.crash_armed = false;
  for (const std::optional<Operation>& op : client.lanes) {
    if (!op) continue;
    ++ops_unknown_;  // stays ok: null in the recorded history
    crashed_ops_.push_back(
        CrashedOperation{op->history_id, {client.session->id(), op->sequence}, op->kind});
  }
  count_fault(FaultKind::kClientCrash,
              "client" + std::to_string(c) + " after sending to" + receivers);
  // A fresh client takes the crashed one's place, so the load does not fade with crashes.
  const uint32_t principal = client.principal;
  add_client(byzantine_mode() ? std::optional<uint32_t>(principal) : std::nullopt);
}

void Simulator::byzantine_client_act(size_t index) {
  if (phase_ != Phase::kFaults) return;  // Byzantine clients stop with the faults
  schedule(now_ns_ + random_.between(kMs, 60 * kMs), ByzantineClientAct{index});
  ByzantineClientSlot& client = byzantine_clients_[index];
  const uint32_t n = run_profile_.replicas;
  auto command = [&](Sequence sequence, uint64_t variant) {
    kv::Command cmd;
    cmd.key = "byz-k" + std::to_string(random_.below(3));
    const uint64_t roll = random_.below(3);
    cmd.op = roll == 0 ? kv::Op::kGet : roll == 1 ? kv::Op::kPut : kv::Op::kAppend;
    if (cmd.op != kv::Op::kGet) {
      cmd.value = "b" + std::to_string(index) + "." + std::to_string(sequence.value) + "." +
                  std::to_string(variant) + ";";
    }
    return kv::encode_command(cmd);
  };
  auto fresh = [&](uint64_t variant) {
    ClientRequest request;
    request.client = client.id;
    request.sequence = Sequence{client.next_sequence};
    request.acked_below = Sequence{random_.between(
        client.next_sequence > 3 ? client.next_sequence - 3 : 1, client.next_sequence)};
    request.command = command(request.sequence, variant);
    crypto::sign_request(*client.signer, request);
    return request;
  };
  auto remember = [&](const ClientRequest& request) {
    client.sent.push_back(request);
    if (client.sent.size() > 32) client.sent.pop_front();
  };
  std::vector<ClientLie> lies;
  for (size_t k = 0; k < kClientLieCount; ++k) {
    if (client.lies[k]) lies.push_back(static_cast<ClientLie>(k));
  }
  if (random_.chance(300'000)) {
    // An ordinary request now and then, so that the lies have something to refer to.
    const ClientRequest request = fresh(0);
    ++client.next_sequence;
    remember(request);
    for (uint32_t r = 0; r < n; ++r)
      send_byzantine_request(index, ReplicaId{r}, request);
    return;
  }
  const ClientLie lie = lies[random_.below(lies.size())];
  std::string detail =
      "byzantine client" + std::to_string(index) + " " + std::string(client_lie_name(lie));
  switch (lie) {
    case ClientLie::kEquivocate: {
      // Two different commands, both validly signed, for one sequence number.
      const ClientRequest first = fresh(1);
      const ClientRequest second = fresh(2);
      ++client.next_sequence;
      remember(first);
      remember(second);
      for (uint32_t r = 0; r < n; ++r)
        send_byzantine_request(index, ReplicaId{r}, random_.chance(500'000) ? first : second);
      detail += " " + key_text({first.client, first.sequence});
      break;
    }
    case ClientLie::kBadSignature: {
      ClientRequest request = fresh(0);
      ++client.next_sequence;
      const uint64_t how = random_.below(3);
      if (how == 0 || request.signature.empty()) {
        request.signature.assign(request.signature.size(), 0);
      } else if (how == 1) {
        request.signature[random_.below(request.signature.size())] ^= 0x40;
      } else {
        request.signature.resize(random_.below(request.signature.size()));
      }
      for (uint32_t r = 0; r < n; ++r) {
        if (random_.chance(700'000)) send_byzantine_request(index, ReplicaId{r}, request);
      }
      break;
    }
    case ClientLie::kImpersonate: {
      // An honest client's id and (about) its next sequence number, writing an honest key with a
      // value nobody wrote: if a replica ever took it, the honest history would show it.
      if (clients_.empty()) return;
      const ClientSlot& victim = clients_[random_.below(clients_.size())];
      ClientRequest request;
      request.client = victim.session->id();
      request.sequence = Sequence{victim.last_sequence.value + random_.between(0, 2)};
      if (request.sequence.value == 0) request.sequence = Sequence{1};
      request.acked_below = Sequence{1};
      kv::Command cmd;
      cmd.op = kv::Op::kPut;
      cmd.key = "k" + std::to_string(random_.below(run_profile_.keys));
      cmd.value = "forged-by-byzantine-client" + std::to_string(index) + ";";
      request.command = kv::encode_command(cmd);
      crypto::sign_request(*client.signer, request);  // its own key: the wrong one
      for (uint32_t r = 0; r < n; ++r)
        send_byzantine_request(index, ReplicaId{r}, request);
      detail += " as " + key_text({request.client, request.sequence});
      break;
    }
    case ClientLie::kReplay: {
      // An old request again: its own, or an honest client's seen on the wire.
      const bool honest = !sniffed_.empty() && (client.sent.empty() || random_.chance(500'000));
      if (!honest && client.sent.empty()) return;
      const ClientRequest request = honest ? sniffed_[random_.below(sniffed_.size())]
                                           : client.sent[random_.below(client.sent.size())];
      for (uint32_t r = 0; r < n; ++r) {
        if (random_.chance(600'000)) send_byzantine_request(index, ReplicaId{r}, request);
      }
      detail += " " + key_text({request.client, request.sequence});
      break;
    }
  }
  count_fault(FaultKind::kByzantineClient, detail);
}

void Simulator::send_byzantine_request(size_t index, ReplicaId to, const ClientRequest& request) {
  if (phase_ == Phase::kFaults && random_.chance(profile_.client_loss_per_million)) return;
  schedule(now_ns_ + network_delay(profile_.client_delay_cap_ns),
           RequestDelivery{kByzantineClientBase + index, to, request});
}

// ---- faults -----------------------------------------------------------------------------------

void Simulator::inject_fault() {
  // Durable kinds have weight 0 in other runs, which then draw exactly as before they existed.
  const std::array<std::pair<FaultKind, uint32_t>, 12> weights = {{
      {FaultKind::kReplicaPause, profile_.weight_pause},
      {FaultKind::kClientPartition, profile_.weight_partition},
      {FaultKind::kClientCrash, profile_.weight_client_crash},
      {FaultKind::kClockJump, profile_.weight_clock_jump},
      {FaultKind::kReplicaRestart, profile_.weight_restart},
      {FaultKind::kClusterCrash, profile_.weight_cluster_crash},
      {FaultKind::kDiskCorruption, profile_.weight_corruption},
      {FaultKind::kOperatorRemove, profile_.weight_operator_remove},
      {FaultKind::kRejoin, profile_.weight_rejoin},
      {FaultKind::kWipeRejoin, profile_.weight_wipe_rejoin},
      {FaultKind::kSpareJoin, profile_.weight_spare_join},
      {FaultKind::kCatchUpRestart, profile_.weight_catch_up},
  }};
  uint64_t total = 0;
  for (const auto& [kind, weight] : weights)
    total += weight;
  uint64_t roll = random_.below(total);
  FaultKind chosen = FaultKind::kClientPartition;
  for (const auto& [kind, weight] : weights) {
    if (roll < weight) {
      chosen = kind;
      break;
    }
    roll -= weight;
  }
  // Infeasible right now (budget spent, everyone paused): a partition is always possible.
  if (!try_fault(chosen)) try_fault(FaultKind::kClientPartition);
}

bool Simulator::membership_changing() const {
  if (change_in_flight_) return true;
  for (const ReplicaSlot& slot : replicas_) {
    if ((slot.catching_up && slot.spare_joining) ||
        (slot.admin_removed && !slot.replica->halted())) {
      return true;
    }
  }
  return false;
}

bool Simulator::try_fault(FaultKind kind, std::optional<ReplicaId> target) {
  const uint32_t n = run_profile_.replicas;
  if (reconfiguration() && byzantine_mode() && membership_changing() &&
      (kind == FaultKind::kReplicaCrash || kind == FaultKind::kCatchUpRestart)) {
    return false;
  }
  std::vector<ReplicaId> candidates;
  for (uint32_t i = 0; i < n; ++i) {
    const ReplicaSlot& slot = replicas_[i];
    // A joiner still loading is left alone (it has no state to lose; its unit is spent).
    if (slot.crashed || slot.replica->halted() || slot.budgeted || !slot.replica->serving() ||
        slot.admin_removed) {
      continue;
    }
    candidates.push_back(ReplicaId{i});
  }
  // While a whole cluster is down and coming back, no replica fault of any other kind.
  if ((cluster_down_ > 0 || cluster_recovering_ > 0) && kind != FaultKind::kClientPartition &&
      kind != FaultKind::kClientCrash && kind != FaultKind::kClockJump) {
    return false;
  }
  if (durable() && !byzantine_mode()) {
    // A replica recovered from its disk suspects no one until it has heard from every member of
    // its recovered view (failstop/core.cc, tick; a member that never comes back needs an
    // operator, DESIGN §10). So the protocol is live only if failures and restarts do not
    // overlap: a restart starts once every failed replica has been removed, and nothing fails
    // for good while a restarted replica may still be waiting for its peers.
    const bool restart = kind == FaultKind::kReplicaRestart || kind == FaultKind::kDiskCorruption ||
                         kind == FaultKind::kReplicaLongRestart;
    const bool lasting = kind == FaultKind::kReplicaCrash || kind == FaultKind::kReplicaLongPause;
    if ((restart || lasting) && restart_window_open()) return false;
    if (restart && !membership_settled()) return false;
  }
  switch (kind) {
    case FaultKind::kReplicaCrash: {
      // Crashed + removed never exceeds t: a replica's crash, or its removal after a long pause,
      // each spend one unit of the budget, for the whole run (restart is not modelled yet).
      if (budget_used_ >= run_profile_.t || candidates.empty()) return false;
      const ReplicaId r = candidates[random_.below(candidates.size())];
      ++budget_used_;
      replicas_[r.value].budgeted = true;
      replicas_[r.value].crashed_for_good = true;
      count_fault(kind, "r" + std::to_string(r.value));
      crash(r);
      return true;
    }
    case FaultKind::kReplicaPause:
    case FaultKind::kReplicaLongPause: {
      const bool long_pause = kind == FaultKind::kReplicaLongPause;
      if (long_pause && budget_used_ >= run_profile_.t) return false;
      std::erase_if(candidates, [&](ReplicaId r) {
        const ReplicaSlot& slot = replicas_[r.value];
        return slot.paused || now_ns_ < slot.resumed_ns + kPauseGapNs;
      });
      if (candidates.empty()) return false;
      const ReplicaId r = candidates[random_.below(candidates.size())];
      ReplicaSlot& slot = replicas_[r.value];
      uint64_t duration = random_.between(1 * kMs, kShortPauseMaxNs);
      if (long_pause) {
        // Often right around the failure timeout: the replica resumes while the others are
        // in the middle of removing it, which is where removal logic breaks.
        duration = random_.chance(400'000)
                       ? random_.between(kFailureTimeoutNs * 4 / 5, kFailureTimeoutNs * 6 / 5)
                       : random_.between(kLongPauseMinNs, kLongPauseMaxNs);
      }
      if (long_pause) {
        ++budget_used_;
        slot.budgeted = true;
      }
      slot.paused = true;
      ++slot.pause_number;
      schedule(now_ns_ + duration, PauseEnd{r, slot.pause_number});
      count_fault(kind, "r" + std::to_string(r.value) + " for " + time_text(duration) + "s");
      return true;
    }
    case FaultKind::kReplicaRestart:
    case FaultKind::kDiskCorruption: {
      // A crash and a restart before the failure timeout: the replica carries on as the same
      // member. It spends a unit of t while it is down (and for good if it refuses to recover
      // from a damaged disk).
      if (!durable() || budget_used_ >= run_profile_.t) return false;
      std::erase_if(candidates, [&](ReplicaId r) {
        const ReplicaSlot& slot = replicas_[r.value];
        return slot.paused || now_ns_ < slot.resumed_ns + kPauseGapNs;
      });
      if (candidates.empty()) return false;
      const ReplicaId r = candidates[random_.below(candidates.size())];
      ReplicaSlot& slot = replicas_[r.value];
      // Failstop: back before the failure timeout. Byzantine: any time (it is a unit of t until
      // it has caught up), as long as a catch-up restart's.
      const uint64_t downtime = random_.between(
          1 * kMs, byzantine_mode() ? profile_.catch_up_downtime_max_ns : kShortPauseMaxNs);
      ++budget_used_;
      slot.budgeted = true;
      if (kind == FaultKind::kReplicaRestart) {
        count_fault(kind, "r" + std::to_string(r.value) + " down for " + time_text(downtime) + "s");
      }
      crash_for_restart(r, downtime, true);
      if (kind == FaultKind::kDiskCorruption) {
        slot.restart_after_corruption = corrupt_disk(r);
        if (!slot.restart_after_corruption) {
          count_fault(FaultKind::kReplicaRestart, "r" + std::to_string(r.value) + " down for " +
                                                      time_text(downtime) +
                                                      "s (nothing synced to damage)");
        }
      }
      return true;
    }
    case FaultKind::kReplicaLongRestart: {
      // Down past the failure timeout: the others remove it; restarted, it must halt when it
      // hears so. A unit of t for the rest of the run.
      if (!durable() || budget_used_ >= run_profile_.t || candidates.empty()) return false;
      const ReplicaId r = candidates[random_.below(candidates.size())];
      const uint64_t downtime =
          random_.chance(400'000)
              ? random_.between(kFailureTimeoutNs * 4 / 5, kFailureTimeoutNs * 6 / 5)
              : random_.between(kLongPauseMinNs, kLongPauseMaxNs);
      ++budget_used_;
      replicas_[r.value].budgeted = true;
      count_fault(kind, "r" + std::to_string(r.value) + " down for " + time_text(downtime) + "s");
      crash_for_restart(r, downtime, false);
      return true;
    }
    case FaultKind::kClusterCrash:
      return durable() && cluster_crash();
    case FaultKind::kCatchUpRestart:
      return byzantine_restarts() && catch_up_restart(std::move(candidates), target);
    case FaultKind::kOperatorRemove:
    case FaultKind::kRejoin:
    case FaultKind::kWipeRejoin:
    case FaultKind::kSpareJoin:
      return reconfiguration() && try_reconfiguration_fault(kind, std::move(candidates));
    case FaultKind::kClientPartition: {
      std::vector<size_t> live;
      for (size_t c = 0; c < clients_.size(); ++c) {
        if (!clients_[c].crashed) live.push_back(c);
      }
      if (live.empty()) return false;
      const size_t c = live[random_.below(live.size())];
      const uint32_t r = static_cast<uint32_t>(random_.below(n));
      const uint64_t duration = random_.long_tailed(20 * kMs, 200 * kMs, 300'000, 1500 * kMs);
      clients_[c].partitioned_until_ns[r] =
          std::max(clients_[c].partitioned_until_ns[r], now_ns_ + duration);
      count_fault(kind, "client" + std::to_string(c) + "<->r" + std::to_string(r) + " for " +
                            time_text(duration) + "s");
      return true;
    }
    case FaultKind::kClientCrash: {
      std::vector<size_t> live;
      for (size_t c = 0; c < clients_.size(); ++c) {
        if (!clients_[c].crashed && !clients_[c].crash_armed) live.push_back(c);
      }
      // n = 1 has no proper subset to send to; a crash there is just a crash.
      if (live.empty() || n < 2) return false;
      // Counted when it happens: at the client's next broadcast (a new op or a retry).
      clients_[live[random_.below(live.size())]].crash_armed = true;
      return true;
    }
    case FaultKind::kClockJump: {
      if (candidates.empty()) return false;
      const ReplicaId r = candidates[random_.below(candidates.size())];
      const auto magnitude = static_cast<int64_t>(random_.between(kSec, kClockJumpMaxNs));
      // A step to a new offset (not a sum of steps), so the wall clock stays within
      // kClockJumpMaxNs of true time and far from zero.
      int64_t& jump = replicas_[r.value].clock.jump_ns;
      jump = random_.chance(500'000) ? magnitude : -magnitude;
      count_fault(kind, "r" + std::to_string(r.value) + " wall clock now off by " +
                            std::to_string(jump / static_cast<int64_t>(kMs)) + "ms");
      return true;
    }
    default:
      return false;
  }
}

// ---- phases -----------------------------------------------------------------------------------

void Simulator::maybe_end_fault_phase() {
  const bool done = ops_submitted_ >= options_.ops && episodes_ >= options_.faults_min &&
                    now_ns_ >= run_profile_.fault_phase_ns;
  // A cluster that stops making progress would keep the phase open forever; heal it anyway and
  // let the liveness check say what is stuck.
  const bool overdue = now_ns_ >= kFaultPhaseMaxNs;
  if (done || overdue) heal();
}

void Simulator::heal() {
  phase_ = Phase::kHeal;
  heal_ns_ = now_ns_;
  trace("HEAL: no new faults from here; pauses end, partitions heal");
  for (ClientSlot& client : clients_) {
    client.crash_armed = false;
    std::fill(client.partitioned_until_ns.begin(), client.partitioned_until_ns.end(), 0);
  }
  for (uint32_t i = 0; i < replicas_.size() && !violation_; ++i) {
    if (replicas_[i].paused && !replicas_[i].crashed) resume(ReplicaId{i});
  }
  schedule(now_ns_ + options_.liveness_bound_ns, LivenessDeadline{});
  maybe_quiesce();
}

void Simulator::maybe_quiesce() {
  if (phase_ != Phase::kHeal) return;
  for (const ClientSlot& client : clients_) {
    if (client.crashed) continue;
    for (const std::optional<Operation>& op : client.lanes) {
      if (op) return;
    }
  }
  phase_ = Phase::kQuiesce;
  quiesce_ns_ = now_ns_;
  trace("QUIESCE: every live client's operation completed");
  // The end of the heal phase: a replica restarted early enough must serve again by now.
  if (auto overdue = catch_up_overdue(now_ns_)) {
    fail("catch-up liveness at the end of the heal phase: " + *overdue);
    return;
  }
  schedule(now_ns_ + kSettleCheckIntervalNs, SettleCheck{});
}

std::optional<std::string> Simulator::membership_problem() const {
  // One membership: every live replica installed the same view, made of exactly the live
  // replicas. So crashed replicas were removed, and a replica that was removed (after a long
  // pause) halted instead of going on in a view of its own.
  std::vector<ReplicaId> live_replicas;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    if (live(ReplicaId{i})) live_replicas.push_back(ReplicaId{i});
  }
  if (live_replicas.empty()) return "no live replica (at most t of the t+1 may fail)";
  const OrderingCore& first = replicas_[live_replicas.front().value].replica->core();
  for (ReplicaId r : live_replicas) {
    const OrderingCore& core = replicas_[r.value].replica->core();
    if (core.view() != first.view() || core.members() != live_replicas) {
      std::string members;
      for (ReplicaId m : core.members())
        members += " r" + std::to_string(m.value);
      return "r" + std::to_string(r.value) + " is in view " + std::to_string(core.view().value) +
             " with members" + members + ", r" + std::to_string(live_replicas.front().value) +
             " in view " + std::to_string(first.view().value) + ", and " +
             std::to_string(live_replicas.size()) + " replicas are live";
    }
  }
  return std::nullopt;
}

void Simulator::settle_check() {
  // Converged: every live replica has executed the whole agreed sequence and holds nothing more.
  bool converged = now_ns_ >= quiesce_ns_ + kSettleMinNs;
  for (uint32_t i = 0; i < replicas_.size() && converged; ++i) {
    if (!serving(ReplicaId{i})) continue;
    const ReplicaSlot& slot = replicas_[i];
    if (slot.executed_position != reference_.size() ||
        slot.replica->core().pending_entries() != 0) {
      converged = false;
    }
  }
  // The byzantine mode has no membership changes: crashed replicas stay members.
  const std::optional<std::string> membership =
      byzantine_mode() ? std::nullopt : membership_problem();
  converged = converged && !membership;
  // A restarted byzantine replica still catching up: boundaries go on without clients, so it
  // must load one; the run waits for it.
  std::optional<uint32_t> catching_up;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    if (live(ReplicaId{i}) && replicas_[i].catching_up) catching_up = i;
  }
  converged = converged && !catching_up;
  if (catching_up && now_ns_ >= quiesce_ns_ + options_.liveness_bound_ns) {
    const ReplicaSlot& slot = replicas_[*catching_up];
    fail("catch-up: r" + std::to_string(*catching_up) + ", restarted at " +
         time_text(slot.catch_up_started_ns) + "s, has not loaded a checkpoint " +
         time_text(options_.liveness_bound_ns) + "s after quiescence (" +
         std::to_string(slot.replica->byzantine_core()->votes_held()) + " votes held, " +
         std::to_string(slot.replica->rejected_state_transfers()) + " snapshots refused)");
    return;
  }
  if (converged) {
    final_checks();
    phase_ = Phase::kDone;
    return;
  }
  if (now_ns_ >= quiesce_ns_ + options_.liveness_bound_ns && membership) {
    fail(
        "membership: live replicas did not settle on one view of exactly the live replicas "
        "within " +
        time_text(options_.liveness_bound_ns) + "s of quiescence: " + *membership);
    return;
  }
  if (now_ns_ >= quiesce_ns_ + options_.liveness_bound_ns) {
    if (auto lost = lost_acknowledged_write()) {
      fail("durability: " + *lost);
      return;
    }
    std::string counts;
    for (uint32_t i = 0; i < replicas_.size(); ++i) {
      if (!serving(ReplicaId{i})) continue;
      counts += " r" + std::to_string(i) + ":" + std::to_string(replicas_[i].executed_position) +
                "/" + std::to_string(replicas_[i].replica->core().pending_entries()) + " pending";
    }
    fail("convergence: live replicas did not all execute the agreed sequence (" +
         std::to_string(reference_.size()) + " entries) within " +
         time_text(options_.liveness_bound_ns) + "s of quiescence:" + counts);
    return;
  }
  schedule(now_ns_ + kSettleCheckIntervalNs, SettleCheck{});
}

std::vector<check::Operation> Simulator::resolved_history() const {
  // The recorded history is what the clients saw: a crashed client's operation is unknown
  // (ok: null), free to take effect at any time after its call, or never. Many of them on one key
  // make the search exponential. The simulator knows more, so it resolves them before checking:
  //  - a read has no effect on the state, so it is dropped (ok: false);
  //  - a write that no replica executed by the end (after quiescence nothing more executes)
  //    certainly had no effect: ok: false;
  //  - a write that executed took effect by its first execution (it was stable then, so every
  //    operation called later is ordered after it): ok: true, returning at that time.
  // Each resolution only narrows where an operation may take effect, so a resolved history that
  // is linearizable makes the recorded one linearizable too; and each is true of a correct
  // cluster, so a violation found in the resolved history is a real one.
  std::vector<check::Operation> history = history_.operations();
  for (const CrashedOperation& crashed : crashed_ops_) {
    check::Operation& op = history[crashed.history_id];
    auto executed = first_executed_ns_.find(crashed.request);
    if (crashed.kind == check::OpKind::kGet || executed == first_executed_ns_.end()) {
      op.outcome = check::Outcome::kFailed;
      op.return_ns = op.call_ns;
    } else {
      op.outcome = check::Outcome::kOk;
      op.return_ns = executed->second;
    }
    op.output.reset();
  }
  return history;
}

void Simulator::final_checks() {
  // Equal states: the same executed sequence must give the same service state everywhere.
  std::optional<std::pair<uint32_t, uint64_t>> first;
  for (uint32_t i = 0; i < replicas_.size(); ++i) {
    if (!serving(ReplicaId{i})) continue;
    const uint64_t digest = replicas_[i].replica->service().digest();
    if (!first) {
      first = {i, digest};
    } else if (digest != first->second) {
      fail("state digests differ after quiescence: r" + std::to_string(first->first) + " and r" +
           std::to_string(i));
      return;
    }
  }
  if (!first) {
    fail("no live honest replica at the end (the budget allows at most t to fail)");
    return;
  }
  if (auto lost = lost_acknowledged_write()) {
    fail("durability: " + *lost);
    return;
  }
  // Every result an honest client accepted must be one an honest replica gave.
  if (!unconfirmed_accepts_.empty()) {
    const auto& [key, accepted] = *unconfirmed_accepts_.begin();
    fail("accepted result: client" + std::to_string(accepted.first) + " accepted " +
         describe_result(accepted.second) + " for " + key_text(key) +
         ", which no honest replica ever answered");
    return;
  }
  // Agreement for crashed clients (Schneider §3.1): a request that reached a replica that
  // stayed live must be executed by every live replica, even though its client is gone.
  for (const CrashedOperation& crashed : crashed_ops_) {
    const RequestKey& key = crashed.request;
    bool reached_live = false;
    for (const auto& [r, generation] : receivers_[key])
      reached_live |= serving(ReplicaId{r}) && replicas_[r].generation == generation;
    if (!reached_live) continue;
    for (uint32_t i = 0; i < replicas_.size(); ++i) {
      if (serving(ReplicaId{i}) && !replicas_[i].executed_any.contains(key)) {
        fail("relay: crashed client's request " + key_text(key) +
             " reached a live replica but was never executed by r" + std::to_string(i));
        return;
      }
    }
  }
  const std::vector<check::Operation> history = resolved_history();
  if (!options_.history_path.empty()) {
    auto error = history_.write_jsonl(options_.history_path);
    if (!error) error = check::write_history_file(options_.history_path + ".resolved", history);
    if (error) {
      fail("could not write the history: " + *error);
      return;
    }
  }
  check::CheckOptions check_options;
  check_options.steps_per_key_max = kCheckStepsPerKeyMax;
  const check::CheckResult check = check::check_linearizability(history, check_options);
  const std::optional<std::string> witness_failure = check_order_witness(history);
  if (check.verdict == check::Verdict::kNotLinearizable) {
    std::string text = "linearizability: the client history is not linearizable (keys:";
    for (const std::string& key : check.violating_keys)
      text += " " + key;
    text += ")";
    if (check.window) text += "\n" + check::format_window(*check.window, history);
    if (!witness_failure) {
      text += "\n  but the agreed order replays as a linearization: suspect the checker";
    }
    fail(std::move(text));
  } else if (witness_failure) {
    fail("linearizability (order witness): " + *witness_failure);
  } else if (check.verdict == check::Verdict::kUndecided) {
    trace("the linearizability search ran out of steps; the order witness decided");
  }
}

std::optional<std::string> Simulator::check_order_witness(
    const std::vector<check::Operation>& history) const {
  // The cluster's own total order is a candidate linearization, checkable in O(n log n): replay
  // the agreed sequence on a model of the KV store; every completed operation must have
  // returned what the model gives at its place, and the order must respect real time (an
  // operation that returned before another was called comes first). Both hold in a correct
  // cluster: replies come from executing in the agreed order, and a request is stamped after
  // everything that executed before it was sent (stability). Passing proves the history
  // linearizable even where the general search gives up.
  std::map<std::string, std::string> model;
  std::vector<std::optional<uint64_t>> position(history.size());
  std::vector<std::optional<std::string>> output(history.size());
  uint64_t next_position = 0;
  for (const Replica::Executed& executed : reference_) {
    if (executed.outcome != Service::Outcome::kExecuted) continue;
    // Byzantine clients' requests work on their own keys; the replicas' agreement covers them.
    if (byzantine_mode() && principal_of(executed.client) >= kByzantinePrincipalBase) continue;
    auto id = history_ids_.find({executed.client, executed.sequence});
    if (id == history_ids_.end()) {
      return key_text({executed.client, executed.sequence}) +
             " executed but no client ever sent it";
    }
    const check::Operation& op = history[id->second];
    position[id->second] = next_position++;
    std::string& value = model[op.key];
    switch (op.kind) {
      case check::OpKind::kGet:
        output[id->second] = value;
        break;
      case check::OpKind::kPut:
        value = op.value;
        break;
      case check::OpKind::kAppend:
        value += op.value;
        break;
      default:
        return "the simulator's workload has no " + std::string(check::op_kind_name(op.kind));
    }
  }
  std::vector<size_t> ordered;  // completed operations that took effect, by position
  for (size_t i = 0; i < history.size(); ++i) {
    const check::Operation& op = history[i];
    if (op.outcome != check::Outcome::kOk) continue;
    if (!position[i]) {
      return "client" + std::to_string(op.client) + "'s " +
             std::string(check::op_kind_name(op.kind)) + " " + op.key +
             " completed but never executed in the agreed order";
    }
    if (op.output && output[i] != op.output) {
      return "client" + std::to_string(op.client) + "'s get " + op.key + " returned \"" +
             *op.output + "\" but the agreed order gives \"" + output[i].value_or("") +
             "\" at its place (#" + std::to_string(*position[i] + 1) + ")";
    }
    ordered.push_back(i);
  }
  std::sort(ordered.begin(), ordered.end(),
            [&](size_t a, size_t b) { return *position[a] < *position[b]; });
  // From the back: the earliest return among the operations ordered after this one must not
  // precede this one's call.
  uint64_t earliest_later_return = UINT64_MAX;
  size_t earliest_later = 0;
  for (size_t k = ordered.size(); k-- > 0;) {
    const check::Operation& op = history[ordered[k]];
    if (earliest_later_return < op.call_ns) {
      const check::Operation& later = history[earliest_later];
      return "client" + std::to_string(later.client) + "'s " +
             std::string(check::op_kind_name(later.kind)) + " " + later.key + " returned at " +
             time_text(later.return_ns.value_or(0)) + "s, before client" +
             std::to_string(op.client) + "'s " + std::string(check::op_kind_name(op.kind)) + " " +
             op.key + " was called at " + time_text(op.call_ns) +
             "s, yet the agreed order puts it later";
    }
    if (op.return_ns && *op.return_ns < earliest_later_return) {
      earliest_later_return = *op.return_ns;
      earliest_later = ordered[k];
    }
  }
  return std::nullopt;
}

}  // namespace

std::string_view mode_name(Mode mode) {
  return mode == Mode::kByzantine ? "byzantine" : "failstop";
}

std::string RunProfile::describe() const {
  if (mode == Mode::kByzantine) {
    return "mode=byzantine t=" + std::to_string(t) + " replicas=" + std::to_string(replicas) +
           " clients=" + std::to_string(clients) + " keys=" + std::to_string(keys) +
           " fault_phase=" + time_text(fault_phase_ns) + "s delta=" + std::to_string(delta_us) +
           "us epsilon=" + std::to_string(epsilon_us) +
           "us byzantine_replicas=" + std::to_string(byzantine_replicas) +
           " byzantine_clients=" + std::to_string(byzantine_clients) +
           " checkpoint_interval=" + std::to_string(checkpoint_interval_us / 1000) + "ms" +
           (restarts ? " restarts" : "") +
           (durable ? " durable (certify every " + std::to_string(certify_interval_us) +
                          "us, disk checkpoint every " + std::to_string(checkpoint_interval) +
                          " executions, fsync " + std::to_string(sync_latency_ns / kUs) + "us)"
                    : "") +
           (behaviours.empty() ? "" : "\n  behaviours: " + behaviours);
  }
  return "t=" + std::to_string(t) + " replicas=" + std::to_string(replicas) +
         " clients=" + std::to_string(clients) + " keys=" + std::to_string(keys) +
         " fault_phase=" + time_text(fault_phase_ns) + "s" +
         (clock_beyond_bounds ? " clocks=beyond-bounds" : " clocks=bounded") +
         (durable ? " durable (checkpoint every " + std::to_string(checkpoint_interval) +
                        " executions, fsync " + std::to_string(sync_latency_ns / kUs) + "us)"
                  : "") +
         (reconfiguration ? " reconfiguration" : "") +
         (spare >= 0 ? " spare=r" + std::to_string(spare) : "");
}

std::string_view fault_kind_name(FaultKind kind) {
  switch (kind) {
    case FaultKind::kReplicaCrash:
      return "replica_crash";
    case FaultKind::kReplicaPause:
      return "replica_pause";
    case FaultKind::kReplicaLongPause:
      return "replica_long_pause";
    case FaultKind::kClientPartition:
      return "client_partition";
    case FaultKind::kClientCrash:
      return "client_crash";
    case FaultKind::kClientLoss:
      return "client_loss";
    case FaultKind::kClientDuplicate:
      return "client_duplicate";
    case FaultKind::kRetransmit:
      return "retransmit";
    case FaultKind::kConnectionReset:
      return "connection_reset";
    case FaultKind::kClockJump:
      return "clock_jump";
    case FaultKind::kByzantineDrop:
      return "byzantine_drop";
    case FaultKind::kByzantineInject:
      return "byzantine_inject";
    case FaultKind::kByzantineAlter:
      return "byzantine_alter";
    case FaultKind::kByzantineLie:
      return "byzantine_lie";
    case FaultKind::kByzantineClient:
      return "byzantine_client";
    case FaultKind::kReplicaRestart:
      return "replica_restart";
    case FaultKind::kReplicaLongRestart:
      return "replica_long_restart";
    case FaultKind::kClusterCrash:
      return "cluster_crash";
    case FaultKind::kDiskCorruption:
      return "disk_corruption";
    case FaultKind::kTornWrite:
      return "torn_write";
    case FaultKind::kRecoveryRefused:
      return "recovery_refused";
    case FaultKind::kOperatorRemove:
      return "operator_remove";
    case FaultKind::kRejoin:
      return "rejoin";
    case FaultKind::kWipeRejoin:
      return "wipe_rejoin";
    case FaultKind::kSpareJoin:
      return "spare_join";
    case FaultKind::kCatchUpRestart:
      return "catch_up_restart";
  }
  return "unknown";
}

bool is_episode(FaultKind kind) {
  switch (kind) {
    case FaultKind::kReplicaCrash:
    case FaultKind::kReplicaPause:
    case FaultKind::kReplicaLongPause:
    case FaultKind::kClientPartition:
    case FaultKind::kClientCrash:
    case FaultKind::kClockJump:
    case FaultKind::kConnectionReset:
    case FaultKind::kReplicaRestart:
    case FaultKind::kReplicaLongRestart:
    case FaultKind::kClusterCrash:
    case FaultKind::kDiskCorruption:
    case FaultKind::kOperatorRemove:
    case FaultKind::kRejoin:
    case FaultKind::kWipeRejoin:
    case FaultKind::kSpareJoin:
    case FaultKind::kCatchUpRestart:
      return true;
    case FaultKind::kClientLoss:
    case FaultKind::kClientDuplicate:
    case FaultKind::kRetransmit:
    case FaultKind::kByzantineDrop:
    case FaultKind::kByzantineInject:
    case FaultKind::kByzantineAlter:
    case FaultKind::kByzantineLie:
    case FaultKind::kByzantineClient:
    case FaultKind::kTornWrite:
    case FaultKind::kRecoveryRefused:
      return false;
  }
  return false;
}

RunResult run_simulation(const SimOptions& options) {
  Simulator simulator(options);
  return simulator.run();
}

std::string summarize(const RunResult& result) {
  std::string text =
      "seed " + std::to_string(result.seed) + ": " + (result.passed ? "pass" : "FAIL") + "  " +
      result.profile.describe() + "\n  ops: " + std::to_string(result.ops_submitted) +
      " submitted, " + std::to_string(result.ops_completed) + " completed, " +
      std::to_string(result.ops_unknown) + " unknown (crashed clients)" + "\n  simulated " +
      time_text(result.simulated_ns) + "s in " + std::to_string(result.events) +
      " events, log hash " + std::to_string(result.event_log_hash) +
      "\n  faults: " + std::to_string(result.fault_episodes) + " episodes;";
  for (size_t k = 0; k < kFaultKindCount; ++k) {
    if (result.faults[k] == 0) continue;
    text += " " + std::string(fault_kind_name(static_cast<FaultKind>(k))) + "=" +
            std::to_string(result.faults[k]);
  }
  if (result.state_transfers_loaded > 0) {
    text += "; state transfers loaded=" + std::to_string(result.state_transfers_loaded);
  }
  if (result.state_chunks_sent > 0) {
    text += " (pieces sent=" + std::to_string(result.state_chunks_sent) + ")";
  }
  if (result.snapshots_refused > 0) {
    text += "; snapshots refused=" + std::to_string(result.snapshots_refused);
  }
  if (result.recoveries_completed > 0) {
    text += "; recoveries from disk completed=" + std::to_string(result.recoveries_completed);
  }
  if (result.recoveries_with_ruling > 0) {
    text += "; recoveries_with_ruling=" + std::to_string(result.recoveries_with_ruling);
  }
  if (result.crashes_ended_by_cluster_crash > 0) {
    text += "; crashes ended by a cluster crash=" +
            std::to_string(result.crashes_ended_by_cluster_crash);
  }
  if (!result.passed) text += "\n  violation: " + result.violation;
  return text;
}

}  // namespace lockstep::sim
