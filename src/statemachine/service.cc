#include "statemachine/service.h"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <utility>

#include "core/assert.h"
#include "core/wire.h"

// The snapshot layout is documented in service.h.

namespace lockstep {
namespace {

constexpr std::array<uint8_t, 4> kSnapshotMagic = {'L', 'S', 'S', 'V'};
constexpr uint8_t kSnapshotVersion = 2;
// Smallest encodings, so that forged counts are refused before anything is allocated.
constexpr size_t kSessionBytesMin = 4;  // client, acked_below, last_activity, reply_count
constexpr size_t kReplyBytesMin = 2;    // sequence, empty reply

}  // namespace

Service::Service(std::unique_ptr<StateMachine> machine, ServiceOptions options)
    : machine_(std::move(machine)), options_(options) {
  LOCKSTEP_ASSERT(machine_ != nullptr, "a service needs a state machine");
  LOCKSTEP_ASSERT(options_.sessions_max > 0, "a service needs room for one session");
}

bool Service::idle_at(const Session& session, uint64_t now_us) const {
  return now_us > session.last_activity_us &&
         now_us - session.last_activity_us > options_.session_idle_expiry_us;
}

void Service::forget(std::map<ClientId, Session>::iterator session) {
  by_activity_.erase(ActivityKey{session->second.last_activity_us, session->first});
  sessions_.erase(session);
  ++sessions_expired_;
}

void Service::forget_session_for_testing(ClientId client) {
  auto session = sessions_.find(client);
  if (session == sessions_.end()) return;
  forget(session);
}

std::optional<uint64_t> Service::last_activity_us(ClientId client) const {
  auto session = sessions_.find(client);
  if (session == sessions_.end()) return std::nullopt;
  return session->second.last_activity_us;
}

Service::Session& Service::session_for(ClientId client, uint64_t now_us) {
  // The oldest sessions first, a bounded number, so the cost per request stays constant.
  for (size_t i = 0; i < kExpiriesPerExecuteMax && !by_activity_.empty(); ++i) {
    auto oldest = sessions_.find(by_activity_.begin()->second);
    LOCKSTEP_ASSERT(oldest != sessions_.end(), "activity index names a missing session");
    if (!idle_at(oldest->second, now_us)) break;
    forget(oldest);
  }
  auto it = sessions_.find(client);
  // The requesting client's own session is checked whatever the sweep reached, so what it finds
  // depends on its own idleness only.
  if (it != sessions_.end() && idle_at(it->second, now_us)) {
    forget(it);
    it = sessions_.end();
  }
  if (it == sessions_.end()) {
    if (sessions_.size() >= options_.sessions_max) {
      forget(sessions_.find(by_activity_.begin()->second));
    }
    it = sessions_.emplace(client, Session{}).first;
  } else {
    by_activity_.erase(ActivityKey{it->second.last_activity_us, client});
  }
  it->second.last_activity_us = now_us;
  by_activity_.insert(ActivityKey{now_us, client});
  return it->second;
}

void Service::advance_watermark(Session& session, Sequence acked_below) {
  if (acked_below <= session.acked_below) return;
  session.acked_below = acked_below;
  session.replies.erase(session.replies.begin(), session.replies.lower_bound(acked_below));
}

Service::Result Service::execute(const ClientRequest& request, uint64_t order_time_us,
                                 std::optional<Bytes> system_output) {
  // Order times never go back in the agreed order; should one (the latest activity is part of the
  // replicated state, so this clamp is the same on every replica), time stands still instead.
  const uint64_t now_us =
      by_activity_.empty() ? order_time_us : std::max(order_time_us, by_activity_.rbegin()->first);
  // Every request in the order counts as activity, duplicates and stale ones included: the
  // client is alive and may retry.
  Session& session = session_for(request.client, now_us);
  if (request.sequence < session.acked_below) return Result{Outcome::kStale, {}};

  // A request cannot acknowledge its own reply: the client has not seen it yet (a correct client
  // sends acked_below <= sequence anyway). Clamping keeps a confused client from losing the reply
  // of a request that is still being retried.
  Sequence watermark = std::min(request.acked_below, request.sequence);

  if (auto it = session.replies.find(request.sequence); it != session.replies.end()) {
    Bytes reply = it->second;
    advance_watermark(session, watermark);
    return Result{Outcome::kDuplicate, std::move(reply)};
  }

  Bytes reply = system_output ? std::move(*system_output) : machine_->apply(request.command);
  ++executed_count_;
  advance_watermark(session, watermark);
  session.replies.emplace(request.sequence, reply);

  // A correct client never has more than kRepliesPerClientMax replies it has not acknowledged.
  // One that does loses the oldest: the watermark moves past it, so a retry of that request is
  // stale (dropped, answered by nobody) rather than executed a second time. At-most-once wins
  // over an answer; any older sequence not yet executed is dropped the same way.
  if (session.replies.size() > kRepliesPerClientMax) {
    Sequence evicted = session.replies.begin()->first;
    advance_watermark(session, Sequence{evicted.value + 1});
  }
  LOCKSTEP_ASSERT(session.replies.size() <= kRepliesPerClientMax, "session table over its limit");
  return Result{Outcome::kExecuted, std::move(reply)};
}

std::optional<Bytes> Service::cached_reply(ClientId client, Sequence sequence) const {
  auto session = sessions_.find(client);
  if (session == sessions_.end()) return std::nullopt;
  auto reply = session->second.replies.find(sequence);
  if (reply == session->second.replies.end()) return std::nullopt;
  return reply->second;
}

bool Service::already_executed_or_stale(ClientId client, Sequence sequence) const {
  auto session = sessions_.find(client);
  if (session == sessions_.end()) return false;
  return sequence < session->second.acked_below || session->second.replies.contains(sequence);
}

Bytes Service::snapshot() const {
  Bytes machine = machine_->snapshot();
  Bytes out;
  Writer w(out);
  for (uint8_t b : kSnapshotMagic)
    w.u8(b);
  w.u8(kSnapshotVersion);
  w.varint(sessions_.size());
  for (const auto& [client, session] : sessions_) {
    w.varint(client.value);
    w.varint(session.acked_below.value);
    w.varint(session.last_activity_us);
    w.varint(session.replies.size());
    for (const auto& [sequence, reply] : session.replies) {
      w.varint(sequence.value);
      w.bytes(reply);
    }
  }
  w.varint(executed_count_);
  w.bytes(machine);
  return out;
}

void Service::restore(std::span<const uint8_t> snapshot) {
  Reader r(snapshot);
  for (uint8_t expected : kSnapshotMagic) {
    if (r.u8() != expected || !r.ok()) throw SnapshotError("service snapshot: bad magic");
  }
  uint8_t version = r.u8();
  if (!r.ok() || version != kSnapshotVersion) {
    throw SnapshotError("service snapshot: unknown version");
  }

  // Everything is decoded into temporaries; the service changes only after all of it parsed and
  // the machine accepted its part.
  std::map<ClientId, Session> sessions;
  std::set<ActivityKey> by_activity;
  uint64_t session_count = r.count(kSessionBytesMin);
  if (r.ok() && session_count > options_.sessions_max) {
    throw SnapshotError("service snapshot: more sessions than sessions_max");
  }
  for (uint64_t i = 0; i < session_count && r.ok(); ++i) {
    ClientId client{r.varint()};
    Session session;
    session.acked_below = Sequence{r.varint()};
    session.last_activity_us = r.varint();
    uint64_t reply_count = r.count(kReplyBytesMin);
    if (!r.ok()) break;
    if (reply_count > kRepliesPerClientMax) {
      throw SnapshotError("service snapshot: session over its reply limit");
    }
    if (!sessions.empty() && !(sessions.rbegin()->first < client)) {
      throw SnapshotError("service snapshot: clients not strictly ascending");
    }
    for (uint64_t j = 0; j < reply_count && r.ok(); ++j) {
      Sequence sequence{r.varint()};
      Bytes reply = r.bytes();
      if (!r.ok()) break;
      if (sequence < session.acked_below) {
        throw SnapshotError("service snapshot: cached reply below the watermark");
      }
      if (!session.replies.empty() && !(session.replies.rbegin()->first < sequence)) {
        throw SnapshotError("service snapshot: sequences not strictly ascending");
      }
      session.replies.emplace_hint(session.replies.end(), sequence, std::move(reply));
    }
    by_activity.insert(ActivityKey{session.last_activity_us, client});
    sessions.emplace_hint(sessions.end(), client, std::move(session));
  }
  uint64_t executed_count = r.varint();
  std::span<const uint8_t> machine = r.bytes_view();
  if (!r.ok()) throw SnapshotError("service snapshot: truncated or malformed");
  if (!r.at_end()) throw SnapshotError("service snapshot: trailing bytes");

  // Last, because it is the one step we cannot undo: it throws SnapshotError and keeps its old
  // state on failure (StateMachine contract), and after it succeeds nothing below can fail.
  machine_->restore(machine);
  sessions_.swap(sessions);
  by_activity_.swap(by_activity);
  executed_count_ = executed_count;
  sessions_expired_ = 0;
}

uint64_t Service::digest() const {
  Bytes bytes = snapshot();
  return XXH3_64bits(bytes.data(), bytes.size());
}

}  // namespace lockstep
