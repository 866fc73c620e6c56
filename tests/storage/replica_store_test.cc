// The replica store (write-ahead log + checkpoints) against the in-memory disk: round trips,
// checkpoints and log truncation, crashes at every storage operation of write_checkpoint,
// damaged checkpoints, what recovery refuses; plus a smoke test on a real directory.
#include "storage/replica_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "storage/memory_storage.h"
#include "storage/posix_storage.h"
#include "test_util.h"

namespace lockstep::storage {
namespace {

using testing::payload_for;
using testing::type_for;

WalOptions small_segments() {
  WalOptions options;
  options.segment_bytes = 4096;  // a few records per segment: truncation removes segments often
  options.record_payload_bytes_max = 1024;
  return options;
}

Checkpoint checkpoint_at(uint64_t log_index, uint64_t salt = 0) {
  return Checkpoint{log_index, payload_for(log_index, 1000 + salt, 40),
                    payload_for(log_index, 2000 + salt, 400)};
}

// What the test appended, by index, so that recovered records can be checked against it.
struct Appended {
  std::map<uint64_t, StoredRecord> by_index;

  void append(ReplicaStore& store, uint64_t count, uint64_t salt = 0) {
    for (uint64_t i = 0; i < count; i++) {
      uint64_t index = store.next_index();
      Bytes payload = payload_for(index, salt);
      ASSERT_EQ(store.append(type_for(index), payload), index);
      by_index[index] = StoredRecord{index, type_for(index), payload};
    }
  }
  // After a crash the records from `from` on may be lost (and others appended under their
  // indices); forget them.
  void forget_from(uint64_t from) { by_index.erase(by_index.lower_bound(from), by_index.end()); }
};

// Checks that records run on from `from` without a gap and match what was appended.
void expect_records_from(const std::vector<StoredRecord>& records, uint64_t from,
                         const Appended& appended) {
  uint64_t expected = from;
  for (const StoredRecord& record : records) {
    ASSERT_EQ(record.index, expected);
    auto it = appended.by_index.find(record.index);
    ASSERT_NE(it, appended.by_index.end()) << "record " << record.index << " was never appended";
    EXPECT_EQ(record.type, it->second.type) << record.index;
    EXPECT_EQ(record.payload, it->second.payload) << record.index;
    expected++;
  }
}

size_t count_checkpoint_files(const Storage& disk) {
  size_t count = 0;
  for (const std::string& name : disk.list())
    count += name.starts_with("checkpoint-");
  return count;
}

TEST(ReplicaStore, CheckpointNamesSortByIndex) {
  EXPECT_EQ(ReplicaStore::checkpoint_name(1), "checkpoint-00000000000000000001.ckpt");
  EXPECT_LT(ReplicaStore::checkpoint_name(9), ReplicaStore::checkpoint_name(10));
}

TEST(ReplicaStore, FreshOpenThenReopenIsNotFresh) {
  MemoryStorage disk;
  {
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
    EXPECT_TRUE(recovery.fresh);
    EXPECT_FALSE(recovery.checkpoint.has_value());
    EXPECT_TRUE(recovery.records.empty());
    EXPECT_TRUE(recovery.skipped_checkpoints.empty());
    EXPECT_EQ(store.next_index(), 1u);
    EXPECT_EQ(store.disk_bytes(), 4096u);  // one preallocated segment
  }
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
  EXPECT_FALSE(recovery.fresh);
  EXPECT_TRUE(recovery.records.empty());
  EXPECT_EQ(store.next_index(), 1u);
}

TEST(ReplicaStore, RecordsRoundTripAcrossReopen) {
  MemoryStorage disk;
  Appended appended;
  {
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
    appended.append(store, 120);
    store.sync();
    EXPECT_EQ(store.synced_index(), 120u);
  }
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
  EXPECT_FALSE(recovery.checkpoint.has_value());
  ASSERT_EQ(recovery.records.size(), 120u);
  expect_records_from(recovery.records, 1, appended);
  EXPECT_EQ(store.next_index(), 121u);
  EXPECT_EQ(recovery.log.records, 120u);
}

TEST(ReplicaStore, CheckpointThenReopenGivesCheckpointAndOnlyLaterRecords) {
  MemoryStorage disk;
  Appended appended;
  {
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
    appended.append(store, 100);
    store.write_checkpoint(checkpoint_at(40));
    appended.append(store, 10);
    store.write_checkpoint(checkpoint_at(77));  // removes the one at 40
    EXPECT_GT(store.log().first_index(), 1u);   // whole segments below 77 are gone
    EXPECT_LE(store.log().first_index(), 77u);
    appended.append(store, 30);
    store.sync();
  }
  EXPECT_EQ(count_checkpoint_files(disk), 1u);
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
  ASSERT_TRUE(recovery.checkpoint.has_value());
  EXPECT_EQ(*recovery.checkpoint, checkpoint_at(77));
  EXPECT_TRUE(recovery.skipped_checkpoints.empty());
  ASSERT_EQ(recovery.records.size(), 140u - 77u + 1u);
  expect_records_from(recovery.records, 77, appended);
  EXPECT_EQ(store.next_index(), 141u);
}

TEST(ReplicaStore, CheckpointSyncsTheLogFirst) {
  MemoryStorage disk;
  Appended appended;
  {
    StoreRecovery recovery;
    WalOptions options = small_segments();
    options.sync_policy = SyncPolicy::kNone;
    ReplicaStore store = ReplicaStore::open(disk, options, recovery);
    appended.append(store, 20);  // never synced by the caller
    store.write_checkpoint(checkpoint_at(21));
    EXPECT_EQ(store.synced_index(), 20u);
  }
  disk.crash();
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
  ASSERT_TRUE(recovery.checkpoint.has_value());
  EXPECT_EQ(recovery.checkpoint->log_index, 21u);
  EXPECT_TRUE(recovery.records.empty());
  EXPECT_EQ(store.next_index(), 21u);
}

TEST(ReplicaStore, ManyCheckpointsKeepDiskBounded) {
  MemoryStorage disk;
  WalOptions options;
  options.segment_bytes = 64 * 1024;
  Appended appended;
  uint64_t bytes_max = 0;
  {
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, options, recovery);
    for (int round = 0; round < 200; round++) {
      appended.append(store, 100, round);  // ~15 KB of payload per round, ~2.4 MB in all
      store.sync();
      store.write_checkpoint(checkpoint_at(store.next_index() - 30, round));
      bytes_max = std::max(bytes_max, store.disk_bytes());
      ASSERT_EQ(count_checkpoint_files(disk), 1u);
    }
    EXPECT_EQ(store.next_index(), 20'001u);
  }
  // At most the segment being written and the one before it (records after the checkpoint may
  // straddle them), plus one checkpoint.
  EXPECT_LE(bytes_max, 2 * 64 * 1024 + 32 + 40 + 400 + 8);
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, options, recovery);
  ASSERT_TRUE(recovery.checkpoint.has_value());
  EXPECT_EQ(recovery.checkpoint->log_index, 19'971u);
  ASSERT_EQ(recovery.records.size(), 30u);
  for (const StoredRecord& record : recovery.records) {
    EXPECT_EQ(record.payload, payload_for(record.index, 199));
  }
}

TEST(ReplicaStore, UnsyncedRecordsAreAbsentAfterCrash) {
  MemoryStorage disk;
  Appended appended;
  {
    StoreRecovery recovery;
    WalOptions options = small_segments();
    options.sync_policy = SyncPolicy::kNone;
    ReplicaStore store = ReplicaStore::open(disk, options, recovery);
    appended.append(store, 10);
    store.sync();
    appended.append(store, 5);
    store.commit(0);  // written to the operating system, not synced
  }
  disk.crash();
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
  ASSERT_EQ(recovery.records.size(), 10u);
  expect_records_from(recovery.records, 1, appended);
  EXPECT_EQ(store.next_index(), 11u);
  EXPECT_EQ(recovery.log.torn_bytes_dropped, 0u);
}

TEST(ReplicaStore, TornLogTailIsReportedAndDropped) {
  // Unsynced writes torn at a crash, over seeds until one leaves a torn tail.
  bool saw_torn = false;
  for (uint64_t seed = 1; seed <= 40 && !saw_torn; seed++) {
    MemoryStorage disk;
    Appended appended;
    {
      StoreRecovery recovery;
      WalOptions options;
      options.segment_bytes = 64 * 1024;
      options.sync_policy = SyncPolicy::kNone;
      ReplicaStore store = ReplicaStore::open(disk, options, recovery);
      appended.append(store, 10);
      store.write_checkpoint(checkpoint_at(6));
      for (int batch = 0; batch < 5; batch++) {
        appended.append(store, 4, 1);
        store.commit(0);
      }
    }
    disk.crash(seed);
    StoreRecovery recovery;
    WalOptions options;
    options.segment_bytes = 64 * 1024;
    ReplicaStore store = ReplicaStore::open(disk, options, recovery);
    ASSERT_TRUE(recovery.checkpoint.has_value());
    EXPECT_EQ(recovery.checkpoint->log_index, 6u);
    ASSERT_GE(recovery.records.size(), 5u);  // 6..10 were synced by the checkpoint
    expect_records_from(recovery.records, 6, appended);
    if (recovery.log.torn_bytes_dropped > 0) {
      saw_torn = true;
      EXPECT_EQ(recovery.log.torn_file, Wal::segment_name(1));
    }
  }
  EXPECT_TRUE(saw_torn);
}

// A checkpoint file image from a store run on another disk, and the disk it leaves behind.
struct TwoCheckpoints {
  MemoryStorage disk;
  Appended appended;
  Bytes older_image;
  Bytes newer_image;
};

// Records 1..records_total (synced), checkpoints at older_index and newer_index, with the older
// one put back after the newer one removed it (as if a crash had interrupted the removal).
void make_two_checkpoints(TwoCheckpoints& setup, WalOptions options, uint64_t older_index,
                          uint64_t newer_index, uint64_t records_total) {
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(setup.disk, options, recovery);
  setup.appended.append(store, older_index - 1);
  store.write_checkpoint(checkpoint_at(older_index));
  setup.older_image = setup.disk.contents(ReplicaStore::checkpoint_name(older_index));
  setup.appended.append(store, records_total - (older_index - 1));
  store.write_checkpoint(checkpoint_at(newer_index));
  setup.newer_image = setup.disk.contents(ReplicaStore::checkpoint_name(newer_index));
  setup.disk.put_durable_file(ReplicaStore::checkpoint_name(older_index), setup.older_image);
}

TEST(ReplicaStore, EncodedCheckpointLayout) {
  Checkpoint checkpoint{5, to_bytes("protocol"), Bytes(300, 0xab)};
  Bytes image = ReplicaStore::encode_checkpoint(checkpoint);
  ASSERT_EQ(image.size(), 32u + 8u + 300u + 8u);
  EXPECT_EQ(std::string(image.begin(), image.begin() + 8), "LSCKPT01");
  EXPECT_EQ(image[8], 5);
  EXPECT_EQ(image[16], 8);
  EXPECT_EQ(image[24] | image[25] << 8, 300);
  EXPECT_EQ(std::string(image.begin() + 32, image.begin() + 40), "protocol");
  EXPECT_EQ(image[40], 0xab);
}

TEST(ReplicaStore, DamagedNewestCheckpointFallsBackToOlderAtAnyByte) {
  WalOptions options;
  options.segment_bytes = 64 * 1024;  // one segment: the log still covers the older checkpoint
  size_t image_bytes = ReplicaStore::encode_checkpoint(checkpoint_at(31)).size();
  for (size_t offset = 0; offset < image_bytes; offset++) {
    TwoCheckpoints setup;
    make_two_checkpoints(setup, options, 11, 31, 40);
    setup.disk.corrupt(ReplicaStore::checkpoint_name(31), offset,
                       static_cast<uint8_t>(1 + offset % 255));
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(setup.disk, options, recovery);
    ASSERT_TRUE(recovery.checkpoint.has_value()) << offset;
    EXPECT_EQ(*recovery.checkpoint, checkpoint_at(11)) << offset;
    ASSERT_EQ(recovery.skipped_checkpoints.size(), 1u) << offset;
    EXPECT_NE(recovery.skipped_checkpoints[0].find(ReplicaStore::checkpoint_name(31)),
              std::string::npos);
    ASSERT_EQ(recovery.records.size(), 30u) << offset;
    expect_records_from(recovery.records, 11, setup.appended);
  }
}

TEST(ReplicaStore, ShortOrMisnamedCheckpointsAreSkipped) {
  WalOptions options;
  options.segment_bytes = 64 * 1024;
  TwoCheckpoints setup;
  make_two_checkpoints(setup, options, 11, 31, 40);
  // A torn write of the newest: a prefix of its image.
  setup.disk.put_durable_file(ReplicaStore::checkpoint_name(31),
                              Bytes(setup.newer_image.begin(), setup.newer_image.end() - 9));
  // A valid image under another index's name (a copied file).
  setup.disk.put_durable_file(ReplicaStore::checkpoint_name(35), setup.older_image);
  // Too short for a header.
  setup.disk.put_durable_file(ReplicaStore::checkpoint_name(38), Bytes(10, 0x5a));
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(setup.disk, options, recovery);
  ASSERT_TRUE(recovery.checkpoint.has_value());
  EXPECT_EQ(recovery.checkpoint->log_index, 11u);
  ASSERT_EQ(recovery.skipped_checkpoints.size(), 3u);
  EXPECT_NE(recovery.skipped_checkpoints[0].find("shorter"), std::string::npos);
  EXPECT_NE(recovery.skipped_checkpoints[1].find("not the one in its name"), std::string::npos);
  EXPECT_NE(recovery.skipped_checkpoints[2].find("do not match the file size"), std::string::npos);

  // The next checkpoint replaces the torn file of the same name and removes every other one.
  store.write_checkpoint(checkpoint_at(31, 5));
  EXPECT_EQ(setup.disk.list().size(), 2u);  // one segment, one checkpoint
  StoreRecovery again;
  ReplicaStore reopened = ReplicaStore::open(setup.disk, options, again);
  ASSERT_TRUE(again.checkpoint.has_value());
  EXPECT_EQ(*again.checkpoint, checkpoint_at(31, 5));
  EXPECT_TRUE(again.skipped_checkpoints.empty());
  EXPECT_EQ(again.records.size(), 10u);
}

TEST(ReplicaStore, DamagedNewestWithOlderBelowTheLogThrows) {
  TwoCheckpoints setup;
  make_two_checkpoints(setup, small_segments(), 5, 150, 160);
  setup.disk.corrupt(ReplicaStore::checkpoint_name(150), 40);
  StoreRecovery recovery;
  try {
    ReplicaStore::open(setup.disk, small_segments(), recovery);
    FAIL() << "opened a store whose records after its only valid checkpoint are gone";
  } catch (const StoreCorruption& error) {
    std::string message = error.what();
    EXPECT_NE(message.find(ReplicaStore::checkpoint_name(5)), std::string::npos) << message;
    EXPECT_NE(message.find("are gone"), std::string::npos) << message;
    EXPECT_NE(message.find(ReplicaStore::checkpoint_name(150)), std::string::npos) << message;
  }
}

TEST(ReplicaStore, NoValidCheckpointOverATruncatedLogThrows) {
  MemoryStorage disk;
  {
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
    Appended appended;
    appended.append(store, 100);
    store.write_checkpoint(checkpoint_at(90));
    ASSERT_GT(store.log().first_index(), 1u);
  }
  disk.corrupt(ReplicaStore::checkpoint_name(90), 100);
  StoreRecovery recovery;
  EXPECT_THROW(ReplicaStore::open(disk, small_segments(), recovery), StoreCorruption);
}

TEST(ReplicaStore, CheckpointBeyondTheLogThrows) {
  MemoryStorage disk;
  {
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
    Appended appended;
    appended.append(store, 10);
    store.sync();
  }
  disk.put_durable_file(ReplicaStore::checkpoint_name(50),
                        ReplicaStore::encode_checkpoint(checkpoint_at(50)));
  StoreRecovery recovery;
  EXPECT_THROW(ReplicaStore::open(disk, small_segments(), recovery), StoreCorruption);
}

TEST(ReplicaStore, RefusesUnknownFilesAndCheckpointsWithoutALog) {
  {
    MemoryStorage disk;
    disk.put_durable_file("notes.txt", to_bytes("hello"));
    StoreRecovery recovery;
    try {
      ReplicaStore::open(disk, small_segments(), recovery);
      FAIL() << "opened a directory holding an unknown file";
    } catch (const StoreCorruption& error) {
      EXPECT_NE(std::string(error.what()).find("notes.txt"), std::string::npos);
    }
    EXPECT_EQ(disk.list().size(), 1u);  // nothing created next to it
  }
  {
    MemoryStorage disk;
    disk.put_durable_file("wal-1.log", Bytes(4096, 0));  // not a segment name: too few digits
    StoreRecovery recovery;
    EXPECT_THROW(ReplicaStore::open(disk, small_segments(), recovery), StoreCorruption);
  }
  {
    MemoryStorage disk;
    disk.put_durable_file(ReplicaStore::checkpoint_name(7),
                          ReplicaStore::encode_checkpoint(checkpoint_at(7)));
    StoreRecovery recovery;
    EXPECT_THROW(ReplicaStore::open(disk, small_segments(), recovery), StoreCorruption);
    EXPECT_EQ(disk.list().size(), 1u);  // no log was created
  }
}

TEST(ReplicaStore, WriteCheckpointRejectsBadIndices) {
  MemoryStorage disk;
  {
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
    Appended appended;
    appended.append(store, 20);
    EXPECT_THROW(store.write_checkpoint(checkpoint_at(22)), std::invalid_argument);
    store.write_checkpoint(checkpoint_at(21));  // everything so far: allowed
    EXPECT_THROW(store.write_checkpoint(checkpoint_at(15)), std::invalid_argument);
    // The same checkpoint again is harmless; a different one at the same index is refused.
    store.write_checkpoint(checkpoint_at(21));
    EXPECT_THROW(store.write_checkpoint(checkpoint_at(21, 1)), std::invalid_argument);
  }
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
  ASSERT_TRUE(recovery.checkpoint.has_value());
  EXPECT_EQ(*recovery.checkpoint, checkpoint_at(21));
}

TEST(ReplicaStore, RewritingADamagedCurrentCheckpointRepairsIt) {
  MemoryStorage disk;
  {
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
    Appended appended;
    appended.append(store, 100);
    store.write_checkpoint(checkpoint_at(90));
    disk.corrupt(ReplicaStore::checkpoint_name(90), 50);
    store.write_checkpoint(checkpoint_at(90));  // not "a different checkpoint": it is invalid
  }
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
  ASSERT_TRUE(recovery.checkpoint.has_value());
  EXPECT_EQ(*recovery.checkpoint, checkpoint_at(90));
  EXPECT_EQ(recovery.records.size(), 11u);
}

// Storage that dies (throws InjectedCrash) at its n-th mutating operation, so a test can crash
// a write_checkpoint between any two of its steps; the MemoryStorage underneath then crashes.
struct InjectedCrash {};

class CrashingStorage final : public Storage {
 public:
  explicit CrashingStorage(MemoryStorage& disk) : disk_(disk) {}
  // Throws at the n-th mutating operation from now (0: the next one).
  void crash_at(uint64_t operation) {
    operations_ = 0;
    crash_at_ = operation;
  }
  bool crashed() const { return crashed_; }

