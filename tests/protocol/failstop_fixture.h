// A network of failstop cores driven step by step, for the reconfiguration tests
// (docs/DESIGN.md §12): replicas listed in the cluster file, the first of them members of view 0;
// messages delivered each millisecond step; state transfers optionally delayed; crashes, pauses,
// wiped restarts (joiners) and, for durable replicas, restarts from the log kept here.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "protocol/failstop/core.h"

namespace lockstep::failstop::testing {

constexpr uint64_t kMs = 1'000'000;

using Key = std::pair<ClientId, Sequence>;

inline std::vector<ReplicaId> ids(std::initializer_list<uint32_t> values) {
  std::vector<ReplicaId> out;
  for (uint32_t v : values)
    out.push_back(ReplicaId{v});
  return out;
}

class FailstopHarness {
 public:
  // `listed` replicas in the cluster file; the first `members` of them form view 0. Durable
  // replicas keep a log here (their persist records) and can restart from it.
  FailstopHarness(uint32_t listed, uint32_t members, bool durable = false)
      : listed_(listed), durable_(durable) {
    for (uint32_t r = 0; r < members; ++r)
      initial_members_.push_back(ReplicaId{r});
    executed_.resize(listed);
    loaded_at_.assign(listed, 0);
    records_.resize(listed);
    checkpoints_.resize(listed);
    for (uint32_t r = 0; r < listed; ++r)
      cores_.push_back(std::make_unique<Core>(options_for(r, /*join=*/false)));
  }

  Options options_for(uint32_t r, bool join) {
    Options options;
    options.self = ReplicaId{r};
    options.replica_count = listed_;
    options.incarnation = ++incarnations_;
    options.heartbeat_interval_ns = 5 * kMs;
    options.failure_timeout_ns = 100 * kMs;
    options.relay_timeout_ns = 20 * kMs;
    options.view_change_retry_ns = 20 * kMs;
    options.initial_members = initial_members_;
    options.join = join;
    options.durable = durable_;
    return options;
  }

  Core& core(uint32_t r) { return *cores_[r]; }
  Now now() const { return Now{now_ns_, 1'000'000 + now_ns_ / 1000}; }

  void flush() {
    for (uint32_t r = 0; r < listed_; ++r) {
      if (!cores_[r] || paused_.contains(r)) continue;
      for (OrderedEntry& entry : cores_[r]->take_executable())
        executed_[r].push_back({entry.request.client, entry.request.sequence});
      for (auto& send : cores_[r]->take_messages(now())) {
        if (auto* transfer = std::get_if<StateTransfer>(&send.message)) {
          // What the Replica does: the state of this moment, and how far it had executed.
          transfer->protocol_state = cores_[r]->checkpoint_state();
          transfer->service_snapshot = to_bytes(std::to_string(executed_[r].size()));
        }
        queues_[{r, send.to.value}].push_back(std::move(send.message));
      }
      // What a durable runtime does: the step's records go to the log (before its messages
      // leave, which in this harness is the same instant).
      for (auto& record : cores_[r]->take_persist())
        records_[r].push_back(std::move(record));
      cores_[r]->check_invariants();
    }
  }
  // State transfers take this long to arrive (a large state on a slow link).
  void delay_transfers(uint64_t ns) { transfer_delay_ns_ = ns; }

  void deliver(uint32_t from, uint32_t to, ReplicaMessage message) {
    Core* core = cores_[to].get();
    if (core == nullptr) return;
    if (auto* transfer = std::get_if<StateTransfer>(&message)) {
      if (!core->awaits_state()) return;
      core->load_state(now(), *transfer);
      const std::string executed(transfer->service_snapshot.begin(),
                                 transfer->service_snapshot.end());
      loaded_at_[to] = std::stoull(executed);
      executed_[to].clear();
      // A durable joiner checkpoints the loaded state before anything else (Output::loaded_state).
      checkpoints_[to] = core->checkpoint_state();
      records_[to].clear();
      ++loads_;
      return;
    }
    core->on_message(now(), ReplicaId{from}, message);
  }
  // A paused process: it takes no input (what is sent to it waits) and sends nothing.
  void pause(uint32_t r) { paused_.insert(r); }
  void resume(uint32_t r) { paused_.erase(r); }

