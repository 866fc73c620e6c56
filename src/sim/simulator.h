// The deterministic simulator (in the manner of FoundationDB's simulation and TigerBeetle's
// VOPR): a whole cluster — real `Replica` objects running the real protocol core of the mode and
// the KV service, and real `ClientSession`s — in one process and one thread, driven by one seeded
// PRNG over simulated time. Same seed + same binary = the same run, event for event.
//
// A run has three phases:
//   1. faults: clients run a workload while the seed's fault schedule injects faults (network
//      delay tails, retransmissions, connection resets, client-link loss, duplicates and
//      partitions, replica crashes and pauses, clients crashing mid-broadcast, clock skew, drift
//      and jumps). Which faults are enabled and how often is itself drawn from the seed ("swarm
//      testing", Groce et al. 2012), so that different seeds stress different mixes.
//   2. heal: no new faults; paused replicas resume and partitions heal. Every live client's
//      outstanding operation must complete within `liveness_bound_ns`.
//   3. quiescence: once no client has an operation outstanding, the cluster runs on until every
//      live replica has executed the same requests; then the final checks run.
//
// Checks: agreement (the executed sequences of all replicas are prefixes of one sequence),
// exactly-once (no request executes twice on a replica), replies only after execution,
// Core::check_invariants after every step, the fault budget (crashed + removed <= t),
// linearizability of the client history, liveness after healing, relay of a crashed client's
// request, and equal state digests at the end. The first violation stops the run.
//
// The byzantine mode (Mode::kByzantine) runs n = 2t+1 replicas of the byzantine core within its
// model (synchronized clocks within ε, honest messages within Δ, no pauses) with up to t faulty
// replicas: crashed ones, and Byzantine ones whose every output passes through a ByzantineHook
// (sim/byzantine.h draws one from the seed), plus Byzantine clients. The checks above then apply
// to the honest replicas and honest clients; see src/sim/README.md.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/byzantine/core.h"
#include "protocol/failstop/core.h"
#include "sim/hooks.h"

