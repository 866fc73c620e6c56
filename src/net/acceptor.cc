#include "net/acceptor.h"

#include <spdlog/spdlog.h>

#include <vector>

namespace lockstep::net {
namespace {

// Pending connections are checked for the Hello timeout this often, so a silent connection lives
// at most hello_timeout_ns plus this.
constexpr uint64_t kSweepIntervalNs = 250'000'000;
// A flood of connections that never say Hello must not exhaust memory or descriptors.
constexpr size_t kPendingConnectionsMax = 4096;

// An accepted connection's share of connections_max, released when the connection lets go.
class Slot {
 public:
  explicit Slot(std::shared_ptr<size_t> open) : open_(std::move(open)) { ++*open_; }
  ~Slot() { --*open_; }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

 private:
  std::shared_ptr<size_t> open_;
};

}  // namespace

Acceptor::Acceptor(EventLoop& loop, const Address& address, OnHello on_hello,
                   ConnectionLimits limits, uint64_t hello_timeout_ns,
                   AcceptorLimits acceptor_limits)
    : loop_(loop),
      on_hello_(std::move(on_hello)),
      limits_(limits),
      hello_timeout_ns_(hello_timeout_ns),
      acceptor_limits_(acceptor_limits),
      listener_(loop, address,
                [this](int fd, std::string peer) { on_accept(fd, std::move(peer)); }) {
  sweep_timer_ = loop_.schedule_every(kSweepIntervalNs, [this] { expire_silent(); });
}

Acceptor::~Acceptor() {
  loop_.cancel(sweep_timer_);
  for (auto& [raw, pending] : pending_)
    pending.connection->set_handler(nullptr);
}

void Acceptor::on_accept(int fd, std::string peer_name) {
  auto connection = std::make_unique<Connection>(loop_, fd, std::move(peer_name), this, limits_);
  if (*open_ >= acceptor_limits_.connections_max) {
    reject(std::move(connection), std::to_string(*open_) + " connections open (limit " +
                                      std::to_string(acceptor_limits_.connections_max) + ")");
    return;
  }
  if (pending_.size() >= kPendingConnectionsMax) {
    reject(std::move(connection),
           std::to_string(pending_.size()) + " connections have not said Hello yet");
    return;
  }
  connection->hold_slot(std::make_shared<Slot>(open_));
  Connection* raw = connection.get();
  pending_.emplace(raw, Pending{std::move(connection), loop_.now_ns()});
}

void Acceptor::reject(std::unique_ptr<Connection> connection, const std::string& reason) {
  ++rejected_;
  ++rejected_unlogged_;
  // A flood is exactly when one line per connection would flood the log too.
  const uint64_t now = loop_.now_ns();
  if (!reject_logged_ || now - last_reject_log_ns_ >= acceptor_limits_.reject_log_interval_ns) {
    spdlog::warn("rejecting connection from {}: {} ({} rejected since the last message)",
                 connection->peer_name(), reason, rejected_unlogged_);
    reject_logged_ = true;
    last_reject_log_ns_ = now;
    rejected_unlogged_ = 0;
  }
  connection->set_handler(nullptr);
  connection->close(reason);
  // Not inside any of its callbacks: destroying it here is safe.
}

void Acceptor::on_message(Connection& connection, WireMessage&& message) {
  auto it = pending_.find(&connection);
  if (it == pending_.end()) return;
  auto* hello = std::get_if<Hello>(&message);
  if (hello == nullptr) {
    spdlog::warn("closing connection from {}: first frame is not a Hello", connection.peer_name());
    connection.close("first frame is not a Hello");  // on_closed erases it
    return;
  }
  std::unique_ptr<Connection> owned = std::move(it->second.connection);
  pending_.erase(it);
  owned->set_handler(nullptr);
  if (hello->role == PeerRole::kClient) {
    owned->set_output_bytes_max(acceptor_limits_.client_output_bytes_max);
  }
  on_hello_(std::move(owned), *hello);
}

void Acceptor::on_closed(Connection& connection, const std::string& reason) {
  auto it = pending_.find(&connection);
  if (it == pending_.end()) return;
  spdlog::debug("connection from {} closed before its Hello: {}", connection.peer_name(), reason);
  loop_.dispose(std::move(it->second.connection));
  pending_.erase(it);
}

void Acceptor::expire_silent() {
  std::vector<Connection*> expired;
  for (auto& [raw, pending] : pending_) {
    if (loop_.now_ns() - pending.accepted_ns >= hello_timeout_ns_) expired.push_back(raw);
  }
  for (Connection* raw : expired) {
    spdlog::warn("closing connection from {}: no Hello within {} ms", raw->peer_name(),
                 hello_timeout_ns_ / 1'000'000);
    raw->close("no Hello in time");
  }
}

}  // namespace lockstep::net
