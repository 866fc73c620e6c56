#include "storage/replica_store.h"

#include <xxhash.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace lockstep::storage {

namespace {

constexpr std::string_view kCheckpointPrefix = "checkpoint-";
constexpr std::string_view kCheckpointSuffix = ".ckpt";
constexpr std::string_view kSegmentPrefix = "wal-";
constexpr std::string_view kSegmentSuffix = ".log";
constexpr size_t kIndexDigits = 20;  // any uint64_t, so that name order is index order
constexpr std::string_view kCheckpointMagic = "LSCKPT01";
constexpr uint64_t kCheckpointHeaderBytes = 32;
constexpr uint64_t kCheckpointChecksumBytes = 8;

void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= uint64_t{p[i]} << (8 * i);
  return v;
}

// The index in `<prefix><20 digits><suffix>`, or nullopt if name is not of that form.
std::optional<uint64_t> parse_indexed_name(std::string_view name, std::string_view prefix,
                                           std::string_view suffix) {
  if (name.size() != prefix.size() + kIndexDigits + suffix.size() || !name.starts_with(prefix) ||
      !name.ends_with(suffix)) {
    return std::nullopt;
  }
  uint64_t value = 0;
  for (char c : name.substr(prefix.size(), kIndexDigits)) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return std::nullopt;  // above 2^64 - 1
    value = value * 10 + digit;
  }
  return value;
}

// The checkpoint in a file image, or why the image is not a valid checkpoint named for
// name_index.
struct DecodedCheckpoint {
  std::optional<Checkpoint> checkpoint;
  std::string problem;
};

DecodedCheckpoint decode_checkpoint(std::span<const uint8_t> image, uint64_t name_index) {
  DecodedCheckpoint result;
  const uint64_t size = image.size();
  if (size < kCheckpointHeaderBytes + kCheckpointChecksumBytes) {
    result.problem = std::to_string(size) + " bytes, shorter than a header and checksum";
    return result;
  }
  const uint8_t* p = image.data();
  if (std::memcmp(p, kCheckpointMagic.data(), kCheckpointMagic.size()) != 0) {
    result.problem = "bad magic";
    return result;
  }
  uint64_t log_index = get_u64(p + 8);
  uint64_t protocol_bytes = get_u64(p + 16);
  uint64_t service_bytes = get_u64(p + 24);
  uint64_t body_bytes = size - kCheckpointHeaderBytes - kCheckpointChecksumBytes;
  if (protocol_bytes > body_bytes || service_bytes != body_bytes - protocol_bytes) {
    result.problem = "blob lengths " + std::to_string(protocol_bytes) + " + " +
                     std::to_string(service_bytes) + " do not match the file size " +
                     std::to_string(size);
    return result;
  }
  uint64_t stored = get_u64(p + size - kCheckpointChecksumBytes);
  if (XXH3_64bits(p, size - kCheckpointChecksumBytes) != stored) {
    result.problem = "checksum mismatch";
    return result;
  }
  // Checked after the checksum: with a valid checksum a mismatch is a misnamed (copied) file.
  if (log_index != name_index) {
    result.problem = "holds log index " + std::to_string(log_index) + ", not the one in its name";
    return result;
  }
  Checkpoint checkpoint;
  checkpoint.log_index = log_index;
  const uint8_t* body = p + kCheckpointHeaderBytes;
  checkpoint.protocol_state.assign(body, body + protocol_bytes);
  checkpoint.service_snapshot.assign(body + protocol_bytes, body + body_bytes);
  result.checkpoint = std::move(checkpoint);
  return result;
}

Bytes read_file(Storage& storage, const std::string& name) {
  std::unique_ptr<File> file = storage.open(name, OpenMode::kExisting);
  Bytes image(file->size());
  if (file->read(0, image) != image.size()) {
    throw StorageError("short read of " + storage.describe() + "/" + name);
  }
  return image;
}

std::string path_of(const Storage& storage, std::string_view name) {
  return storage.describe() + "/" + std::string(name);
}

}  // namespace

std::string ReplicaStore::checkpoint_name(uint64_t log_index) {
  char digits[kIndexDigits + 1];
  std::snprintf(digits, sizeof digits, "%020" PRIu64, log_index);
  return std::string(kCheckpointPrefix) + digits + std::string(kCheckpointSuffix);
}