namespace lockstep::sim {

enum class Mode : uint8_t { kFailstop, kByzantine };
std::string_view mode_name(Mode mode);

enum class FaultKind : uint8_t {
  kReplicaCrash,      // a replica stops forever (counts against t)
  kReplicaPause,      // a replica takes no steps for a while, shorter than the failure timeout
  kReplicaLongPause,  // paused past the failure timeout: the others remove it (counts against t)
  kClientPartition,   // a client<->replica link drops everything for a while
  kClientCrash,       // a client sends a request to only some replicas and stops forever
  kClientLoss,        // one client<->replica message lost outright
  kClientDuplicate,   // one client<->replica message delivered twice
  kRetransmit,        // one replica<->replica message lost and resent (extra delay, still FIFO)
  kConnectionReset,   // a replica<->replica connection drops and reconnects (a delay spike)
  kClockJump,         // a replica's wall clock steps, beyond the configured skew bound
  // Byzantine mode, per message:
  kByzantineDrop,    // a faulty replica suppressed a message or reply
  kByzantineInject,  // a faulty replica sent a message of its own (replay, flood, late value)
  kByzantineAlter,   // a faulty replica rewrote a message (equivocation, forged chain, time lie)
  kByzantineLie,     // a faulty replica altered a reply's result
  kByzantineClient,  // a Byzantine client sent a bad request (equivocation, forgery, replay)
  // Durable runs (replicas keep a log and checkpoints on a simulated disk; byzantine mode: a
  // restarted honest replica recovers, then catches up or takes part in a whole-cluster recovery):
  kReplicaRestart,      // crash, then restart from the disk before the failure timeout
  kReplicaLongRestart,  // crash, restart after the others removed it: it halts (counts against t)
  kClusterCrash,        // every live replica crashes at once and restarts from its disk
  kDiskCorruption,      // crash, a bad byte in a synced log segment or checkpoint, restart
  kTornWrite,           // a crash kept a prefix of the unsynced writes, the last one torn
  kRecoveryRefused,     // recovery refused a damaged disk: the replica stays down (counts)
  // Failstop reconfiguration (runs with `reconfiguration`, durable or not):
  kOperatorRemove,  // `lockstep admin remove-replica r` on every live member: r halts (counts)
  kRejoin,          // a removed or crashed replica restarts as a joiner (new incarnation), with a
                    // wiped disk or its old one, after an operator add if it was removed by one
  kWipeRejoin,      // a member crashes, loses its disk, restarts as a joiner at once: the others
                    // remove it and add it back (a unit of t until it has loaded a state)
  kSpareJoin,       // an operator adds the spare slot, which starts as a joiner
  // Byzantine mode:
  kCatchUpRestart,  // an honest replica crashes (its state is gone: no disk in this mode) and a
                    // new process starts in its slot with `join`, loads a checkpoint that t+1
                    // replicas vouch for and catches up (a unit of t until it has loaded)
};
inline constexpr size_t kFaultKindCount = 26;
std::string_view fault_kind_name(FaultKind kind);

// True for the faults counted as episodes by the schedule (the others are per message).
bool is_episode(FaultKind kind);

using FaultCounts = std::array<uint64_t, kFaultKindCount>;

// Planted protocol bugs (tests only): the checkers must catch each.
struct PlantedBugs {
  failstop::Options::PlantedBugs failstop;
  byzantine::Options::PlantedBugs byzantine;
  bool accept_short_quorum = false;  // ClientOptions::planted_accept_short_quorum
  // Durable runs (both modes): release a step's messages and replies before its log records are
  // synced (the runtime's "persist, then send" rule broken), so a crash loses what was promised.
  bool persist_after_send = false;
  // Byzantine restarts (a simulator hook, not a protocol switch): every checkpoint vote and
  // snapshot that reaches a replica catching up is swapped for a forged state's (the votes
  // re-signed with their senders' keys), so that it loads a state no honest replica had: the
  // checker of what joiners load must catch it.
  bool load_forged_state = false;
};

struct SimOptions {
  Mode mode = Mode::kFailstop;
  uint64_t seed = 1;
  // Fault tolerance; n = t + 1 replicas in failstop, 2t + 1 in byzantine. Drawn from the seed
  // when absent (failstop 1..3; byzantine 1..2, and 3 on a few seeds).
  std::optional<uint32_t> t;
  // Byzantine mode: faulty replicas (0..t, crashes take the rest of the budget) and lying
  // clients (0..3). Drawn when absent.
  std::optional<uint32_t> byzantine_replicas;
  std::optional<uint32_t> byzantine_clients;
  // Client operations submitted during the fault phase (at least; the phase also lasts until
  // `faults_min` fault episodes have happened and its drawn duration has passed).
  uint32_t ops = 500;
  std::optional<uint32_t> clients;  // drawn (2..12) when absent
  uint32_t faults_min = 10;         // fault episodes (crash, pause, partition, ...) at least
  // Whether replica clocks may leave the configured skew bound (clock jumps of seconds). Failstop
  // safety must not depend on clocks at all, so this is on for a share of the seeds. The
  // byzantine mode assumes synchronized clocks: there it must be absent or false.
  std::optional<bool> clock_beyond_bounds;
  // Whether replicas keep their state on a simulated disk (a log synced before every release, and
  // checkpoints), so that they can crash and restart, alone or all at once, and suffer torn writes
  // and bad sectors. Drawn when absent: on about a third of the failstop seeds, and on 40% of the
  // byzantine ones (there every replica, faulty ones too, certifies its order every
  // `certify_interval_us`, drawn per seed).
  std::optional<bool> durable;
  // Whether the schedule reconfigures the cluster. Failstop: operator removals, rejoins by state
  // transfer, wiped members rejoining, a spare slot joining. Byzantine (non-durable runs only):
  // one or two spare slots listed after the 2t+1 first members, added by a change the
  // administrator signs, then (on most such seeds) an honest first member removed by another
  // (docs/DESIGN.md §11.9). When absent: drawn (failstop: half the seeds; byzantine: 30% of the
  // non-durable ones) if `draw_reconfiguration` (the `lockstep sim` default), else off (this
  // library's default, so that the seed suites in tests/sim keep their schedules).
  std::optional<bool> reconfiguration;
  bool draw_reconfiguration = false;
  // Byzantine mode: whether honest replicas restart without their state and catch up from a
  // checkpoint (kCatchUpRestart). Drawn (on most seeds) when absent. Checkpoints are on in every
  // byzantine run either way (an interval drawn per seed).
  std::optional<bool> restarts;
  uint64_t liveness_bound_ns = 20'000'000'000;  // after healing, per outstanding operation
  // When set, the client history is written there as JSON lines (history-format.md) at the end
  // of the run, as the clients saw it, and with crashed clients' operations resolved (see
  // simulator.cc) to `history_path + ".resolved"`, for `lockstep check-history`.
  std::string history_path;
  PlantedBugs planted;
  Hooks hooks;
  // Keep a readable line per event: the last `trace_tail_events` go into the result, and every
  // line goes to `trace_sink` when set (the runner streams them out of a child process, so that
  // they survive an assertion that aborts).
  bool trace = false;
  size_t trace_tail_events = 200;
  std::function<void(std::string_view line)> trace_sink;
};

// What the seed drew for this run, printed with every result so a run can be understood
// without re-running it.
struct RunProfile {
  Mode mode = Mode::kFailstop;
  uint32_t t = 0;
  uint32_t replicas = 0;
  uint32_t clients = 0;
  uint32_t keys = 0;
  uint64_t fault_phase_ns = 0;
  bool clock_beyond_bounds = false;
  // Durable runs (both modes).
  bool durable = false;
  uint64_t checkpoint_interval = 0;  // executed entries between checkpoints (on the disk)
  uint64_t sync_latency_ns = 0;      // how long an fsync takes
  uint64_t certify_interval_us = 0;  // byzantine: order time between certified positions
  // Reconfiguration: whether it is on, and the slot that starts outside the membership (the first
  // spare; -1: none). Failstop slots are t+1 members plus the spare; byzantine ones 2t+1 members
  // plus one or two spares.
  bool reconfiguration = false;
  int32_t spare = -1;
  // Byzantine mode.
  uint64_t delta_us = 0;
  uint64_t epsilon_us = 0;
  uint32_t byzantine_replicas = 0;
  uint32_t byzantine_clients = 0;
  std::string behaviours;  // what the faulty replicas and clients do, e.g. "r1:equivocate+flood"
  uint64_t checkpoint_interval_us = 0;  // order time between checkpoint boundaries
  bool restarts = false;                // honest replicas restart and catch up
  uint64_t state_chunk_bytes = 0;       // state transfers larger than this go in pieces
  std::string describe() const;
};

struct RunResult {
  uint64_t seed = 0;
  bool passed = false;
  std::string violation;  // the first violation, empty when passed
  RunProfile profile;
  uint64_t events = 0;
  uint64_t simulated_ns = 0;
  uint64_t ops_submitted = 0;
  uint64_t ops_completed = 0;  // completed with a known result
  uint64_t ops_unknown = 0;    // crashed clients' operations (ok: null in the history)
  FaultCounts faults{};
  uint64_t fault_episodes = 0;
  uint64_t final_view = 0;  // the highest view a live replica ended in (0: no membership change)
  uint64_t state_transfers_loaded = 0;  // joiners that loaded a donor's state (any mode)
  uint64_t state_chunks_sent = 0;       // pieces of state transfers (StateChunk messages)
  // Byzantine restarts: snapshots joiners refused (forged or damaged: not the vouched-for digest).
  uint64_t snapshots_refused = 0;
  // Durable byzantine runs: replicas restarted from their disk that served again (caught up from
  // a live cluster, or took part in a whole-cluster recovery).
  uint64_t recoveries_completed = 0;
  // Durable byzantine runs: replicas crashed for good (replica_crash) that a whole-cluster crash
  // then restarted with the others (each served again, so its unit of t was free again).
  uint64_t crashes_ended_by_cluster_crash = 0;
  // Durable byzantine runs with faulty replicas: whole-cluster crashes after which the operator
  // ruled the faulty replicas out of the recovery (recovery_excused); after the others, the
  // faulty replicas' own claims bypass their hook instead.
  uint64_t recoveries_with_ruling = 0;
  uint64_t event_log_hash = 0;          // over every event and output: equal runs have equal hashes
  std::vector<std::string> trace_tail;  // the last events before the end or the violation
};

// Runs one seed to completion or to the first violation. Aborts (LOCKSTEP_ASSERT) only when a
// replica's own invariant check fails; runner.h runs seeds in child processes to survive that.
RunResult run_simulation(const SimOptions& options);

// One line: seed, pass/fail, ops, faults by kind, simulated time, events.
std::string summarize(const RunResult& result);

}  // namespace lockstep::sim
