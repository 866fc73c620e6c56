// The networked client library: ClientSession (client/core, pure logic: sequence numbers,
// retries, deadlines) driven over TCP connections to every replica on an EventLoop.
//
// One Client holds one connection per replica and any number of logical sessions over them
// (open_session): a workload with 64 concurrent sessions uses n sockets, not 64 x n. Each
// session has its own random client id and sequence numbers, and replies are routed to it by
// the client id they carry. Requests are broadcast to every replica (Schneider §3.1: agreement
// by clients); the first kOk reply completes a request (failstop output rule).
//
// Byzantine mode (a `verifier` in the options): requests are signed with the client principal's
// key and session ids carry the principal (core/types.h client_id_of). Replies arrive only in
// SignedReplies frames; each frame's signature is checked once, and every reply in it goes to
// its session with the proof that the replica signed it. A request completes when t+1 replicas
// sent the same result (ClientSession), and the result carries that reply certificate and the
// replicas that said otherwise. Unsigned ClientReply frames are ignored. Membership changes
// attached to a batch (SignedReplies::membership_changes) go to one MembershipLearner for the
// whole client (client/core/membership_learner.h): a change is adopted once t+1 members of the
// epoch before it showed it, whichever connections' batches carried it, then handed to every
// session (ClientSession::adopt_schedule).
//
// Connections that fail are redialed with backoff; requests sent while a replica is unreachable
// are not queued for it, since the session's retry broadcasts them again and the other replicas
// relay what they hold.
//
// Threading: everything, callbacks included, runs on the EventLoop's thread. BlockingClient
// wraps a private loop for callers that want one answer at a time (the CLI).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "client/core/client_session.h"
#include "net/address.h"
#include "net/connection.h"
#include "net/event_loop.h"

namespace lockstep {

struct NetworkClientOptions {
  std::vector<net::Address> replicas;  // indexed by ReplicaId
  // Retry interval, deadline and pipelining limit of every session; replica_count is set from
  // `replicas`.
  ClientOptions session;
  uint64_t tick_interval_ns = 5'000'000;  // how often retries and deadlines are checked
  uint64_t reconnect_backoff_min_ns = 10'000'000;
  uint64_t reconnect_backoff_max_ns = 1'000'000'000;
  size_t sessions_max = 1 << 16;
  // Byzantine mode (not owned; outlive the client). `verifier` holds the replicas' public keys and
  // switches the mode on; `signer` is the key of client principal `principal`, which signs every
  // request. session.reply_quorum should be t+1.
  const crypto::Verifier* verifier = nullptr;
  const crypto::Signer* signer = nullptr;
  uint32_t principal = 0;
};

struct CallResult {
  enum class Status : uint8_t {
    kOk,        // `result` is the state machine's output
    kTimedOut,  // no replica answered before the deadline; the request may still take effect
    // The replicas refused it as busy (a limit was reached) until the deadline: retry later. It
    // most likely did not take effect, but a replica that did not refuse may have run it.
    kBusy,
  };
  Status status = Status::kTimedOut;
  Bytes result;
  ReplicaId replied_by{};  // kOk: whose reply completed it; kBusy: the last replica that refused
  // Byzantine mode, when kOk: the signed replies of the agreeing replicas (client/certificate.h
  // checks and stores it), and the replies of replicas that sent something else.
  std::optional<ReplyCertificate> certificate;
  std::vector<ClientSession::Dissent> dissent;
  bool ok() const { return status == Status::kOk; }
};

class Client final : public net::ConnectionHandler {
 public:
  using Callback = std::function<void(CallResult)>;

  // Starts dialing every replica. Requests may be submitted at once.
  Client(net::EventLoop& loop, NetworkClientOptions options);
  // Pending callbacks are dropped uncalled.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // A new logical session over the shared connections, with a fresh random client id.
  ClientId open_session();
  // Forgets a session; its pending callbacks are dropped uncalled.
  void close_session(ClientId session);

  // Submits `command` on `session`; `callback` runs exactly once on the loop thread with the
  // outcome (never from inside submit). Returns false, without calling `callback`, when the
  // session is unknown or already has outstanding_max requests in flight.
  bool submit(ClientId session, Bytes command, Callback callback);
  // The same, on a default session opened on first use.
  bool submit(Bytes command, Callback callback);