Bytes ReplicaStore::encode_checkpoint(const Checkpoint& checkpoint) {
  const uint64_t protocol_bytes = checkpoint.protocol_state.size();
  const uint64_t service_bytes = checkpoint.service_snapshot.size();
  Bytes image(kCheckpointHeaderBytes + protocol_bytes + service_bytes + kCheckpointChecksumBytes);
  uint8_t* p = image.data();
  std::memcpy(p, kCheckpointMagic.data(), kCheckpointMagic.size());
  put_u64(p + 8, checkpoint.log_index);
  put_u64(p + 16, protocol_bytes);
  put_u64(p + 24, service_bytes);
  std::copy(checkpoint.protocol_state.begin(), checkpoint.protocol_state.end(),
            p + kCheckpointHeaderBytes);
  std::copy(checkpoint.service_snapshot.begin(), checkpoint.service_snapshot.end(),
            p + kCheckpointHeaderBytes + protocol_bytes);
  const uint64_t checksummed = image.size() - kCheckpointChecksumBytes;
  put_u64(p + checksummed, XXH3_64bits(p, checksummed));
  return image;
}

ReplicaStore::ReplicaStore(Storage& storage, Wal wal) : storage_(&storage), wal_(std::move(wal)) {}
ReplicaStore::ReplicaStore(ReplicaStore&&) noexcept = default;
ReplicaStore& ReplicaStore::operator=(ReplicaStore&&) noexcept = default;
ReplicaStore::~ReplicaStore() = default;

ReplicaStore ReplicaStore::open(Storage& storage, WalOptions options, StoreRecovery& recovery) {
  recovery = StoreRecovery{};
  std::vector<std::pair<uint64_t, std::string>> checkpoints;
  bool any_segment = false;
  std::vector<std::string> names = storage.list();
  recovery.fresh = names.empty();
  for (std::string& name : names) {
    if (parse_indexed_name(name, kSegmentPrefix, kSegmentSuffix)) {
      any_segment = true;
    } else if (auto index = parse_indexed_name(name, kCheckpointPrefix, kCheckpointSuffix)) {
      checkpoints.emplace_back(*index, std::move(name));
    } else {
      throw StoreCorruption(
          "replica store " + storage.describe() + ": unexpected file " + name +
          " (neither a log segment wal-<index>.log nor a checkpoint-<index>.ckpt);"
          " is this the replica's directory? Move the file away to proceed");
    }
  }
  std::sort(checkpoints.begin(), checkpoints.end());
  if (!checkpoints.empty() && !any_segment) {
    // Checked before Wal::open, which would otherwise create an empty log here.
    throw StoreCorruption("replica store " + storage.describe() + ": holds checkpoint " +
                          checkpoints.back().second +
                          " but no log segment; the write-ahead log was deleted");
  }

  // Newest first; older files are not even read once a valid one is found (they are leftovers of
  // a removal a crash interrupted).
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend() && !recovery.checkpoint; ++it) {
    DecodedCheckpoint decoded = decode_checkpoint(read_file(storage, it->second), it->first);
    if (decoded.checkpoint) {
      recovery.checkpoint = std::move(decoded.checkpoint);
    } else {
      recovery.skipped_checkpoints.push_back(it->second + ": " + decoded.problem);
    }
  }

  Wal wal = Wal::open(storage, options);
  recovery.log = wal.recovery();
  const uint64_t first_index = wal.first_index();
  uint64_t from_index = first_index;
  if (recovery.checkpoint) {
    const uint64_t log_index = recovery.checkpoint->log_index;
    const std::string name = path_of(storage, checkpoint_name(log_index));
    if (log_index < first_index) {
      throw StoreCorruption("replica store: newest valid checkpoint " + name +
                            " covers the log below index " + std::to_string(log_index) +
                            " but the log starts at index " + std::to_string(first_index) +
                            ": records " + std::to_string(log_index) + ".." +
                            std::to_string(first_index - 1) + " are gone" +
                            (recovery.skipped_checkpoints.empty()
                                 ? std::string()
                                 : " (newer checkpoints that covered them are invalid: " +
                                       recovery.skipped_checkpoints.front() + ")") +
                            "; restore the replica from a peer");
    }
    if (log_index > wal.next_index()) {
      throw StoreCorruption("replica store: checkpoint " + name + " covers the log below index " +
                            std::to_string(log_index) + " but the durable log ends at index " +
                            std::to_string(wal.next_index() - 1) +
                            ": synced log records were lost; restore the replica from a peer");
    }
    from_index = log_index;
  } else if (first_index != options.first_index) {
    throw StoreCorruption(
        "replica store " + storage.describe() + ": the log starts at index " +
        std::to_string(first_index) + ", not at " + std::to_string(options.first_index) +
        ", so a checkpoint covered its beginning, but no valid checkpoint is left" +
        (recovery.skipped_checkpoints.empty() ? std::string()
                                              : " (" + recovery.skipped_checkpoints.front() + ")") +
        "; restore the replica from a peer");
  }
  wal.replay(from_index, [&](const WalRecord& record) {
    recovery.records.push_back(
        {record.index, record.type, Bytes(record.payload.begin(), record.payload.end())});
  });

  ReplicaStore store(storage, std::move(wal));
  for (auto& [index, name] : checkpoints)
    store.checkpoint_files_.push_back(std::move(name));
  if (recovery.checkpoint) store.checkpoint_log_index_ = recovery.checkpoint->log_index;
  return store;
}