  std::unique_ptr<File> open(std::string_view name, OpenMode mode) override {
    if (mode == OpenMode::kCreateNew) step();
    return std::make_unique<CrashingFile>(*this, disk_.open(name, mode));
  }
  std::vector<std::string> list() const override { return disk_.list(); }
  void remove(std::string_view name) override {
    step();
    disk_.remove(name);
  }
  void sync_directory() override {
    step();
    disk_.sync_directory();
  }
  std::string describe() const override { return disk_.describe(); }

 private:
  class CrashingFile final : public File {
   public:
    CrashingFile(CrashingStorage& owner, std::unique_ptr<File> file)
        : owner_(owner), file_(std::move(file)) {}
    uint64_t size() const override { return file_->size(); }
    size_t read(uint64_t offset, std::span<uint8_t> out) const override {
      return file_->read(offset, out);
    }
    void write_at(uint64_t offset, std::span<const uint8_t> data) override {
      owner_.step();
      file_->write_at(offset, data);
    }
    void append(std::span<const uint8_t> data) override {
      owner_.step();
      file_->append(data);
    }
    void truncate(uint64_t size) override {
      owner_.step();
      file_->truncate(size);
    }
    void preallocate(uint64_t size) override {
      owner_.step();
      file_->preallocate(size);
    }
    void sync() override {
      owner_.step();
      file_->sync();
    }

