// The write-ahead log: what a replica must not forget (requests it accepted, order decisions,
// configuration), persisted before any externally visible step that depends on it.
//
// ## Use
//   Wal wal = Wal::open(storage, options);          // recovers; throws WalCorruption
//   wal.replay(wal.first_index(), visit);           // hand the recovered records to the replica
//   uint64_t i = wal.append(type, payload);         // buffered, not durable
//   wal.commit(now_ns);                             // before releasing outputs (policy below)
// Records get consecutive indices starting at WalOptions::first_index for a new log. Not
// thread-safe: one event loop owns a Wal.
//
// ## On-disk format (STYLE habit 11)
// The log is a sequence of segment files named `wal-<first index, 20 decimal digits>.log`, so
// that name order is index order. Each is preallocated to `segment_bytes` (zeros) and holds
// records back to back from offset 0, without padding; the zeros after the last record are free
// space. A record that would not fit in what is left of a segment starts the next segment. All
// integers are little-endian:
//
//   offset  size  field
//   0       8     checksum  XXH3-64 of bytes [8, 24 + length), seeded with index ^ kChecksumSalt
//   8       4     length    payload bytes (append() caps it at record_payload_bytes_max)
//   12      1     version   kFormatVersion (1)
//   13      1     type      the caller's record type, 1..255 (0 is reserved: zeros are not a
//   record) 14      2     reserved  0 16      8     index     this record's index; segment
//   `wal-N.log` starts with index N 24      length payload
//
// The checksum covers every other header field and the payload; its seed includes the index, so a
// record copied to another position (a misdirected write, a stale block) fails it even where the
// index field happens to match.
//
// ## Recovery (Wal::open)
// Segments are read in name order and every record validated: checksum, version, type, reserved,
// length, and that indices run on without a gap, within a segment and from one segment to the
// next. Scanning a segment stops at the first position that does not hold the expected valid
// record. What that means depends on where it is:
//  - Zeros to the end of the file (or the end of the file itself): the end of the log, the
//    preallocated free space. Nothing is dropped.
//  - In the LAST segment, anything else, and no valid record further on: a torn tail, i.e. the
//    last batch was being written when the machine stopped and was never synced, so it was never
//    acknowledged to anyone. It is dropped: recovery reports the bytes dropped and overwrites them
//    with zeros (synced) before the log takes new records, so that stale pieces of the torn batch
//    can never line up behind new records and pass for a later record.
//  - In the LAST segment with a valid record further on, or in any earlier segment (which was
//    synced before the next one was created, so it cannot be torn): corruption of records that
//    were synced and possibly acted upon. Serving from a log with a hole would mean serving wrong
//    state, so open() throws WalCorruption naming the file and byte offset, and the replica
//    refuses to start; an operator restores the replica (e.g. by state transfer from a peer).
//
// ## Limits of what recovery can tell apart
//  - A synced LAST record whose bytes later go bad looks exactly like a torn tail and is dropped
//    silently: a single copy with a checksum cannot distinguish "never finished" from "finished,
//    then damaged". Replication covers it (peers still hold the record).
//  - A disk that persists the sectors of one unsynced batch out of order and then loses power
//    can leave a hole followed by a complete later record of that batch; recovery calls it
//    corruption (refuses to start: safe, but unavailable). MemoryStorage models in-order
//    persistence only.
//  - A zeroed sector exactly after the last record of a non-last segment, with nothing after it,
//    is indistinguishable from free space. The next segment's first index still catches a lost
//    record there, since the indices must run on.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/types.h"
#include "storage/storage.h"

namespace lockstep::storage {

inline constexpr uint8_t kWalFormatVersion = 1;
inline constexpr size_t kWalRecordHeaderBytes = 24;
// Mixed into every checksum seed so that a WAL record never validates under another format's
// checksum convention that also seeds with a position ("lockstep" in ASCII).
inline constexpr uint64_t kWalChecksumSalt = 0x6c6f636b73746570ULL;
// Bounds on the configuration; a segment must hold at least one maximal record.
inline constexpr uint64_t kWalSegmentBytesMin = 4096;
inline constexpr uint64_t kWalSegmentBytesMax = uint64_t{1} << 30;

// Thrown by Wal::open (and replay) when records that were synced are damaged. Fatal: the replica
// must not start from this log.
class WalCorruption : public std::runtime_error {
 public:
  WalCorruption(std::string file, uint64_t offset, const std::string& reason);
  const std::string& file() const { return file_; }
  uint64_t offset() const { return offset_; }

