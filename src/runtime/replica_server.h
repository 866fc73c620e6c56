// A replica process's runtime: the pure Replica (protocol core + KV service) driven by real
// sockets, timers and clocks on one event loop thread (docs/DESIGN.md, "runtime").
//
//   inputs   client connections  -> Replica::on_client_request
//            peer channels       -> Replica::on_peer_message (FIFO, exactly once;
//            net/peer_channel.h) a 1 ms timer        -> Replica::tick
//   outputs  once per loop iteration, after all inputs: Replica::take_output(), whose to_peers go
//            to the peer channels and whose to_clients go to the connection that carried the
//            client's request (dropped when that connection is gone: the client retries).
//
// Taking the output once per iteration rather than per input is the batching: every request
// that arrived in one epoll_wait leaves in one ReplicaUpdate per peer, written with one send().
//
// Connections: the listener accepts replicas and clients alike; the first frame (Hello) says
// which. On a client connection a StatusRequest is answered at once with this replica's view,
// executed count and state digest (for operators and tests comparing replicas), and so is an
// AdminRequest (`lockstep admin`, failstop reconfiguration: Replica::on_admin). A client connection
// may carry many client sessions (client/client.h multiplexes them), so replies are routed by the
// client id of the requests each connection carried.
//
// Durability (either mode, with a [storage] data_dir; docs/DESIGN.md §10, §11.8): the
// constructor opens <data_dir>/replica-<id> (a PosixStorage under a storage::ReplicaStore),
// recovers the newest checkpoint and the log records after it, and rebuilds the Replica from them
// before it takes any input. Each loop iteration then appends the output's persist records and
// commits the log (fdatasync under sync = "always") BEFORE any of that iteration's messages or
// replies leave: nothing a peer or a client has seen can depend on a record a crash loses. Every
// checkpoint_entries executed entries the replica writes a checkpoint, which truncates the log.
// A byzantine replica rebuilt from a non-fresh disk comes back recovering: it takes part but
// serves nothing until it has caught up with the others, or (after a whole-cluster crash) all of
// them agreed where the order resumes; that step sets loaded_state like a loaded snapshot does.
// Damage recovery cannot repair (storage::WalCorruption, StoreCorruption, an undecodable record)
// stops the constructor with ReplicaStorageError (exit kExitStorageFailed), as does an I/O error
// while running: a replica that cannot persist must not pretend it did.
//
// Catching up (byzantine, docs/DESIGN.md §11.7): the core signs a checkpoint vote every
// checkpoint_interval_ms and the Replica keeps the latest snapshot to serve; a replica started
// with ReplicaServerOptions::join loads one that t+1 replicas vouched for. The log says when it
// starts catching up, when t+1 votes arrived, and when it loaded the state.
//
// Joining (failstop reconfiguration, docs/DESIGN.md §12): a replica started with
// ReplicaServerOptions::join and no state on disk, or a spare (`member = false`), asks the members
// to add it and serves nothing until it has loaded a member's state. In the iteration that loads
// it, a durable replica writes a checkpoint of the loaded state before that iteration's records
// and before anything leaves, so that a restart recovers the loaded state, not its empty past.
//
// Byzantine mode: the replica signs with its own key (ReplicaServerOptions::keys, whose public
// half must be the configuration's key for this id) and checks everyone else's. Each loop
// iteration's replies to one client connection leave as one SignedReplies frame under one
// signature (crypto/signing.h), so a signature costs one operation per connection per iteration,
// not one per reply. A batch also carries the administrator's signed membership changes
// (Replica::membership_proofs) the first time a connection is sent replies after a new epoch was
// adopted, and StatusReply states the epoch in force. A replica a change removed halts like a
// removed failstop replica: it logs it and run() returns kExitHalted.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "crypto/crypto.h"
#include "net/acceptor.h"
#include "net/event_loop.h"
#include "net/peer_channel.h"
#include "replica/replica.h"
#include "runtime/config.h"
#include "storage/replica_store.h"

