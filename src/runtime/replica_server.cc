#include "runtime/replica_server.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <map>
#include <random>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "apps/kv/kv_machine.h"
#include "core/codec.h"
#include "crypto/signing.h"
#include "storage/posix_storage.h"

namespace lockstep::runtime {
namespace {

// Reply routes for client ids are dropped with their connection; this bounds them in between,
// against one connection cycling through client ids without end.
constexpr size_t kReplyRoutesMax = 1 << 20;

// A byzantine replica catching up waits this long at most for every peer to connect before it
// takes its first input (peers redial with a backoff of up to 1 s, net/peer_channel.h).
constexpr uint64_t kCatchUpConnectWaitNs = 3'000'000'000;

// What a replica that lies puts in place of the real result (Misbehaviour::kWrongOutput).
constexpr std::string_view kLieSuffix = "!lie";

ClusterConfig checked(ClusterConfig config, ReplicaId self, const ReplicaServerOptions& options) {
  if (self.value >= config.replica_count()) {
    throw std::runtime_error("replica id " + std::to_string(self.value) +
                             " is not in the configuration (ids 0.." +
                             std::to_string(config.replica_count() - 1) + ")");
  }
  if (config.mode == Mode::kFailstop && options.misbehave != Misbehaviour::kNone) {
    // The failstop model has no room for a replica that lies: its clients take the first reply.
    throw std::runtime_error("--misbehave is for byzantine clusters; this one is failstop");
  }
  if (config.mode == Mode::kByzantine) {
    if (!options.keys) {
      throw std::runtime_error("byzantine mode: replica " + std::to_string(self.value) +
                               " needs its key file (lockstep replica --key FILE)");
    }
    const crypto::PublicKey& expected = config.replicas[self.value].public_key.value();
    if (options.keys->public_key != expected) {
      throw std::runtime_error("byzantine mode: the key file's public key " +
                               crypto::to_hex(options.keys->public_key) + " is not replica " +
                               std::to_string(self.value) + "'s public_key in the configuration (" +
                               crypto::to_hex(expected) + "): wrong key file or wrong --id");
    }
  }
  return config;
}

}  // namespace

std::string_view misbehaviour_name(Misbehaviour misbehaviour) {
  switch (misbehaviour) {
    case Misbehaviour::kNone:
      return "none";
    case Misbehaviour::kWrongOutput:
      return "wrong-output";
    case Misbehaviour::kSilent:
      return "silent";
  }
  return "?";
}

std::optional<Misbehaviour> parse_misbehaviour(std::string_view name) {
  for (Misbehaviour m : {Misbehaviour::kNone, Misbehaviour::kWrongOutput, Misbehaviour::kSilent}) {
    if (misbehaviour_name(m) == name) return m;
  }
  return std::nullopt;
}

uint64_t random_incarnation() {
  std::random_device device;
  uint64_t value = 0;
  while (value == 0)
    value = (uint64_t{device()} << 32) ^ device();
  return value;
}

ReplicaServer::ReplicaServer(net::EventLoop& loop, ClusterConfig config, ReplicaId self,
                             ReplicaServerOptions options)
    : loop_(loop),
      config_(checked(std::move(config), self, options)),
      self_(self),
      options_(options),
      incarnation_(options.incarnation != 0 ? options.incarnation : random_incarnation()) {
  // The disk first: whether --join applies depends on whether it holds a state. Before
  // listening: a replica whose disk cannot be recovered must not take any input.
  std::optional<storage::StoreRecovery> recovery;
  if (config_.storage.enabled()) recovery = open_store();
  // --join counts only for a replica without a state of its own (either mode): one with a state
  // on its disk recovers it (a failstop one asks to join by itself if that state says it was
  // removed; a byzantine one catches up from there).
  const bool has_state = recovery && config_.storage.durable() && !recovery->fresh;
  if (options_.join && has_state) {
    spdlog::warn("--join ignored: {} holds this replica's state, which it recovers",
                 config_.storage.replica_dir(self_).string());
  }
  if (config_.mode == Mode::kByzantine) {
    signer_ = crypto::make_signer(crypto::Scheme::kEd25519, *options_.keys);
    verifier_ = crypto::make_verifier(crypto::Scheme::kEd25519, config_.key_directory());
    byzantine::Options core = config_.byzantine_options(self_, signer_.get(), verifier_.get());
    core.join = options_.join && !has_state;
    core.recovery_excused = options_.recover_without;
    // See ReplicaServer::inputs_open_: recovered from its disk, the replica is catching up as
    // much as one that starts with nothing, and must see every instance from its first input.
    inputs_open_ = !core.join && !has_state;
    replica_ = std::make_unique<Replica>(core, std::make_unique<kv::KvMachine>(),
                                         config_.replica_limits());
  } else {
    failstop::Options core = config_.failstop_options(self_, incarnation_);
    core.join = options_.join && !has_state;
    replica_ = std::make_unique<Replica>(core, std::make_unique<kv::KvMachine>(),
                                         config_.replica_limits());
  }
  // The secret key now lives in the signer only.
  options_.keys.reset();
  if (recovery) rebuild_from_disk(*recovery);
  channels_.resize(config_.replica_count());
  for (const ReplicaConfig& peer : config_.replicas) {
    if (peer.id == self_) continue;
    net::PeerChannelOptions channel;
    channel.self = self_;
    channel.peer = peer.id;
    channel.incarnation = incarnation_;
    channel.resend_bytes_max = static_cast<size_t>(config_.limits.peer_resend_bytes_max);
    // The lower id of each pair dials (net/peer_channel.h).
    if (self_ < peer.id) channel.dial_address = peer.address;
    channels_[peer.id.value] = std::make_unique<net::PeerChannel>(
        loop_, std::move(channel), [this](ReplicaId from, ReplicaMessage&& message) {
          if (!inputs_open_) {
            ++inputs_dropped_;  // before this replica's first input: it does not take part yet
            return;
          }
          replica_->on_peer_message(now(), from, std::move(message));
        });
  }
  acceptor_ = std::make_unique<net::Acceptor>(
      loop_, config_.replicas[self_.value].address,
      [this](std::unique_ptr<net::Connection> connection, const Hello& hello) {
        on_hello(std::move(connection), hello);
      },
      net::ConnectionLimits{}, net::kHelloTimeoutNsDefault, config_.acceptor_limits());
  spdlog::info("replica {} of {} ({} mode, t = {}) listening on {}, incarnation {:016x}",
               self_.value, config_.replica_count(), mode_name(config_.mode), config_.t,
               net::format_address(config_.replicas[self_.value].address), incarnation_);
  if (config_.mode == Mode::kByzantine) {
    const byzantine::Options& byzantine = replica_->byzantine_core()->options();
    spdlog::info(
        "byzantine timing: delta {} us, epsilon {} us, relay timeout {} us, decision "
        "{} us after a proposal's timestamp, checkpoint every {} us, {}",
        byzantine.delta_us, byzantine.epsilon_us, byzantine.relay_timeout_us,
        replica_->byzantine_core()->decision_time_us(0), byzantine.checkpoint_interval_us,
        byzantine.certify_interval_us == 0
            ? std::string("not durable")
            : fmt::format("durable, certifying the synced order every {} us",
                          byzantine.certify_interval_us));
    if (byzantine.join) {
      spdlog::info(
          "restarted without its state (--join): catching up. It takes part in the protocol "
          "from now on but executes nothing and serves no client until it has loaded the "
          "snapshot of a checkpoint that t+1 = {} replicas vouch for (one every {} ms of the "
          "order's time)",
          config_.t + 1, config_.byzantine->checkpoint_interval_ms);
    } else if (has_state && replica_->byzantine_core()->recovering()) {
      spdlog::info(
          "restarted from its disk: recovering. It takes part in the protocol from now on but "
          "serves no client until it has caught up with the others (from a checkpoint t+1 = {} "
          "replicas vouch for) or, if the whole cluster went down, recovered together with all "
          "{} replicas (every one of them must come back)",
          config_.t + 1, config_.replica_count());
    }
  }
  if (options_.misbehave != Misbehaviour::kNone) {
    spdlog::warn(
        "!!! MISBEHAVING ON PURPOSE (--misbehave {}): this replica is faulty by design, "
        "for tests and the demo only; never run it in a real cluster !!!",
        misbehaviour_name(options_.misbehave));
  }
}

storage::StoreRecovery ReplicaServer::open_store() {
  const StorageConfig& settings = config_.storage;
  const std::filesystem::path directory = settings.replica_dir(self_);
  const uint64_t started_ns = net::monotonic_now_ns();
  storage::StoreRecovery recovery;
  try {
    std::error_code error;
    std::filesystem::create_directories(directory, error);
    if (error) {
      throw storage::StorageError("cannot create " + directory.string() + ": " + error.message());
    }
    disk_ = std::make_unique<storage::PosixStorage>(directory.string());
    store_.emplace(storage::ReplicaStore::open(*disk_, settings.wal_options(), recovery));
  } catch (const storage::WalCorruption& error) {
    throw ReplicaStorageError("data directory " + directory.string() +
                              ": log corrupted, refusing to start: " + error.what());
  } catch (const storage::StoreCorruption& error) {
    throw ReplicaStorageError("data directory " + directory.string() +
                              ": refusing to start: " + error.what());
  } catch (const storage::StorageError& error) {
    throw ReplicaStorageError("data directory " + directory.string() + ": " + error.what());
  }
  for (const std::string& skipped : recovery.skipped_checkpoints) {
    spdlog::warn("storage: skipped an invalid checkpoint: {}", skipped);
  }
  if (recovery.log.torn_bytes_dropped > 0) {
    spdlog::warn(
        "storage: dropped a torn tail of {} bytes at offset {} of {} (a batch that was never "
        "synced, so never acknowledged)",
        recovery.log.torn_bytes_dropped, recovery.log.torn_offset, recovery.log.torn_file);
  }
  if (recovery.checkpoint) last_checkpoint_index_ = recovery.checkpoint->log_index;
  spdlog::info(
      "storage: {} (sync {}): {}; checkpoint at log index {}, {} records after it, {} log "
      "segments, {} bytes on disk, recovered in {} ms",
      directory.string(), storage::to_string(settings.sync), recovery.fresh ? "fresh" : "recovered",
      last_checkpoint_index_, recovery.records.size(), recovery.log.segments, store_->disk_bytes(),
      (net::monotonic_now_ns() - started_ns) / 1'000'000);
  if (!settings.durable() && config_.mode == Mode::kByzantine) {
    // The same distrust as below; the byzantine core then certifies nothing and logs nothing.
    spdlog::warn(
        "storage: sync = \"{}\" does not make this replica durable; restarted, it recovers "
        "nothing from its disk and must be started with --join (only sync = \"always\" is "
        "durable)",
        storage::to_string(settings.sync));
  } else if (!settings.durable()) {
    // Without a sync before every output the disk may lag what peers and clients saw, so the
    // core does not trust it (failstop::Options::durable): a restart counts as a failure.
    spdlog::warn(
        "storage: sync = \"{}\" does not make this replica durable; restarted, it is treated as "
        "failed (only sync = \"always\" rejoins as the same member)",
        storage::to_string(settings.sync));
  }
  return recovery;
}

void ReplicaServer::rebuild_from_disk(storage::StoreRecovery& recovery) {
  const std::filesystem::path directory = config_.storage.replica_dir(self_);
  if (!config_.storage.durable() || recovery.fresh) return;
  Replica::CheckpointData checkpoint;
  if (recovery.checkpoint) {
    checkpoint.protocol_state = std::move(recovery.checkpoint->protocol_state);
    checkpoint.service_snapshot = std::move(recovery.checkpoint->service_snapshot);
  }
  std::vector<OrderingCore::PersistRecord> records;
  records.reserve(recovery.records.size());
  for (storage::StoredRecord& record : recovery.records) {
    records.push_back(OrderingCore::PersistRecord{record.type, std::move(record.payload)});
  }
  try {
    replica_->recover(checkpoint, records);
  } catch (const std::exception& error) {
    // The records passed their checksums, so this is a bug or another program's directory.
    throw ReplicaStorageError("data directory " + directory.string() +
                              ": cannot rebuild the replica from its checkpoint and " +
                              std::to_string(records.size()) + " records: " + error.what());
  }
  if (const byzantine::Core* byzantine = replica_->byzantine_core()) {
    spdlog::info("storage: rebuilt from disk: {} entries executed, {} pending, {}",
                 replica_->service().executed_count(), replica_->core().pending_entries(),
                 byzantine->recovering() ? "recovering" : "serving");
    return;
  }
  spdlog::info("storage: rebuilt from disk: view {}, {} entries executed, {} pending",
               replica_->core().view().value, replica_->service().executed_count(),
               replica_->core().pending_entries());
}

void ReplicaServer::fail_storage(const std::string& what) {
  spdlog::critical("storage: {}; stopping (nothing of this iteration was sent)", what);
  exit_code_ = kExitStorageFailed;
  loop_.stop();
}

bool ReplicaServer::persist(std::vector<OrderingCore::PersistRecord>& records) {
  try {
    for (const OrderingCore::PersistRecord& record : records)
      store_->append(record.type, record.payload);
    records_appended_ += records.size();
    // Under sync = "always" this is the fdatasync every output of this iteration waits for; one
    // per iteration however many requests it carries (group commit).
    if (store_->commit(net::monotonic_now_ns())) ++syncs_;
  } catch (const std::exception& error) {
    fail_storage(error.what());
    return false;
  }
  return true;
}

void ReplicaServer::checkpoint_if_due() {
  const uint64_t executed = replica_->executed_since_start();
  if (executed - executed_at_checkpoint_ < config_.storage.checkpoint_entries) return;
  // A checkpoint at the previous one's index would have to replace it in place, which the store
  // cannot do crash-safely; nothing was logged since, so wait for the next record.
  if (store_->next_index() <= last_checkpoint_index_) return;
  // Taken right after take_output and the append of its records: the replica's state is exactly
  // what the log below next_index() describes.
  write_checkpoint("scheduled");
}

bool ReplicaServer::write_checkpoint(std::string_view why) {
  const uint64_t started_ns = net::monotonic_now_ns();
  Replica::CheckpointData data = replica_->checkpoint();
  const uint64_t log_index = store_->next_index();
  const size_t bytes = data.protocol_state.size() + data.service_snapshot.size();
  try {
    store_->write_checkpoint(storage::Checkpoint{log_index, std::move(data.protocol_state),
                                                 std::move(data.service_snapshot)});
  } catch (const std::exception& error) {
    fail_storage(std::string(why) + " checkpoint failed: " + error.what());
    return false;
  }
  last_checkpoint_index_ = log_index;
  executed_at_checkpoint_ = replica_->executed_since_start();
  ++checkpoints_written_;
  spdlog::info("storage: {} checkpoint at log index {} ({} bytes) in {} us; {} bytes on disk", why,
               log_index, bytes, (net::monotonic_now_ns() - started_ns) / 1000,
               store_->disk_bytes());
  return true;
}

bool ReplicaServer::persist_loaded_state(std::vector<OrderingCore::PersistRecord>& records) {
  // The log describes the replica's own past, which the donor's state replaces: recovery must
  // start from a checkpoint of the loaded state. Written before this step's records, which only
  // repeat what the state already holds (replaying them on it changes nothing: entries and views
  // at or below the state's are skipped), and before anything is sent that depends on it.
  if (store_->next_index() > last_checkpoint_index_) {
    return write_checkpoint("loaded-state") && persist(records);
  }
  // The newest checkpoint sits at the log's end (a replica that recovered as removed and logged
  // nothing since): a second one at the same index cannot replace it, so the records go first
  // and the checkpoint follows them (write_checkpoint syncs the log before it).
  if (!persist(records)) return false;
  if (store_->next_index() <= last_checkpoint_index_) {
    fail_storage(
        "cannot checkpoint the loaded state: the previous checkpoint is at the log's end and "
        "this step logged nothing; wipe " +
        config_.storage.replica_dir(self_).string() + " and start with --join");
    return false;
  }
  return write_checkpoint("loaded-state");
}

ReplicaServer::~ReplicaServer() {
  loop_.cancel(tick_timer_);
  loop_.cancel(stats_timer_);
  if (output_hook_ != 0) loop_.remove_iteration_hook(output_hook_);
  for (auto& [raw, client] : clients_)
    client.connection->set_handler(nullptr);
}

Now ReplicaServer::now() const {
  return Now{net::monotonic_now_ns(), net::wall_now_us()};
}

void ReplicaServer::start() {
  if (started_) return;
  started_ = true;
  for (auto& channel : channels_) {
    if (channel) channel->start();
  }
  // The Replica's first input must carry the clock: the byzantine core fixes its first checkpoint
  // boundary (and, catching up, the start of its participation) from the first time it sees, and
  // the output hook below would otherwise hand it Now{} (Replica::take_output before any input).
  inputs_wait_until_ns_ = net::monotonic_now_ns() + kCatchUpConnectWaitNs;
  if (inputs_open_ && config_.mode == Mode::kByzantine) replica_->tick(now());
  tick_timer_ = loop_.schedule_every(options_.tick_interval_ns, [this] { on_tick(); });
  stats_timer_ = loop_.schedule_every(options_.stats_interval_ns, [this] { log_stats(); });
  output_hook_ = loop_.add_iteration_hook([this] { after_iteration(); });
}

int ReplicaServer::run() {
  start();
  loop_.run();
  log_stats();
  return exit_code_;
}

void ReplicaServer::stop() {
  spdlog::info("stopping");
  loop_.stop();
}

void ReplicaServer::on_tick() {
  if (!inputs_open_ && !open_inputs_when_connected()) return;
  replica_->tick(now());
}

bool ReplicaServer::open_inputs_when_connected() {
  std::string missing;
  for (const auto& channel : channels_) {
    if (channel && !channel->established()) {
      missing += (missing.empty() ? "" : ", ") + std::to_string(channel->peer().value);
    }
  }
  const bool timed_out = net::monotonic_now_ns() >= inputs_wait_until_ns_;
  if (!missing.empty() && !timed_out) return false;
  inputs_open_ = true;
  for (ClientRequest& held : std::exchange(held_administrator_requests_, {}))
    replica_->on_client_request(now(), std::move(held));
  if (missing.empty()) {
    spdlog::info("catching up: every peer connected; taking part from now ({} messages before)",
                 inputs_dropped_);
  } else {
    // Their messages sent before they connect are lost to this replica; if one of them is honest
    // and the others do not relay what it sent in time, this replica may miss part of an
    // instance (docs/DESIGN.md §11.7, assumptions).
    spdlog::warn(
        "catching up: replicas [{}] not connected after {} ms; taking part without them for now",
        missing, kCatchUpConnectWaitNs / 1'000'000);
  }
  return true;
}

void ReplicaServer::after_iteration() {
  if (exit_code_ == kExitStorageFailed) return;  // stopping: never send past a failed commit
  if (!inputs_open_) return;                     // nothing taken in, nothing to give out
  Replica::Output output = replica_->take_output();
  // The log first: the messages and replies below may depend on these records, so they leave
  // only once the records are as durable as the sync policy makes them. Nothing else sends
  // protocol state: peer channels send only what this hook gives them (or resend it), status
  // replies read state that this commit already covers, and every client reply comes from here.
  const std::optional<Replica::LoadedTransfer>& loaded = replica_->last_loaded_transfer();
  // A whole-cluster recovery (byzantine) completes in one step, which also sets loaded_state:
  // the runtime checkpoints the recovered state like a loaded one. It may have fetched part of
  // that state from another replica, but it is not a catch-up from a live cluster.
  const byzantine::Core* byzantine = replica_->byzantine_core();
  const bool recovery_completed =
      byzantine != nullptr && byzantine->recoveries_completed() != logged_recoveries_;
  if (recovery_completed) {
    logged_recoveries_ = byzantine->recoveries_completed();
    spdlog::info(
        "recovery completed: every replica came back after the whole cluster went down, and "
        "they agreed where the order resumes; executing it and serving clients ({} entries "
        "executed)",
        replica_->service().executed_count());
    if (!output.loaded_state) {
      spdlog::error(
          "recovery completed without loaded_state: the recovered state is not "
          "checkpointed (a bug in the byzantine core or the Replica)");
    }
  } else if (output.loaded_state && loaded && byzantine != nullptr) {
    spdlog::info(
        "loaded the state: the snapshot of the checkpoint at boundary {} us ({} bytes), from "
        "replica {}, matches the digest t+1 replicas signed; executing the order from there on "
        "and serving clients ({} entries executed)",
        loaded->view, loaded->service_snapshot_bytes, loaded->donor.value,
        replica_->service().executed_count());
  } else if (output.loaded_state && loaded) {
    spdlog::info(
        "loaded the state of replica {} ({} bytes of protocol state, {} bytes of service "
        "snapshot): member of view {}, {} entries executed",
        loaded->donor.value, loaded->protocol_state_bytes, loaded->service_snapshot_bytes,
        replica_->core().view().value, replica_->service().executed_count());
  }
  if (store_) {
    const bool loaded_durably = output.loaded_state && config_.storage.durable();
    if (!(loaded_durably ? persist_loaded_state(output.persist) : persist(output.persist))) return;
  }
  if (options_.misbehave == Misbehaviour::kSilent) {
    // Mute towards everyone: peers must decide without us, clients get t+1 replies elsewhere.
    output.to_peers.clear();
    output.to_clients.clear();
  }
  for (Replica::PeerMessage& message : output.to_peers) {
    if (message.to.value >= channels_.size() || !channels_[message.to.value]) {
      spdlog::error("protocol core addressed a message to replica {}, which is not a peer",
                    message.to.value);
      continue;
    }
    log_state_transfer(message);
    channels_[message.to.value]->send(std::move(message.message));
  }
  send_replies(output.to_clients);
  for (auto& [connection, reply] : admin_replies_)
    connection->send(std::move(reply));
  admin_replies_.clear();
  executed_ += output.executed.size();
  const OrderingCore& core = replica_->core();
  if (core.view() != logged_view_) {
    logged_view_ = core.view();
    std::string members;
    for (ReplicaId member : core.members()) {
      members += (members.empty() ? "" : ", ") + std::to_string(member.value);
    }
    spdlog::warn("installed view {}: members [{}]", logged_view_.value, members);
  }
  if (replica_->rejected_state_transfers() != rejected_transfers_logged_) {
    rejected_transfers_logged_ = replica_->rejected_state_transfers();
    spdlog::warn("could not load a state transfer ({} rejected so far); asking again",
                 rejected_transfers_logged_);
  }
  log_joining_changes();
  // A replica that is not durable never recovers from its disk, so checkpoints would be waste.
  if (store_ && config_.storage.durable() && !replica_->halted()) checkpoint_if_due();
  if (replica_->halted() && !halted_reported_) {
    halted_reported_ = true;
    if (config_.mode == Mode::kByzantine) {
      spdlog::error(
          "removed from the membership by an administrator's change (epoch {}); halting after "
          "executing everything up to the point it took effect",
          replica_->membership_proofs().size());
    } else {
      spdlog::error("removed from the membership; halting");
    }
    exit_code_ = kExitHalted;
    loop_.stop();
  }
}

void ReplicaServer::log_state_transfer(const Replica::PeerMessage& message) const {
  const bool byzantine = config_.mode == Mode::kByzantine;
  if (const auto* transfer = std::get_if<StateTransfer>(&message.message)) {
    if (byzantine) {
      // A replica catching up asked for the snapshot of the latest checkpoint (its view field).
      spdlog::info("sending replica {} the snapshot of the checkpoint at boundary {} us ({} bytes)",
                   message.to.value, transfer->view.value, transfer->service_snapshot.size());
    } else {
      spdlog::info(
          "sending replica {} this replica's state ({} bytes of protocol state, {} bytes of "
          "service snapshot) for view {}",
          message.to.value, transfer->protocol_state.size(), transfer->service_snapshot.size(),
          transfer->view.value);
    }
  } else if (const auto* chunk = std::get_if<StateChunk>(&message.message)) {
    if (chunk->offset != 0) return;
    spdlog::info("sending replica {} {} of {} bytes, in pieces of {} bytes it asks for one by one",
                 message.to.value, byzantine ? "a checkpoint's snapshot" : "this replica's state",
                 chunk->total, chunk->data.size());
  }
}

void ReplicaServer::log_joining_changes() {
  if (const byzantine::Core* byzantine = replica_->byzantine_core()) {
    // Catching up (--join): it awaits a snapshot once t+1 replicas vouched for a checkpoint.
    const bool awaiting = byzantine->awaits_state();
    if (awaiting && !logged_awaiting_state_) {
      spdlog::info(
          "catching up: t+1 replicas signed the same digest for a checkpoint; asking them for "
          "its snapshot");
    }
    logged_awaiting_state_ = awaiting;
    return;
  }
  const failstop::Core* core = replica_->failstop_core();
  const bool joining = core != nullptr && core->joining();
  const bool awaiting = joining && core->awaits_state();
  if (joining == logged_joining_ && awaiting == logged_awaiting_state_) return;
  if (awaiting && !logged_awaiting_state_) {
    std::string members;
    for (ReplicaId member : core->members())
      members += (members.empty() ? "" : ", ") + std::to_string(member.value);
    spdlog::info("added to the membership (members [{}]); asking for the state", members);
  } else if (joining && !awaiting) {
    spdlog::info(
        "asking the members to add this replica (JoinRequest to every listed replica); it "
        "serves no client until an operator's add-replica {} lets it in and it has loaded a "
        "member's state",
        self_.value);
  }
  logged_joining_ = joining;
  logged_awaiting_state_ = awaiting;
}

void ReplicaServer::send_replies(std::vector<ClientReply>& replies) {
  if (config_.mode == Mode::kFailstop) {
    for (ClientReply& reply : replies) {
      auto route = reply_routes_.find(reply.client.value);
      if (route == reply_routes_.end()) {
        ++replies_dropped_;  // the client's connection is gone; its retry will ask again
        continue;
      }
      // Moved into the frame's variant: no copy of the result bytes.
      route->second->send(WireMessage(std::move(reply)));
    }
    return;
  }
  // Byzantine mode: one signed batch per connection. Ordered by connection address only to group;
  // the order of batches between connections does not matter.
  std::map<net::Connection*, std::vector<ClientReply>> batches;
  for (ClientReply& reply : replies) {
    auto route = reply_routes_.find(reply.client.value);
    if (route == reply_routes_.end()) {
      ++replies_dropped_;
      continue;
    }
    if (options_.misbehave == Misbehaviour::kWrongOutput && reply.status == ReplyStatus::kOk) {
      reply.result.insert(reply.result.end(), kLieSuffix.begin(), kLieSuffix.end());
    }
    batches[route->second].push_back(std::move(reply));
  }
  const std::vector<ClientRequest>& changes = replica_->membership_proofs();
  // Enough for the client to meet them on batches of many requests (each repeat costs a few
  // hundred bytes per change), few enough not to weigh on a long-lived connection.
  constexpr uint32_t kMembershipRepeatBatches = 64;
  for (auto& [connection, batch] : batches) {
    SignedReplies frame = crypto::sign_replies(*signer_, self_, std::move(batch));
    // The administrator's changes go along on the first kMembershipRepeatBatches batches of a
    // connection after each change: a client that meets a reply of an epoch it does not know
    // learns its members once t+1 members of the epoch before showed them
    // (client/core/membership_learner.h), so the rest of its batches cost nothing extra.
    auto client = clients_.find(connection);
    if (client != clients_.end() && !changes.empty()) {
      ClientConnection& state = client->second;
      if (state.membership_changes_sent < changes.size()) {
        state.membership_changes_sent = changes.size();
        state.membership_batches_left = kMembershipRepeatBatches;
      }
      if (state.membership_batches_left > 0) {
        --state.membership_batches_left;
        frame.membership_changes = changes;
      }
    }
    connection->send(WireMessage(std::move(frame)));
    ++reply_batches_signed_;
  }
}

void ReplicaServer::log_stats() {
  const OrderingCore& core = replica_->core();
  size_t peers_up = 0;
  for (const auto& channel : channels_) {
    if (channel && channel->established()) ++peers_up;
  }
  const uint64_t interval = executed_ - executed_at_last_stats_;
  executed_at_last_stats_ = executed_;
  spdlog::info(
      "stats: executed {} (+{}), pending {}, view {} ({} members), peers connected {}/{}, "
      "client connections {} (rejected {}), replies dropped {}, busy replies {}, sessions {} "
      "(expired {})",
      executed_, interval, core.pending_entries(), core.view().value, core.members().size(),
      peers_up, channels_.size() - 1, clients_.size(), acceptor_->rejected_connections(),
      replies_dropped_, replica_->busy_replies(), replica_->service().session_count(),
      replica_->service().sessions_expired());
  if (store_) {
    const uint64_t syncs = syncs_ - syncs_at_last_stats_;
    syncs_at_last_stats_ = syncs_;
    spdlog::info(
        "storage: {} bytes on disk, log index {} (synced {}), records {}, syncs {} (+{}), "
        "checkpoints {} (latest at {})",
        store_->disk_bytes(), store_->next_index(), store_->synced_index(), records_appended_,
        syncs_, syncs, checkpoints_written_, last_checkpoint_index_);
  }
  if (const byzantine::Core* byzantine = replica_->byzantine_core()) {
    const byzantine::Rejections& r = byzantine->rejections();
    spdlog::info(
        "byzantine: reply batches signed {}, replies held until certified {}, backups {}; "
        "rejected: bad client signature {}, unknown client {}, bad chain {}, outside window {}, "
        "off slot {}, oversized {}, overloaded {}, equivocations {}, client equivocations {}; "
        "left the honest order {} times, votes against its order {}; checkpoint at {} us{}",
        reply_batches_signed_, replica_->held_replies(), byzantine->backup_count(),
        r.bad_client_signature, r.unknown_client, r.bad_chain, r.outside_window, r.off_slot,
        r.oversized, r.overloaded, r.equivocations, r.client_equivocations, r.diverged,
        r.votes_against, byzantine->checkpoint_us(),
        !byzantine->recovering()            ? ""
        : byzantine->recovering_from_disk() ? ", recovering from its disk (catching up from a "
                                              "vouched checkpoint, or waiting for every "
                                              "replica's claim after a whole-cluster crash)"
        : byzantine->awaits_state()         ? ", catching up (asking for a vouched snapshot)"
                                    : ", catching up (waiting for t+1 votes on a checkpoint)");
    if (r.votes_against > votes_against_at_last_stats_) {
      spdlog::warn(
          "byzantine: {} signed positions of other replicas name another order than this "
          "replica's ({} relays outside their window so far): a faulty replica, or Δ/ε too small "
          "for this machine. Replies stay held until t+1 replicas sign one order",
          r.votes_against - votes_against_at_last_stats_, r.outside_window);
    }
    votes_against_at_last_stats_ = r.votes_against;
  }
}

void ReplicaServer::on_hello(std::unique_ptr<net::Connection> connection, const Hello& hello) {
  auto reject = [&](const std::string& reason) {
    spdlog::warn("rejecting connection from {}: {}", connection->peer_name(), reason);
    connection->close(reason);
    loop_.dispose(std::move(connection));
  };
  if (hello.role == PeerRole::kReplica) {
    if (hello.id >= config_.replica_count() || hello.id == self_.value) {
      reject("Hello from replica " + std::to_string(hello.id) + ", not a peer of replica " +
             std::to_string(self_.value));
      return;
    }
    if (hello.id > self_.value) {
      reject("replica " + std::to_string(hello.id) +
             " dialed a lower id; only the lower id of a pair dials");
      return;
    }
    channels_[hello.id]->adopt(std::move(connection), hello);
    return;
  }
  if (hello.role == PeerRole::kClient) {
    net::Connection* raw = connection.get();
    raw->set_handler(this);
    raw->set_peer_name("client " + fmt::format("{:016x}", hello.id) + " at " + raw->peer_name());
    raw->send(Hello{PeerRole::kReplica, self_.value, incarnation_, 0});
    clients_.emplace(raw, ClientConnection{std::move(connection), hello.id});
    spdlog::debug("{} connected", raw->peer_name());
    return;
  }
  reject("Hello with unknown role");
}

void ReplicaServer::on_message(net::Connection& connection, WireMessage&& message) {
  if (auto* status = std::get_if<StatusRequest>(&message)) {
    connection.send(status_reply(status->nonce));
    return;
  }
  if (auto* admin = std::get_if<AdminRequest>(&message)) {
    AdminReply reply = replica_->on_admin(now(), *admin);
    spdlog::info("admin: {} replica {} from {}: {}: {}",
                 admin->change == MembershipChange::kAdd ? "add" : "remove", admin->replica.value,
                 connection.peer_name(), reply.accepted ? "accepted" : "refused", reply.detail);
    // Sent with this iteration's output, after its records are durable: the change is on disk
    // (a durable member logs its barred set) before the operator is told it was accepted.
    admin_replies_.emplace_back(&connection, std::move(reply));
    return;
  }
  auto* request = std::get_if<ClientRequest>(&message);
  if (request != nullptr && !inputs_open_) {
    // A membership change that adds this replica is sent once, before the administrator's t+1
    // answers come from the members: held until inputs open, so that it learns the change
    // early (docs/DESIGN.md §11.9) rather than probe for it at the change's boundary.
    // (Its signature checked first: unsigned junk must not take the few places.)
    if (from_administrator(*request) &&
        held_administrator_requests_.size() < kHeldAdministratorRequestsMax &&
        replica_->admits(*request)) {
      held_administrator_requests_.push_back(std::move(*request));
      return;
    }
    ++inputs_dropped_;  // it would serve nothing yet anyway; the client retries elsewhere too
    return;
  }
  if (request == nullptr) {
    spdlog::warn(
        "closing connection from {}: a client may only send ClientRequest, StatusRequest and "
        "AdminRequest frames",
        connection.peer_name());
    connection.close("unexpected frame from a client");
    return;
  }
  auto [route, inserted] = reply_routes_.try_emplace(request->client.value, &connection);
  if (!inserted) {
    route->second = &connection;
  } else if (reply_routes_.size() > kReplyRoutesMax) {
    // Forgetting every route costs at most one retry interval for the clients mid-request.
    spdlog::warn("more than {} client ids routed; forgetting reply routes", kReplyRoutesMax);
    reply_routes_.clear();
    reply_routes_.emplace(request->client.value, &connection);
  }
  replica_->on_client_request(now(), std::move(*request));
}

StatusReply ReplicaServer::status_reply(uint64_t nonce) const {
  const OrderingCore& core = replica_->core();
  // A replica still joining is not a member yet, whatever its core holds meanwhile: it reports
  // the membership without itself, so that operators and `lockstep admin` see it join only once
  // it serves.
  std::vector<ReplicaId> members = core.members();
  if (!replica_->halted() && !replica_->serving()) std::erase(members, self_);
  // The digest serialises the whole state: fine for an operator's or a test's occasional
  // question, which is all StatusRequest is for.
  return StatusReply{nonce,
                     self_,
                     replica_->halted(),
                     core.view(),
                     std::move(members),
                     replica_->service().executed_count(),
                     replica_->service().digest(),
                     replica_->epoch()};
}

void ReplicaServer::on_closed(net::Connection& connection, const std::string& reason) {
  auto it = clients_.find(&connection);
  if (it == clients_.end()) return;
  spdlog::debug("{} disconnected: {}", connection.peer_name(), reason);
  std::erase_if(reply_routes_, [&](const auto& route) { return route.second == &connection; });
  std::erase_if(admin_replies_, [&](const auto& pending) { return pending.first == &connection; });
  loop_.dispose(std::move(it->second.connection));
  clients_.erase(it);
}

}  // namespace lockstep::runtime
