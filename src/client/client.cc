#include "client/client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <utility>

#include "core/assert.h"
#include "crypto/signing.h"

namespace lockstep {

Client::Client(net::EventLoop& loop, NetworkClientOptions options)
    : loop_(loop), options_(std::move(options)), random_(std::random_device{}()) {
  LOCKSTEP_ASSERT(!options_.replicas.empty(), "a client needs at least one replica address");
  options_.session.replica_count = static_cast<uint32_t>(options_.replicas.size());
  options_.session.signer = options_.signer;
  if (options_.verifier != nullptr) {
    LOCKSTEP_ASSERT(options_.verifier->replica_count() == options_.replicas.size(),
                    "the verifier must know every replica's key");
    // The cluster's verifier knows the administrator's key too when the file names one
    // (runtime/config.h, key_directory).
    if (options_.session.membership_verifier == nullptr) {
      options_.session.membership_verifier = options_.verifier;
    }
  }
  std::vector<ReplicaId> initial = options_.session.initial_members;
  if (initial.empty()) {
    for (uint32_t r = 0; r < options_.session.replica_count; ++r)
      initial.push_back(ReplicaId{r});
  }
  membership_ = std::make_unique<MembershipLearner>(
      std::move(initial), options_.session.reply_quorum - 1, options_.session.replica_count,
      options_.session.membership_verifier);
  incarnation_ = 0;
  while (incarnation_ == 0)
    incarnation_ = random_();
  links_.resize(options_.replicas.size());
  for (size_t r = 0; r < links_.size(); ++r) {
    links_[r].address = options_.replicas[r];
    links_[r].backoff_ns = options_.reconnect_backoff_min_ns;
    dial(r);
  }
  tick_timer_ = loop_.schedule_every(options_.tick_interval_ns, [this] { tick(); });
  hook_ = loop_.add_iteration_hook([this] { after_iteration(); });
}

Client::~Client() {
  loop_.cancel(tick_timer_);
  loop_.remove_iteration_hook(hook_);
  for (ReplicaLink& link : links_) {
    loop_.cancel(link.reconnect_timer);
    if (link.connection) link.connection->set_handler(nullptr);
  }
}

ClientId Client::fresh_id() {
  for (;;) {
    // Byzantine mode: the replicas check each request's signature under the key of the
    // principal its client id names, so only the low 32 bits are free.
    ClientId id = options_.verifier != nullptr
                      ? client_id_of(options_.principal, static_cast<uint32_t>(random_()))
                      : ClientId{random_()};
    if (id.value != 0 && !sessions_.contains(id.value)) return id;
  }
}

ClientId Client::open_session() {
  LOCKSTEP_ASSERT(sessions_.size() < options_.sessions_max, "too many client sessions");
  ClientId id = fresh_id();
  auto session = std::make_unique<Session>(id, options_.session);
  session->core.adopt_schedule(membership_->schedule());
  sessions_.emplace(id.value, std::move(session));
  return id;
}

void Client::close_session(ClientId session) {
  auto it = sessions_.find(session.value);
  if (it == sessions_.end()) return;
  if (it->second->dirty) {
    std::replace(dirty_.begin(), dirty_.end(), it->second.get(), static_cast<Session*>(nullptr));
    std::replace(collecting_.begin(), collecting_.end(), it->second.get(),
                 static_cast<Session*>(nullptr));
  }
  sessions_.erase(it);
  if (has_default_session_ && default_session_ == session) has_default_session_ = false;
}

bool Client::submit(ClientId session, Bytes command, Callback callback) {
  auto it = sessions_.find(session.value);
  if (it == sessions_.end()) return false;
  Session& state = *it->second;
  if (!state.core.can_submit()) return false;
  Sequence sequence = state.core.submit(loop_.now_ns(), std::move(command));
  LOCKSTEP_ASSERT(sequence.value == state.first_sequence + state.callbacks.size(),
                  "ClientSession numbers requests densely");
  state.callbacks.push_back(std::move(callback));
  mark_dirty(state);
  return true;
}

bool Client::submit(Bytes command, Callback callback) {
  if (!has_default_session_) {
    default_session_ = open_session();
    has_default_session_ = true;
  }
  return submit(default_session_, std::move(command), std::move(callback));
}

void Client::request_status(ReplicaId replica, StatusCallback callback) {
  LOCKSTEP_ASSERT(replica.value < links_.size(), "status of a replica outside the cluster");
  const uint64_t nonce = next_nonce_++;
  statuses_.emplace(
      nonce, PendingStatus{loop_.now_ns() + options_.session.deadline_ns, std::move(callback)});
  ReplicaLink& link = links_[replica.value];
  // Queued even while connecting; a connection that fails loses it and the deadline answers.
  if (link.connection && link.connection->is_open()) link.connection->send(StatusRequest{nonce});
}

size_t Client::outstanding(ClientId session) const {
  auto it = sessions_.find(session.value);
  return it == sessions_.end() ? 0 : it->second->core.outstanding();
}

size_t Client::connected_replicas() const {
  return static_cast<size_t>(std::count_if(links_.begin(), links_.end(), [](const auto& link) {
    return link.connection && link.hello_received;
  }));
}

std::string Client::connection_summary() const {
  std::string summary;
  for (size_t r = 0; r < links_.size(); ++r) {
    const ReplicaLink& link = links_[r];
    if (!summary.empty()) summary += "; ";
    summary += "replica " + std::to_string(r) + " at " + net::format_address(link.address) + ": ";
    summary += link.connection && link.hello_received ? "connected" : link.last_error;
  }
  return summary;
}

void Client::mark_dirty(Session& session) {
  if (session.dirty) return;
  session.dirty = true;
  dirty_.push_back(&session);
}

void Client::tick() {
  const uint64_t now = loop_.now_ns();
  for (auto it = statuses_.begin(); it != statuses_.end();) {
    if (now < it->second.deadline_ns) {
      ++it;
      continue;
    }
    status_results_.emplace_back(std::move(it->second.callback), std::nullopt);
    it = statuses_.erase(it);
  }
  for (auto& [id, session] : sessions_) {
    if (session->core.outstanding() == 0) continue;
    session->core.tick(now);
    mark_dirty(*session);
  }
}

// Sends and completions are collected once per iteration, so that everything submitted in one
// iteration reaches each connection's buffer before the loop's single write per connection.
void Client::after_iteration() {
  if (!status_results_.empty()) {
    auto results = std::move(status_results_);
    status_results_.clear();
    for (auto& [callback, reply] : results)
      callback(std::move(reply));
  }
  // Callbacks may submit again (a closed-loop workload does), which dirties sessions anew: keep
  // going until nothing is left, still before this iteration's flush.
  while (!dirty_.empty()) {
    collecting_.swap(dirty_);
    for (size_t i = 0; i < collecting_.size(); ++i) {
      Session* session = collecting_[i];
      if (session == nullptr) continue;  // closed meanwhile
      session->dirty = false;
      for (ClientSession::Send& send : session->core.take_sends()) {
        ReplicaLink& link = links_[send.to.value];
        if (link.connection && link.connection->is_open()) {
          link.connection->send(WireMessage(std::move(send.request)));
        }
      }
      std::vector<ClientSession::Completion> completions = session->core.take_completions();
      for (ClientSession::Completion& completion : completions) {
        const uint64_t slot = completion.sequence.value - session->first_sequence;
        LOCKSTEP_ASSERT(slot < session->callbacks.size() && session->callbacks[slot],
                        "each request completes once");
        Callback callback = std::move(session->callbacks[slot]);
        session->callbacks[slot] = nullptr;
        while (!session->callbacks.empty() && !session->callbacks.front()) {
          session->callbacks.pop_front();
          ++session->first_sequence;
        }
        CallResult result;
        switch (completion.status) {
          case ClientSession::Status::kOk:
            result.status = CallResult::Status::kOk;
            break;
          case ClientSession::Status::kTimedOut:
            result.status = CallResult::Status::kTimedOut;
            break;
          case ClientSession::Status::kBusy:
            result.status = CallResult::Status::kBusy;
            break;
        }
        result.result = std::move(completion.result);
        result.replied_by = completion.replied_by;
        result.certificate = std::move(completion.certificate);
        result.dissent = std::move(completion.dissent);
        // The callback may close this very session: nothing of it is touched afterwards.
        const ClientId id = session->core.id();
        callback(std::move(result));
        if (!sessions_.contains(id.value)) {
          session = nullptr;
          break;
        }
      }
    }
    collecting_.clear();
  }
}

void Client::dial(size_t replica) {
  ReplicaLink& link = links_[replica];
  link.reconnect_timer = 0;
  link.hello_received = false;
  link.connection = net::Connection::dial(loop_, link.address, this);
  link.connection->set_peer_name("replica " + std::to_string(replica) + " at " +
                                 net::format_address(link.address));
  link.connection->send(Hello{PeerRole::kClient, incarnation_, incarnation_, 0});
}

Client::ReplicaLink* Client::link_of(net::Connection& connection) {
  for (ReplicaLink& link : links_) {
    if (link.connection.get() == &connection) return &link;
  }
  return nullptr;
}

void Client::on_connected(net::Connection& /*connection*/) {}

void Client::on_message(net::Connection& connection, WireMessage&& message) {
  ReplicaLink* link = link_of(connection);
  if (link == nullptr) return;
  const size_t replica = static_cast<size_t>(link - links_.data());
  if (auto* batch = std::get_if<SignedReplies>(&message)) {
    if (options_.verifier != nullptr) on_signed_replies(replica, *batch);
    return;
  }
  if (auto* reply = std::get_if<ClientReply>(&message)) {
    // Byzantine mode: an unsigned reply proves nothing and is not counted.
    if (options_.verifier != nullptr) return;
    auto it = sessions_.find(reply->client.value);
    if (it == sessions_.end()) return;  // a closed session, or a late reply to one
    it->second->core.on_reply(loop_.now_ns(), *reply);
    mark_dirty(*it->second);
    return;
  }
  if (auto* status = std::get_if<StatusReply>(&message)) {
    auto it = statuses_.find(status->nonce);
    if (it == statuses_.end() || status->replica.value != replica) return;
    // Called from the iteration hook like every other callback, not from inside the read.
    status_results_.emplace_back(std::move(it->second.callback), std::move(*status));
    statuses_.erase(it);
    return;
  }
  if (auto* hello = std::get_if<Hello>(&message)) {
    if (hello->role != PeerRole::kReplica || hello->id != replica) {
      spdlog::warn("{} introduced itself as {} {}; wrong address in the configuration?",
                   connection.peer_name(),
                   hello->role == PeerRole::kReplica ? "replica" : "a client", hello->id);
      connection.close("the replica at this address has another id");
      return;
    }
    link->hello_received = true;
    link->backoff_ns = options_.reconnect_backoff_min_ns;
    return;
  }
  connection.close("unexpected frame from a replica");
}

void Client::on_signed_replies(size_t replica, SignedReplies& batch) {
  // Checked once for the whole batch (one signature per batch is what makes signed replies
  // affordable); verify_replies also refuses replies that name another replica than the signer.
  const bool relabelled = batch.replica.value != replica;
  ReplyProof proof;
  if (relabelled || !crypto::verify_replies(*options_.verifier, batch, &proof.batch_digests)) {
    ++bad_reply_batches_;
    // A faulty replica can send these at line rate: warn at the 1st, 2nd, 4th, 8th... only.
    if (std::has_single_bit(bad_reply_batches_)) {
      spdlog::warn("dropped a batch of {} replies from replica {}: {} ({} bad batches so far)",
                   batch.replies.size(), replica,
                   relabelled
                       ? "it claims to come from replica " + std::to_string(batch.replica.value)
                       : std::string("the signature does not verify"),
                   bad_reply_batches_);
    }
    return;
  }
  if (batch.membership_changes.size() > membership_->schedule().proofs().size()) {
    learn_membership(replica, batch.membership_changes);
  }
  // One proof object for the batch (its digests came out of the check); only its index and
  // epoch change per reply. A session copies it when it keeps the reply as a vote.
  proof.replica = batch.replica;
  proof.signature = batch.signature;
  const uint64_t now = loop_.now_ns();
  for (size_t i = 0; i < batch.replies.size(); ++i) {
    const ClientReply& reply = batch.replies[i];
    auto it = sessions_.find(reply.client.value);
    if (it == sessions_.end()) continue;  // a closed session, or a late reply to one
    proof.index = static_cast<uint32_t>(i);
    proof.epoch = reply.epoch;
    it->second->core.on_reply(now, reply, &proof);
    mark_dirty(*it->second);
  }
}

void Client::learn_membership(size_t replica, const std::vector<ClientRequest>& changes) {
  // Learnt once here, then handed to every session: signatures are the expensive part.
  const uint64_t refused_before = membership_->refused();
  const bool grew = membership_->offer(ReplicaId{static_cast<uint32_t>(replica)}, changes);
  const uint64_t refused = membership_->refused();
  // A faulty replica can send these on every batch: warn at the 1st, 2nd, 4th, 8th... only.
  if (refused != refused_before && std::bit_floor(refused) > refused_before) {
    spdlog::warn("replica {} sent membership changes that were refused ({}; {} so far)", replica,
                 options_.session.membership_verifier == nullptr
                     ? std::string("this client has no administrator key to check them with")
                     : std::string("malformed, contradicting a known epoch, or a second change "
                                   "for one epoch"),
                 refused);
  }
  if (!grew) return;
  const Schedule& schedule = membership_->schedule();
  const Configuration& latest = schedule.latest();
  std::string members;
  for (ReplicaId member : latest.members)
    members += (members.empty() ? "" : ", ") + std::to_string(member.value);
  spdlog::info(
      "learnt epoch {} (t+1 members vouched; the last from replica {}): members [{}] "
      "from {} us (t = {})",
      latest.epoch, replica, members, latest.from_us, latest.t);
  for (auto& [id, session] : sessions_) {
    if (session->core.adopt_schedule(schedule)) mark_dirty(*session);
  }
}

void Client::on_closed(net::Connection& connection, const std::string& reason) {
  ReplicaLink* link = link_of(connection);
  if (link == nullptr) return;
  const size_t replica = static_cast<size_t>(link - links_.data());
  spdlog::debug("connection to replica {} closed: {}", replica, reason);
  link->last_error = reason;
  link->hello_received = false;
  loop_.dispose(std::move(link->connection));
  const uint64_t delay_ns = link->backoff_ns;
  link->backoff_ns = std::min(link->backoff_ns * 2, options_.reconnect_backoff_max_ns);
  link->reconnect_timer = loop_.schedule(delay_ns, [this, replica] { dial(replica); });
}

BlockingClient::BlockingClient(NetworkClientOptions options)
    : loop_(std::make_unique<net::EventLoop>()),
      client_(std::make_unique<Client>(*loop_, options)),
      deadline_ns_(options.session.deadline_ns) {
  session_ = client_->open_session();
}

BlockingClient::~BlockingClient() {
  // The client unregisters from the loop, so it goes first.
  client_.reset();
  loop_.reset();
}

std::optional<StatusReply> BlockingClient::status(ReplicaId replica) {
  std::optional<StatusReply> answer;
  bool done = false;
  client_->request_status(replica, [&](std::optional<StatusReply> reply) {
    answer = std::move(reply);
    done = true;
    loop_->stop();
  });
  // The client's deadline answers every request; the loop cannot stop before `done`.
  while (!done)
    loop_->run();
  return answer;
}

BlockingClient::Outcome BlockingClient::call(Bytes command) {
  Outcome outcome;
  bool done = false;
  const bool submitted = client_->submit(session_, std::move(command), [&](CallResult result) {
    done = true;
    if (result.ok()) {
      outcome.ok = true;
      outcome.result = std::move(result.result);
      outcome.replied_by = result.replied_by;
      outcome.certificate = std::move(result.certificate);
      outcome.dissent = std::move(result.dissent);
    } else if (result.status == CallResult::Status::kBusy) {
      outcome.busy = true;
      outcome.error = "busy, retry later: replica " + std::to_string(result.replied_by.value) +
                      " refused the request (a server limit was reached) until the deadline of " +
                      std::to_string(deadline_ns_ / 1'000'000) +
                      " ms; it most likely did not execute";
    } else {
      outcome.error = "no replica answered within " + std::to_string(deadline_ns_ / 1'000'000) +
                      " ms (" + client_->connection_summary() + ")";
    }
    loop_->stop();
  });
  LOCKSTEP_ASSERT(submitted, "a blocking client has at most one request in flight");
  // The session's deadline completes the call; this timer is a second line of defence so that
  // call() returns even if that logic failed to.
  net::EventLoop::TimerId guard = loop_->schedule(deadline_ns_ + 1'000'000'000, [&] {
    if (done) return;
    outcome.error = "no answer by the deadline and the session did not time out (" +
                    client_->connection_summary() + ")";
    // The abandoned callback refers to this call's locals: drop it with its session.
    client_->close_session(session_);
    session_ = client_->open_session();
    loop_->stop();
  });
  loop_->run();
  loop_->cancel(guard);
  return outcome;
}

}  // namespace lockstep