namespace lockstep::runtime {

// Test-only faults a replica can be told to commit (`lockstep replica --misbehave ...`), so that
// tests and the demo can show clients outvoting a lying replica and surviving a mute one. Only
// accepted in byzantine mode, where the protocol is built to tolerate them (a failstop replica
// refuses to start with one).
enum class Misbehaviour : uint8_t {
  kNone,
  kWrongOutput,  // every reply's result gets "!lie" appended before signing
  kSilent,       // sends nothing to peers or clients (it still answers StatusRequest)
};
std::string_view misbehaviour_name(Misbehaviour misbehaviour);  // "none", "wrong-output", "silent"
std::optional<Misbehaviour> parse_misbehaviour(std::string_view name);

struct ReplicaServerOptions {
  uint64_t tick_interval_ns = 1'000'000;
  uint64_t stats_interval_ns = 10'000'000'000;
  // 0 draws a random one, which is what a process start must do (failstop::Options).
  uint64_t incarnation = 0;
  // Byzantine mode: this replica's key pair (crypto::read_key_file); required there.
  std::optional<crypto::KeyPair> keys;
  Misbehaviour misbehave = Misbehaviour::kNone;
  // `lockstep replica --join`: a replica without a state of its own.
  //  - failstop (failstop::Options::join; no data_dir, or an empty one): asks the running cluster
  //    to add it and loads a member's state, instead of starting as a founding member of view 0.
  //    Ignored when its disk holds a state (it recovers that).
  //  - byzantine (byzantine::Options::join; no durable data_dir, or an empty one): a restarted
  //    replica takes part in the protocol at once but executes nothing and serves no client
  //    (kNotServing) until it has loaded the snapshot of a checkpoint that t+1 replicas signed
  //    (docs/DESIGN.md §11.7). Without it, a restarted byzantine replica would start from an
  //    empty state and diverge. Ignored when its disk holds a state: it recovers that, then
  //    catches up the same way (or recovers with the whole cluster, §11.8).
  bool join = false;
  // `lockstep replica --recover-without R,...` (byzantine, durable): after a whole-cluster crash,
  // recover without these replicas' claims (byzantine::Options::recovery_excused). Give every
  // replica the same list. Ruling out an honest replica loses any acknowledged write that only its
  // disk held (docs/DESIGN.md §11.8).
  std::vector<ReplicaId> recover_without;
};

// Exit codes of a replica process (`lockstep replica`).
inline constexpr int kExitStopped = 0;  // SIGTERM/SIGINT or stop()
inline constexpr int kExitHalted = 3;   // removed from the membership by the others
// Its data directory cannot be recovered (damaged log or checkpoint, foreign files, undecodable
// records) or written (I/O error, full disk). An operator must look before it runs again.
inline constexpr int kExitStorageFailed = 4;

// Why a replica's disk stopped it; the message names the directory, file and offset where known.
class ReplicaStorageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ReplicaServer final : public net::ConnectionHandler {
 public:
  // Recovers from the data directory (if configured), then listens on the replica's configured
  // address at once. Throws ReplicaStorageError when the directory cannot be recovered, and
  // std::runtime_error when it cannot start otherwise: an id outside the configuration, a
  // byzantine configuration without this replica's key (or with another key than the one
  // given), or the address is in use.
  ReplicaServer(net::EventLoop& loop, ClusterConfig config, ReplicaId self,
                ReplicaServerOptions options = {});
  ~ReplicaServer();
  ReplicaServer(const ReplicaServer&) = delete;
  ReplicaServer& operator=(const ReplicaServer&) = delete;

  // Starts the peer channels, the tick timer and the output hook on the loop, without running
  // it: several servers can share one loop (in-process tests). Idempotent.
  void start();
  // start(), then runs the loop until stop() or until the replica is halted. Returns
  // kExitStopped or kExitHalted.
  int run();
  // Stops the loop after the current iteration (call on the loop thread, e.g. from a signal
  // callback registered with EventLoop::watch_signal).
  void stop();

  // kExitHalted once the replica was removed from the membership, kExitStorageFailed once its
  // disk failed (it then stops the loop).
  int exit_code() const { return exit_code_; }

  ReplicaId id() const { return self_; }
  uint64_t incarnation() const { return incarnation_; }
  uint16_t port() const { return acceptor_->port(); }
  const Replica& replica() const { return *replica_; }
  size_t client_connections() const { return clients_.size(); }
  // The store, when the configuration has a data_dir (tests look at its size and indices).
  const storage::ReplicaStore* store() const { return store_ ? &*store_ : nullptr; }
  uint64_t checkpoints_written() const { return checkpoints_written_; }

  void on_message(net::Connection& connection, WireMessage&& message) override;
  void on_closed(net::Connection& connection, const std::string& reason) override;