 private:
  std::string file_;
  uint64_t offset_;
};

// When the log is fdatasynced; chosen per cluster in the cluster file (`wal_sync = "always"`).
// What each risks, given that commit() always at least writes the batch to the operating system:
//  - kAlways: commit() syncs every batch before the caller releases outputs that depend on it.
//    Nothing externally visible ever depends on a record a crash can lose. Cost: one fdatasync per
//    event-loop batch (about 160 us on our disk, amortised by group commit).
//  - kBatchInterval: commit() syncs only once the oldest unsynced record has waited
//    batch_interval_ns. A process crash loses nothing (the batch is in the kernel's page cache),
//    but a machine crash or power loss loses up to one interval of records whose effects may
//    already have been seen by clients and peers: on restart this replica may have forgotten
//    requests it acknowledged. Safe only while at most t replicas can lose power together.
//  - kNone: never syncs (segment seals excepted). A machine crash can lose any amount of the log.
//    For tests and benchmarks on throwaway machines only.
enum class SyncPolicy { kAlways, kBatchInterval, kNone };

std::optional<SyncPolicy> parse_sync_policy(
    std::string_view text);  // "always", "batch-interval", "none"
std::string_view to_string(SyncPolicy policy);

struct WalOptions {
  // Size of each segment file, preallocated on creation.
  uint64_t segment_bytes = uint64_t{64} << 20;
  // Largest payload of one record that append() accepts; lowered to what fits in a segment with
  // its header. Recovery accepts any length (a log written under a larger setting still opens).
  uint64_t record_payload_bytes_max = uint64_t{16} << 20;
  // Appended bytes buffered before append() writes them out itself (without syncing).
  uint64_t buffer_bytes_max = uint64_t{1} << 20;
  SyncPolicy sync_policy = SyncPolicy::kAlways;
  // kBatchInterval: the longest a record waits for its sync.
  uint64_t batch_interval_ns = 2'000'000;
  // Index of the first record of a log created by open() in an empty directory.
  uint64_t first_index = 1;
};

// One record as replay() hands it over; payload points into replay's buffer and is valid only
// during the visit call.
struct WalRecord {
  uint64_t index = 0;
  uint8_t type = 0;
  std::span<const uint8_t> payload;
};

// What Wal::open found.
struct WalRecovery {
  uint64_t segments = 0;
  uint64_t records = 0;
  // Bytes of a torn tail dropped from the last segment (0 when the log ended cleanly), where
  // they started, and in which file.
  uint64_t torn_bytes_dropped = 0;
  uint64_t torn_offset = 0;
  std::string torn_file;
};

class Wal {
 public:
  // Recovers the log in storage (a directory of its own), or creates an empty one. Validates
  // every record; drops and zeroes a torn tail; throws WalCorruption on damaged synced records
  // and StorageError on I/O errors. Storage must outlive the Wal.
  static Wal open(Storage& storage, WalOptions options);

  Wal(Wal&&) noexcept;
  Wal& operator=(Wal&&) noexcept;
  // Does no I/O: whatever was not committed is lost, exactly as in a crash.
  ~Wal();

  // Buffers a record and returns its index (next_index() before the call). type must be nonzero,
  // payload at most record_payload_bytes_max. Not durable until sync(); may write (not sync) the
  // buffer when it exceeds buffer_bytes_max, and seals the segment (a sync) when rolling over.
  uint64_t append(uint8_t type, std::span<const uint8_t> payload);
  // Writes the buffered batch to the operating system without syncing: survives a process crash,
  // not a machine crash.
  void flush();
  // Group commit: writes the buffered batch and issues one fdatasync that covers every record
  // appended so far, whatever the policy. On return synced_index() == next_index() - 1.
  void sync();
  // Whether the policy wants a sync now. kAlways: whenever something is unsynced. kBatchInterval:
  // when the oldest unsynced record was first seen by this call at least batch_interval_ns
  // before now_ns (the runtime calls it every loop iteration, so that is when the record was
  // appended, to within one iteration). kNone: never.
  bool should_sync_now(uint64_t now_ns);
  // The runtime's one call before releasing outputs: flush(), then sync() if should_sync_now.
  // Returns whether it synced.
  bool commit(uint64_t now_ns);
  // Removes whole segments all of whose records are below index (they are covered by a
  // checkpoint). The segment being written is never removed, so first_index() may stay below.
  void truncate_prefix(uint64_t index);

  // Visits, in order, the records with indices in [from_index, next_index()) that have been
  // flushed or synced (call flush() first to include the buffer). Re-validates what it reads and
  // throws WalCorruption if the disk changed under the log. from_index >= first_index().
  void replay(uint64_t from_index, const std::function<void(const WalRecord&)>& visit) const;

  uint64_t first_index() const;  // lowest index still in the log
  uint64_t next_index() const { return next_index_; }
  uint64_t synced_index() const { return synced_next_index_ - 1; }  // highest durable index
  const WalRecovery& recovery() const { return recovery_; }
  const WalOptions& options() const { return options_; }
  size_t segment_count() const { return segments_.size(); }

  // The segment file name for a first index, e.g. wal-00000000000000000001.log.
  static std::string segment_name(uint64_t first_index);
  // Appends one encoded record (header + payload) to out. Exposed for tests and the fuzzer.
  static void encode_record(uint64_t index, uint8_t type, std::span<const uint8_t> payload,
                            Bytes& out);

 private:
  struct Segment {
    std::string name;
    uint64_t first_index = 0;
    uint64_t next_index = 0;  // one past its last record written to the file
    uint64_t end_offset = 0;  // bytes of records written to the file
    uint64_t capacity = 0;    // preallocated size; records never go past it
  };

  Wal(Storage& storage, WalOptions options);
  void create_segment(uint64_t first_index);
  void roll_over();

  Storage* storage_;
  WalOptions options_;
  std::vector<Segment> segments_;  // ascending; the last one is open for writing
  std::unique_ptr<File> file_;     // the last segment
  Bytes buffer_;                   // encoded records not yet written to file_
  uint64_t buffer_first_index_ = 0;
  uint64_t next_index_ = 0;          // index the next append gets
  uint64_t written_next_index_ = 0;  // records below it are in the file (maybe unsynced)
  uint64_t synced_next_index_ = 0;   // records below it are durable
  std::optional<uint64_t>
      unsynced_since_ns_;       // kBatchInterval: when should_sync_now first saw unsynced records
  bool file_unsynced_ = false;  // file_ has writes since its last sync
  WalRecovery recovery_;
};

}  // namespace lockstep::storage