   private:
    CrashingStorage& owner_;
    std::unique_ptr<File> file_;
  };

  void step() {
    if (operations_++ == crash_at_) {
      crashed_ = true;
      throw InjectedCrash{};
    }
  }

  MemoryStorage& disk_;
  uint64_t operations_ = 0;
  uint64_t crash_at_ = UINT64_MAX;
  bool crashed_ = false;
};

TEST(ReplicaStore, CrashAtEveryStepOfWriteCheckpointRecovers) {
  // Before: records 1..60 synced, checkpoint at 20, records 61..70 appended but not synced. The
  // new checkpoint at 66 makes write_checkpoint sync the log, write the file, remove the old one
  // and truncate several segments: a crash after any of those operations, with any torn prefix
  // of the unsynced ones, must recover to one of the two checkpoints and the right records.
  const std::vector<std::optional<uint64_t>> seeds = {std::nullopt, 1, 2, 3, 4, 5, 6, 7};
  bool completed = false;
  uint64_t steps = 0;
  for (uint64_t crash_at = 0; !completed; crash_at++) {
    ASSERT_LT(crash_at, 200u) << "write_checkpoint never completed";
    for (const auto& seed : seeds) {
      MemoryStorage disk;
      CrashingStorage crashing(disk);
      Appended appended;
      {
        StoreRecovery recovery;
        ReplicaStore store = ReplicaStore::open(crashing, small_segments(), recovery);
        appended.append(store, 60);
        store.write_checkpoint(checkpoint_at(20));
        appended.append(store, 10, 1);
        crashing.crash_at(crash_at);  // counts write_checkpoint's own operations only
        try {
          store.write_checkpoint(checkpoint_at(66));
        } catch (const InjectedCrash&) {
        }
      }
      if (!crashing.crashed()) {
        completed = true;
        steps = crash_at;
      }
      disk.crash(seed);
      StoreRecovery recovery;
      SCOPED_TRACE("crash at operation " + std::to_string(crash_at) + ", seed " +
                   (seed ? std::to_string(*seed) : "none"));
      ReplicaStore store = ReplicaStore::open(disk, small_segments(), recovery);
      ASSERT_TRUE(recovery.checkpoint.has_value());
      uint64_t log_index = recovery.checkpoint->log_index;
      ASSERT_TRUE(log_index == 20 || log_index == 66) << log_index;
      EXPECT_EQ(*recovery.checkpoint, checkpoint_at(log_index));
      expect_records_from(recovery.records, log_index, appended);
      // 21..60 were durable before; a durable new checkpoint implies 61..65 were synced.
      uint64_t durable_end = log_index == 66 ? 66 : 61;
      ASSERT_GE(log_index + recovery.records.size(), durable_end);
      EXPECT_EQ(store.next_index(), log_index + recovery.records.size());
      EXPECT_LE(count_checkpoint_files(disk), 2u);

      // The recovered store goes on: new records, a new checkpoint, and a clean reopen.
      appended.forget_from(store.next_index());
      appended.append(store, 30, 2);
      store.write_checkpoint(checkpoint_at(store.next_index() - 5, 3));
      StoreRecovery again;
      ReplicaStore reopened = ReplicaStore::open(disk, small_segments(), again);
      ASSERT_TRUE(again.checkpoint.has_value());
      EXPECT_EQ(again.records.size(), 5u);
      EXPECT_TRUE(again.skipped_checkpoints.empty());
    }
  }
  // Sync the log (write, sync), create, write, sync, sync_directory, remove + sync_directory,
  // and a segment removal + sync_directory per truncated segment.
  EXPECT_GE(steps, 10u);
}

// A fresh directory under TMPDIR (or /tmp), removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base ? base : "/tmp") + "/lockstep-store-XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ReplicaStore, PosixSmoke) {
  TempDir dir;
  WalOptions options = small_segments();
  Appended appended;
  {
    PosixStorage disk(dir.path());
    StoreRecovery recovery;
    ReplicaStore store = ReplicaStore::open(disk, options, recovery);
    EXPECT_TRUE(recovery.fresh);
    appended.append(store, 100);
    store.write_checkpoint(checkpoint_at(50));
    appended.append(store, 100);
    store.write_checkpoint(checkpoint_at(180));
    appended.append(store, 10);
    store.sync();
    EXPECT_LE(store.disk_bytes(), 3u * 4096u + 480u);
  }
  size_t checkpoints = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path()))
    checkpoints += entry.path().extension() == ".ckpt";
  EXPECT_EQ(checkpoints, 1u);
  PosixStorage disk(dir.path());
  StoreRecovery recovery;
  ReplicaStore store = ReplicaStore::open(disk, options, recovery);
  EXPECT_FALSE(recovery.fresh);
  ASSERT_TRUE(recovery.checkpoint.has_value());
  EXPECT_EQ(*recovery.checkpoint, checkpoint_at(180));
  ASSERT_EQ(recovery.records.size(), 31u);
  expect_records_from(recovery.records, 180, appended);
}

}  // namespace
}  // namespace lockstep::storage