 private:
  void on_hello(std::unique_ptr<net::Connection> connection, const Hello& hello);
  void on_tick();
  StatusReply status_reply(uint64_t nonce) const;
  void after_iteration();
  void send_replies(std::vector<ClientReply>& replies);
  void log_stats();
  Now now() const;
  storage::StoreRecovery open_store();
  void rebuild_from_disk(storage::StoreRecovery& recovery);
  // Appends and commits the iteration's records; false (after stopping the loop) on an I/O error.
  bool persist(std::vector<OrderingCore::PersistRecord>& records);
  void checkpoint_if_due();
  // Writes a checkpoint of the replica as it is now at the log's next index; false (after
  // stopping the loop) when it fails. `why` goes to the log ("scheduled", "loaded-state").
  bool write_checkpoint(std::string_view why);
  // The step that loaded a donor's state (Replica::Output::loaded_state): a checkpoint of it and
  // the step's records, durably, before anything leaves.
  bool persist_loaded_state(std::vector<OrderingCore::PersistRecord>& records);
  // Logs the start of a state transfer (whole, or the first of its pieces).
  void log_state_transfer(const Replica::PeerMessage& message) const;
  void log_joining_changes();
  void fail_storage(const std::string& what);
  // Byzantine catching up: opens the inputs once every peer channel is established (or the wait
  // is over); true when they are open.
  bool open_inputs_when_connected();

  net::EventLoop& loop_;
  ClusterConfig config_;
  ReplicaId self_;
  ReplicaServerOptions options_;
  uint64_t incarnation_;
  // Byzantine mode: this replica's key and every public key of the cluster. Declared before
  // replica_, whose core holds pointers to them.
  std::unique_ptr<crypto::Signer> signer_;
  std::unique_ptr<crypto::Verifier> verifier_;
  std::unique_ptr<Replica> replica_;
  // Durability: the disk and the store on it (store_ refers to disk_, so declared after it).
  std::unique_ptr<storage::Storage> disk_;
  std::optional<storage::ReplicaStore> store_;
  uint64_t last_checkpoint_index_ = 0;   // log index of the newest checkpoint (0: none)
  uint64_t executed_at_checkpoint_ = 0;  // replica_->executed_since_start() when it was taken
  std::vector<std::unique_ptr<net::PeerChannel>> channels_;  // indexed by ReplicaId; self empty
  std::unique_ptr<net::Acceptor> acceptor_;

  struct ClientConnection {
    std::unique_ptr<net::Connection> connection;
    uint64_t hello_id;
    // Byzantine: how many of the administrator's membership changes (one per epoch after 0)
    // this connection's batches carry, and how many more batches carry them: a client adopts a
    // change only once t+1 members showed it, so each replica repeats it for a while rather than
    // counting on one batch reaching a client that keeps it.
    size_t membership_changes_sent = 0;
    uint32_t membership_batches_left = 0;
  };
  std::unordered_map<net::Connection*, ClientConnection> clients_;
  // Which connection carried each client's latest request: where its replies go.
  std::unordered_map<uint64_t, net::Connection*> reply_routes_;

  net::EventLoop::TimerId tick_timer_ = 0;
  net::EventLoop::TimerId stats_timer_ = 0;
  net::EventLoop::HookId output_hook_ = 0;
  bool started_ = false;
  int exit_code_ = kExitStopped;
  // Byzantine catching up: the core starts taking part at its first input and from then on must
  // see every instance whole, but peers redial a restarted replica with a backoff, and what they
  // sent before the new connection is dropped with the old incarnation's queue. So the replica
  // takes no input at all (peer messages and client requests are dropped, no tick, no output)
  // until every peer channel is established, or kCatchUpConnectWaitNs after start().
  bool inputs_open_ = true;
  uint64_t inputs_wait_until_ns_ = 0;
  uint64_t inputs_dropped_ = 0;
  // The administrator's requests (membership changes) that arrived meanwhile, given to the
  // replica when inputs open (a few: the administrator sends one change at a time).
  static constexpr size_t kHeldAdministratorRequestsMax = 16;
  std::vector<ClientRequest> held_administrator_requests_;
  bool halted_reported_ = false;
  // Answers to `lockstep admin`, sent once this iteration's records are durable.
  std::vector<std::pair<net::Connection*, AdminReply>> admin_replies_;
  // Reconfiguration, for the log: what was last said about state transfers and joining.
  uint64_t rejected_transfers_logged_ = 0;
  bool logged_joining_ = false;
  bool logged_awaiting_state_ = false;
  // Byzantine whole-cluster recoveries already logged (byzantine::Core::recoveries_completed).
  uint64_t logged_recoveries_ = 0;
  ViewNumber logged_view_{0};

  uint64_t executed_ = 0;
  uint64_t executed_at_last_stats_ = 0;
  uint64_t replies_dropped_ = 0;
  uint64_t reply_batches_signed_ = 0;
  uint64_t syncs_ = 0;
  uint64_t syncs_at_last_stats_ = 0;
  uint64_t votes_against_at_last_stats_ = 0;
  uint64_t records_appended_ = 0;
  uint64_t checkpoints_written_ = 0;
};

// A random 64-bit incarnation number, never 0 (0 means "unknown" on the wire).
uint64_t random_incarnation();

}  // namespace lockstep::runtime