  void step() {
    now_ns_ += kMs;
    for (uint32_t r = 0; r < listed_; ++r) {
      if (cores_[r] && !paused_.contains(r)) cores_[r]->tick(now());
    }
    flush();
    for (auto& [pair, queue] : queues_) {
      if (paused_.contains(pair.second) || paused_.contains(pair.first)) continue;
      while (!queue.empty()) {
        ReplicaMessage message = std::move(queue.front());
        queue.pop_front();
        if (std::holds_alternative<StateTransfer>(message) && transfer_delay_ns_ != 0) {
          in_transit_.push_back({now_ns_ + transfer_delay_ns_, pair, std::move(message)});
          continue;
        }
        deliver(pair.first, pair.second, std::move(message));
      }
    }
    for (auto it = in_transit_.begin(); it != in_transit_.end();) {
      if (it->arrival_ns > now_ns_) {
        ++it;
        continue;
      }
      deliver(it->route.first, it->route.second, std::move(it->message));
      it = in_transit_.erase(it);
    }
    flush();
  }
  void run_for(uint64_t ns) {
    for (uint64_t t = 0; t < ns; t += kMs)
      step();
  }
  // Runs until `member` has installed the view that adds `joiner` (at most 200 steps).
  void run_until_member(uint32_t member, uint32_t joiner) {
    for (int i = 0; i < 200 && !core(member).is_member(ReplicaId{joiner}); ++i)
      step();
  }
  void submit(uint64_t client, uint64_t sequence) {
    const ClientRequest r{ClientId{client}, Sequence{sequence}, Sequence{1}, to_bytes("c"), {}};
    for (auto& core : cores_) {
      if (core && core->serving()) core->on_client_request(now(), r);
    }
  }
  std::string admin(uint32_t at, MembershipChange change, uint32_t replica) {
    return cores_[at]->change_membership(now(), change, ReplicaId{replica});
  }
  // The process dies: whatever was queued to or from it is lost, state transfers included.
  void crash(uint32_t r) {
    cores_[r].reset();
    for (auto& [pair, queue] : queues_) {
      if (pair.first == r || pair.second == r) queue.clear();
    }
    std::erase_if(in_transit_,
                  [&](const InTransit& t) { return t.route.first == r || t.route.second == r; });
  }
  // A new process without state (a wiped disk), asking to join.
  void start_joiner(uint32_t r) {
    cores_[r] = std::make_unique<Core>(options_for(r, /*join=*/true));
    executed_[r].clear();
    loaded_at_[r] = 0;
  }
  // Crash and restart from the disk (durable): its checkpoint, if any, and its log after it.
  void restart_durable(uint32_t r) {
    crash(r);
    cores_[r] = std::make_unique<Core>(options_for(r, /*join=*/false));
    cores_[r]->recover(checkpoints_[r], records_[r]);
    // Recovery re-executes everything after the checkpoint: count from there.
    executed_[r].clear();
    if (checkpoints_[r].empty()) loaded_at_[r] = 0;
  }

  // Members execute the same sequence, the reference's; a joiner exactly the part after what it
  // loaded. With `include_halted`, halted replicas too must have run a stretch of it.
  void expect_agreement(uint32_t reference, uint64_t total, bool include_halted = false) {
    const std::vector<Key>& all = executed_[reference];
    EXPECT_EQ(all.size(), total);
    for (uint32_t r = 0; r < listed_; ++r) {
      if (!cores_[r]) continue;
      if (!cores_[r]->serving() && !(include_halted && cores_[r]->halted())) continue;
      const size_t from = loaded_at_[r];
      const size_t common = std::min(executed_[r].size(), all.size() - std::min(from, all.size()));
      EXPECT_TRUE(std::equal(executed_[r].begin(),
                             executed_[r].begin() + static_cast<ptrdiff_t>(common),
                             all.begin() + static_cast<ptrdiff_t>(from)))
          << "replica " << r << " diverges from replica " << reference;
      EXPECT_LE(from + executed_[r].size(), all.size()) << "replica " << r << " is ahead";
      if (cores_[r]->serving()) {
        EXPECT_EQ(from + executed_[r].size(), all.size()) << "replica " << r << " is behind";
      }
    }
  }
  int loads() const { return loads_; }
  // The requests replica r ran, each once, where it first came in its order (what its session
  // table makes of a request ordered twice); for replicas that started from scratch.
  std::vector<Key> effective(uint32_t r) const {
    std::vector<Key> out;
    std::set<Key> seen;
    for (const Key& key : executed_[r]) {
      if (seen.insert(key).second) out.push_back(key);
    }
    return out;
  }

 private:
  struct InTransit {
    uint64_t arrival_ns;
    std::pair<uint32_t, uint32_t> route;
    ReplicaMessage message;
  };

  uint32_t listed_;
  bool durable_;
  std::vector<ReplicaId> initial_members_;
  uint64_t incarnations_ = 1000;
  std::vector<std::unique_ptr<Core>> cores_;
  std::map<std::pair<uint32_t, uint32_t>, std::deque<ReplicaMessage>> queues_;
  std::vector<std::vector<Key>> executed_;
  std::vector<size_t> loaded_at_;
  std::vector<std::vector<OrderingCore::PersistRecord>> records_;
  std::vector<Bytes> checkpoints_;
  int loads_ = 0;
  std::set<uint32_t> paused_;
  uint64_t now_ns_ = 10 * kMs;
  uint64_t transfer_delay_ns_ = 0;
  std::vector<InTransit> in_transit_;
};

}  // namespace lockstep::failstop::testing