  // Asks one replica for its status (view, executed count, state digest). `callback` runs once on
  // the loop thread with the reply, or with nullopt when none comes within the session deadline.
  using StatusCallback = std::function<void(std::optional<StatusReply>)>;
  void request_status(ReplicaId replica, StatusCallback callback);

  size_t outstanding(ClientId session) const;
  size_t session_count() const { return sessions_.size(); }
  size_t connected_replicas() const;
  // Byzantine mode: SignedReplies frames dropped because their signature did not verify.
  uint64_t bad_reply_batches() const { return bad_reply_batches_; }
  // Byzantine mode: the configurations this client knows (the cluster file's, then every
  // administrator's change that t+1 members of the epoch before it attached to their replies),
  // and changes it refused.
  const Schedule& schedule() const { return membership_->schedule(); }
  uint64_t refused_membership_changes() const { return membership_->refused(); }
  // One line per replica: its address and whether it is connected or why not.
  std::string connection_summary() const;

  void on_connected(net::Connection& connection) override;
  void on_message(net::Connection& connection, WireMessage&& message) override;
  void on_closed(net::Connection& connection, const std::string& reason) override;

 private:
  struct Session {
    explicit Session(ClientId id, const ClientOptions& options) : core(id, options) {}
    ClientSession core;
    // callbacks[s - first_sequence] is the callback of sequence s; empty once called. Sequences
    // are dense, so this is a queue rather than a map: no allocation per request.
    std::deque<Callback> callbacks;
    uint64_t first_sequence = 1;
    bool dirty = false;  // has sends or completions to collect at the end of the iteration
  };
  struct ReplicaLink {
    net::Address address;
    std::unique_ptr<net::Connection> connection;
    bool hello_received = false;
    uint64_t backoff_ns = 0;
    net::EventLoop::TimerId reconnect_timer = 0;
    std::string last_error = "not connected yet";
  };

  void dial(size_t replica);
  void mark_dirty(Session& session);
  void after_iteration();
  void tick();
  ClientId fresh_id();
  ReplicaLink* link_of(net::Connection& connection);
  void on_signed_replies(size_t replica, SignedReplies& batch);
  void learn_membership(size_t replica, const std::vector<ClientRequest>& changes);

  net::EventLoop& loop_;
  NetworkClientOptions options_;
  uint64_t incarnation_;
  std::mt19937_64 random_;
  std::vector<ReplicaLink> links_;
  std::unordered_map<uint64_t, std::unique_ptr<Session>> sessions_;
  std::vector<Session*> dirty_;
  std::vector<Session*> collecting_;
  ClientId default_session_{};
  bool has_default_session_ = false;
  net::EventLoop::TimerId tick_timer_ = 0;
  net::EventLoop::HookId hook_ = 0;

  struct PendingStatus {
    uint64_t deadline_ns;
    StatusCallback callback;
  };
  std::map<uint64_t, PendingStatus> statuses_;  // by nonce
  std::vector<std::pair<StatusCallback, std::optional<StatusReply>>> status_results_;
  uint64_t next_nonce_ = 1;
  uint64_t bad_reply_batches_ = 0;
  std::unique_ptr<MembershipLearner> membership_;  // made once the options are complete
};

// One request at a time, blocking the calling thread, for the CLI and tests. Never hangs: every
// call returns by the configured deadline, with an error saying which replicas were reachable.
class BlockingClient {
 public:
  explicit BlockingClient(NetworkClientOptions options);
  ~BlockingClient();

  struct Outcome {
    bool ok = false;
    Bytes result;            // when ok
    ReplicaId replied_by{};  // when ok
    std::string error;       // when not ok
    bool busy = false;       // when not ok because the replicas refused it as busy: retry later
    // Byzantine mode, when ok: see CallResult.
    std::optional<ReplyCertificate> certificate;
    std::vector<ClientSession::Dissent> dissent;
  };
  Outcome call(Bytes command);
  // One replica's status; nullopt when it does not answer by the deadline.
  std::optional<StatusReply> status(ReplicaId replica);

 private:
  std::unique_ptr<net::EventLoop> loop_;
  std::unique_ptr<Client> client_;
  ClientId session_{};
  uint64_t deadline_ns_;
};

}  // namespace lockstep
