// Everything one replica keeps on disk: a write-ahead log of typed records (storage/wal.h) and
// checkpoints, each a snapshot of the replica at a point of its log. Recovery hands back the
// newest valid checkpoint and every log record after it; the replica rebuilds itself from them
// (docs/DESIGN.md §10).
//
// The store does not interpret what it keeps: record types and payloads, and the checkpoint's
// two blobs, belong to the replica. It only guarantees that what it hands back at recovery is
// what was durably written, in order, with nothing missing in between.
//
// ## Checkpoint files
// `checkpoint-<log index, 20 decimal digits>.ckpt`, where the index is the first log record NOT
// covered by the checkpoint. Layout (integers little-endian):
//
//   offset  size  field
//   0       8     magic "LSCKPT01"
//   8       8     log_index        first log record after the checkpoint (as in the name)
//   16      8     protocol_bytes   length of the protocol-state blob
//   24      8     service_bytes    length of the service-snapshot blob
//   32      ...   protocol state, then service snapshot
//   end-8   8     checksum         XXH3-64 of every byte before it
//
// A checkpoint is written under its final name with OpenMode::kCreateNew, synced, then the
// directory synced; only then are older checkpoints removed and the log truncated below
// `log_index` (Wal::truncate_prefix drops whole segments only, so some covered records may remain:
// recovery skips records below the checkpoint's log_index). A crash in the middle leaves either
// no new file, or an incomplete one that fails its checksum, with the previous checkpoint still
// there: recovery takes the newest checkpoint whose checksum holds and says which it skipped.
// A checkpoint that fails its checksum while a NEWER valid one exists is simply ignored (it is
// an old one being removed); the newest valid one must be at or after the log's first index, or
// recovery throws StoreCorruption (records between the checkpoint and the log are gone).
//
// ## What recovery refuses (StoreCorruption), and why
//  - A file that is neither a log segment (`wal-<20 digits>.log`) nor a checkpoint
//    (`checkpoint-<20 digits>.ckpt`): a directory holding anything else is probably not this
//    replica's directory (a typo in the path, two replicas configured onto one directory), and
//    recovering "fresh" next to someone else's files would be worse than stopping.
//  - Checkpoint files but no log segment: the log is created (durably) before any checkpoint and
//    its last segment is never removed, so its absence means the log was deleted.
//  - A chosen checkpoint below the log's first index (records in between are gone), or above the
//    log's next index: write_checkpoint syncs the log before writing a checkpoint, so a checkpoint
//    can never cover records the durable log does not hold; if it does, the log lost synced
//    records (a torn tail cannot explain it).
//  - No valid checkpoint while the log no longer starts at WalOptions::first_index: segments are
//    truncated only after a checkpoint covering them was durable, so that checkpoint went bad.
//    (WalOptions::first_index must therefore be the same on every open of a store.)
// Invalid checkpoint files that recovery skipped stay on disk (evidence for an operator) and are
// removed by the next write_checkpoint. Recovery itself writes nothing except what Wal::open
// writes (zeroing a torn tail; creating the first segment of a fresh store).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/types.h"
#include "storage/storage.h"
#include "storage/wal.h"

namespace lockstep::storage {

struct Checkpoint {
  uint64_t log_index = 0;  // first log record not reflected in this checkpoint
  Bytes protocol_state;    // the ordering core's durable summary
  Bytes service_snapshot;  // Service::snapshot()
  bool operator==(const Checkpoint&) const = default;
};

struct StoredRecord {
  uint64_t index = 0;
  uint8_t type = 0;
  Bytes payload;
};

struct StoreRecovery {
  std::optional<Checkpoint> checkpoint;  // the newest valid one; none on a fresh disk
  std::vector<StoredRecord> records;     // every durable record at or after checkpoint.log_index
  WalRecovery log;                       // what the log's recovery found (torn tail dropped...)
  std::vector<std::string> skipped_checkpoints;  // invalid checkpoint files ignored, with reason
  bool fresh = true;                             // nothing was on the disk
};

// Damage recovery cannot repair without serving wrong state; names the file and what is wrong.
class StoreCorruption : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class ReplicaStore {
 public:
  // Recovers (or creates) the store in `storage`, fills `recovery`. Throws WalCorruption,
  // StoreCorruption or StorageError. Storage must outlive the store.
  static ReplicaStore open(Storage& storage, WalOptions options, StoreRecovery& recovery);

  ReplicaStore(ReplicaStore&&) noexcept;
  ReplicaStore& operator=(ReplicaStore&&) noexcept;
  ~ReplicaStore();

  // Buffers one record (type 1..255); durable after commit()/sync() per the policy.
  uint64_t append(uint8_t type, std::span<const uint8_t> payload);
  // Before releasing outputs that depend on appended records (Wal::commit).
  bool commit(uint64_t now_ns);
  void sync();

  // Writes `checkpoint` durably (see above), then removes older checkpoints and truncates the log
  // below checkpoint.log_index. Syncs the log first. checkpoint.log_index must be in
  // [log().first_index(), next_index()] and not below the current checkpoint's (throws
  // std::invalid_argument otherwise). A checkpoint at the current checkpoint's own index cannot
  // replace it crash-safely (there is no atomic rename in Storage, and the log below it is gone):
  // identical contents are accepted (nothing is rewritten), different contents throw
  // std::invalid_argument. An invalid file under the same name (a torn attempt, or the current
  // checkpoint damaged on the medium) is removed (durably) first and rewritten.
  void write_checkpoint(const Checkpoint& checkpoint);

  // The checkpoint file name for a log index, e.g. checkpoint-00000000000000000001.ckpt.
  static std::string checkpoint_name(uint64_t log_index);
  // The file image of a checkpoint (layout above). Exposed for tests and the fuzzer.
  static Bytes encode_checkpoint(const Checkpoint& checkpoint);

  uint64_t next_index() const;
  uint64_t synced_index() const;
  // Bytes on disk (log segments + checkpoints), for operators and the soak.
  uint64_t disk_bytes() const;
  const Wal& log() const;

 private:
  ReplicaStore(Storage& storage, Wal wal);
  Storage* storage_;
  std::optional<Wal> wal_;
  // Every checkpoint file on disk, valid or not (skipped ones stay until the next checkpoint),
  // ascending by index.
  std::vector<std::string> checkpoint_files_;
  // log_index of the newest valid checkpoint (recovered or written); 0 while there is none.
  uint64_t checkpoint_log_index_ = 0;
};

}  // namespace lockstep::storage
