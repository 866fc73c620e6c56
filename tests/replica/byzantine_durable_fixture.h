// Three durable byzantine Replicas (t = 1; docs/DESIGN.md §11.8) on an instant network, each with
// a "disk" that keeps exactly what the runtime would: every step's log records (synced before the
// step's messages and replies leave) and checkpoints. A crash keeps the disk and loses everything
// else. A test can play a faulty replica or a bad network through `filter_`.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "../protocol/byzantine_fixture.h"
#include "apps/kv/kv_machine.h"
#include "replica/replica.h"

namespace lockstep::byzantine::testing {

class DurableCluster : public ByzantineFixture {
 protected:
  static constexpr uint64_t kCertifyIntervalUs = 2'000;
  static constexpr uint64_t kCheckpointIntervalUs = 50'000;
  static constexpr uint32_t kReplicas = 3;

  struct Disk {
    Replica::CheckpointData checkpoint;
    std::vector<OrderingCore::PersistRecord> records;
  };

  std::unique_ptr<Replica> make(uint32_t self, std::vector<ReplicaId> excused = {}) const {
    byzantine::Options options = options_for(self);
    options.checkpoint_interval_us = kCheckpointIntervalUs;
    options.certify_interval_us = kCertifyIntervalUs;
    options.recovery_excused = std::move(excused);
    return std::make_unique<Replica>(options, std::make_unique<kv::KvMachine>());
  }

  void start() {
    for (uint32_t r = 0; r < kReplicas; ++r) {
      replicas_.push_back(make(r));
      disks_.emplace_back();
      up_.push_back(true);
    }
  }

  // The process dies; a new one rebuilds itself from the disk.
  void restart(uint32_t r, std::vector<ReplicaId> excused = {}) {
    replicas_[r] = make(r, std::move(excused));
    replicas_[r]->recover(disks_[r].checkpoint, disks_[r].records);
    up_[r] = true;
  }

  void crash_all() {
    for (uint32_t r = 0; r < kReplicas; ++r)
      up_[r] = false;
  }

  // Every replica dies at once and comes back from its disk.
  void crash_and_restart_all() {
    crash_all();
    for (uint32_t r = 0; r < kReplicas; ++r)
      restart(r);
  }

  void checkpoint(uint32_t r) {
    disks_[r].checkpoint = replicas_[r]->checkpoint();
    disks_[r].records.clear();
  }

  // A message from `from` arriving at `to` now (a test's own, as a faulty replica's).
  void deliver(uint32_t from, uint32_t to, ReplicaMessage message) {
    if (up_[to]) replicas_[to]->on_peer_message(at(now_us_), ReplicaId{from}, std::move(message));
  }

  void step() {
    now_us_ += 500;
    if (before_step_) before_step_();
    for (uint32_t r = 0; r < kReplicas; ++r) {
      if (up_[r]) replicas_[r]->tick(at(now_us_));
    }
    for (int round = 0; round < 4; ++round) {
      for (uint32_t r = 0; r < kReplicas; ++r) {
        if (!up_[r]) continue;
        Replica::Output out = replicas_[r]->take_output();
        // The runtime's order: a loaded (or recovered) state is checkpointed before the step's
        // records, and the records are durable before anything leaves.
        if (out.loaded_state) checkpoint(r);
        for (auto& record : out.persist)
          disks_[r].records.push_back(std::move(record));
        for (const ClientReply& reply : out.to_clients) {
          if (reply.status == ReplyStatus::kOk) replies_[reply.client].insert(reply.replica.value);
        }
        for (auto& send : out.to_peers) {
          const uint32_t to = send.to.value;
          if (filter_ && !filter_(r, to, send.message)) continue;
          deliver(r, to, std::move(send.message));
        }
      }
    }
    ++steps_;
    const bool every_step = checkpoint_every_step_;
    if (every_step || steps_ % 97 == 0) {
      for (uint32_t r = 0; r < kReplicas; ++r) {
        if (up_[r] && (every_step || replicas_[r]->serving())) checkpoint(r);
      }
    }
  }

  void run(int steps) {
    for (int s = 0; s < steps; ++s)
      step();
  }

  // A put by a session of its own, to every replica (the client broadcasts).
  ClientId put(const std::string& key) {
    const uint32_t session = ++sessions_;
    ClientRequest r = request(session, 1, "");
    kv::Command command;
    command.op = kv::Op::kPut;
    command.key = key;
    command.value = "value of " + key;
    r.command = kv::encode_command(command);
    crypto::sign_request(*client_signer_, r);
    for (uint32_t i = 0; i < kReplicas; ++i) {
      if (up_[i]) replicas_[i]->on_client_request(at(now_us_), r);
    }
    return r.client;
  }

  void run_load(int puts) {
    for (int i = 0; i < puts; ++i) {
      put("k" + std::to_string(sessions_));
      run(3);
    }
  }

  // Requests a client accepted: t+1 = 2 replicas replied Ok.
  std::vector<ClientId> acknowledged() const {
    std::vector<ClientId> out;
    for (const auto& [client, from] : replies_) {
      if (from.size() >= 2) out.push_back(client);
    }
    return out;
  }

  bool all_serving() const {
    return std::all_of(replicas_.begin(), replicas_.end(),
                       [](const auto& r) { return r->serving(); });
  }

  void run_until_serving(int steps_max) {
    for (int s = 0; s < steps_max && !all_serving(); ++s)
      step();
  }

  void expect_nothing_acknowledged_lost(const std::vector<ClientId>& acked) {
    for (uint32_t r = 0; r < kReplicas; ++r) {
      for (ClientId client : acked) {
        EXPECT_TRUE(replicas_[r]->service().already_executed_or_stale(client, Sequence{1}))
            << "r" << r << " lost the acknowledged put of client " << client.value;
      }
    }
  }

  void expect_alike() {
    run(200);  // past every decision time
    for (uint32_t r = 1; r < kReplicas; ++r) {
      EXPECT_EQ(replicas_[r]->service().digest(), replicas_[0]->service().digest()) << "r" << r;
    }
  }

  std::vector<std::unique_ptr<Replica>> replicas_;
  std::vector<Disk> disks_;
  std::vector<bool> up_;
  // (from, to, message) -> deliver it? It may rewrite the message.
  std::function<bool(uint32_t from, uint32_t to, ReplicaMessage&)> filter_;
  std::function<void()> before_step_;
  bool checkpoint_every_step_ = false;
  std::map<ClientId, std::set<uint32_t>> replies_;
  uint64_t now_us_ = 1'000'000;
  uint64_t steps_ = 0;
  uint32_t sessions_ = 0;
};

}  // namespace lockstep::byzantine::testing