uint64_t ReplicaStore::append(uint8_t type, std::span<const uint8_t> payload) {
  return wal_->append(type, payload);
}

bool ReplicaStore::commit(uint64_t now_ns) {
  return wal_->commit(now_ns);
}

void ReplicaStore::sync() {
  wal_->sync();
}

void ReplicaStore::write_checkpoint(const Checkpoint& checkpoint) {
  const uint64_t log_index = checkpoint.log_index;
  if (log_index < wal_->first_index() || log_index > wal_->next_index() ||
      log_index < checkpoint_log_index_) {
    throw std::invalid_argument(
        "write_checkpoint: log index " + std::to_string(log_index) + " outside [" +
        std::to_string(std::max(wal_->first_index(), checkpoint_log_index_)) + ", " +
        std::to_string(wal_->next_index()) + "]");
  }
  const std::string name = checkpoint_name(log_index);
  Bytes image = encode_checkpoint(checkpoint);

  // The checkpoint must never be ahead of the durable log: recovery treats a checkpoint beyond
  // the log's end as lost synced records.
  wal_->sync();

  auto same_name = std::find(checkpoint_files_.begin(), checkpoint_files_.end(), name);
  bool already_written = false;
  if (same_name != checkpoint_files_.end()) {
    Bytes existing = read_file(*storage_, name);
    if (decode_checkpoint(existing, log_index).checkpoint) {
      // A valid checkpoint (the current one): removing it first would leave no checkpoint at
      // all over a truncated log if we crashed before the new one is durable.
      if (existing != image) {
        throw std::invalid_argument(
            "write_checkpoint: a different checkpoint at log index " + std::to_string(log_index) +
            " than the current one cannot replace it crash-safely; append a record first");
      }
      already_written = true;
    } else {
      // An invalid file: a torn earlier attempt that recovery skipped (a valid older checkpoint
      // still stands), or the current checkpoint gone bad on the medium (then the store is
      // already unrecoverable without it, and rewriting it is the repair). Either way removing
      // it first loses nothing.
      storage_->remove(name);
      storage_->sync_directory();
      checkpoint_files_.erase(same_name);
    }
  }
  if (!already_written) {
    std::unique_ptr<File> file = storage_->open(name, OpenMode::kCreateNew);
    file->append(image);
    file->sync();  // the contents before the name: a durable name always has its bytes
    file.reset();
    storage_->sync_directory();
    checkpoint_files_.push_back(name);
    std::sort(checkpoint_files_.begin(), checkpoint_files_.end());
  }
  checkpoint_log_index_ = log_index;

  // Every other checkpoint file is older, or an invalid leftover: the new one is durable, so any
  // subset of these removals surviving a crash is fine, and one directory sync covers them.
  bool removed = false;
  for (const std::string& other : checkpoint_files_) {
    if (other == name) continue;
    storage_->remove(other);
    removed = true;
  }
  if (removed) {
    storage_->sync_directory();
    checkpoint_files_.assign(1, name);
  }
  wal_->truncate_prefix(log_index);
}

uint64_t ReplicaStore::next_index() const {
  return wal_->next_index();
}

uint64_t ReplicaStore::synced_index() const {
  return wal_->synced_index();
}

uint64_t ReplicaStore::disk_bytes() const {
  uint64_t total = 0;
  for (const std::string& name : storage_->list())
    total += storage_->open(name, OpenMode::kExisting)->size();
  return total;
}

const Wal& ReplicaStore::log() const {
  return *wal_;
}

}  // namespace lockstep::storage
