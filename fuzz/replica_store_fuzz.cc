// libFuzzer target for the replica store's crash consistency (storage/replica_store.h). The input
// is a script of operations on one store over MemoryStorage: append records, commit (written, not
// synced), sync, write a checkpoint, crash (losing or tearing unsynced writes) and recover, crash
// in the middle of the next storage operations (a write_checkpoint cut short anywhere), and damage
// a byte of a checkpoint file.
// Oracles at every recovery: a checkpoint is one that was written (its contents exactly), never
// older than the last one write_checkpoint completed, unless a checkpoint file was damaged;
// records run on from its log_index without a gap, each exactly as appended, and reach at least
// the last index that was synced. Without damage, recovery never throws; with it, it may throw
// StoreCorruption or WalCorruption (and the run ends), never anything else.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <span>

#include "storage/memory_storage.h"
#include "storage/replica_store.h"

namespace {

using lockstep::Bytes;
using namespace lockstep::storage;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "replica_store_fuzz: %s\n", what);
  std::abort();
}

struct InjectedCrash {};

// Passes everything to the MemoryStorage, but throws InjectedCrash at the armed mutating
// operation, so that a crash can fall between any two steps of the store's work.
class CrashingStorage final : public Storage {
 public:
  explicit CrashingStorage(MemoryStorage& disk) : disk_(disk) {}
  void arm(uint64_t operations_left) { left_ = operations_left; }
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
    if (left_ && (*left_)-- == 0) {
      left_.reset();
      throw InjectedCrash{};
    }
  }

  MemoryStorage& disk_;
  std::optional<uint64_t> left_;
};

Bytes payload_for(uint64_t index, uint64_t generation) {
  Bytes payload(static_cast<size_t>((index * 7 + generation * 13) % 200));
  for (size_t i = 0; i < payload.size(); i++)
    payload[i] = static_cast<uint8_t>(index * 31 + generation + i);
  return payload;
}

Checkpoint checkpoint_for(uint64_t log_index) {
  return Checkpoint{log_index, payload_for(log_index, 1000), payload_for(log_index + 1, 2000)};
}

WalOptions options() {
  WalOptions wal_options;
  wal_options.segment_bytes = 4096;  // truncation removes segments often
  wal_options.record_payload_bytes_max = 1024;
  wal_options.sync_policy = SyncPolicy::kNone;  // commit() writes, only sync() syncs
  return wal_options;
}

class Run {
 public:
  // Returns false when recovery reported corruption (after damage was injected): end the run.
  bool recover(std::optional<uint64_t> seed) {
    StoreRecovery recovery;
    for (;;) {
      store_.reset();
      disk_.crash(seed);
      try {
        store_.emplace(ReplicaStore::open(crashing_, options(), recovery));
        break;
      } catch (const InjectedCrash&) {
        seed = seed.value_or(0) + 1;  // crashed while recovering: crash again, recover again
      } catch (const StoreCorruption&) {
        if (!damaged_) fail("StoreCorruption without damage");
        return false;
      } catch (const WalCorruption&) {
        if (!damaged_) fail("WalCorruption without damage");
        return false;
      }
    }
    uint64_t from = 1;
    if (recovery.checkpoint) {
      from = recovery.checkpoint->log_index;
      if (*recovery.checkpoint != checkpoint_for(from)) fail("checkpoint contents differ");
      if (!damaged_ && from < completed_checkpoint_) fail("recovered an older checkpoint");
      if (from > attempted_checkpoint_) fail("recovered a checkpoint never written");
    } else if (!damaged_ && completed_checkpoint_ > 0) {
      fail("lost a completed checkpoint");
    }
    uint64_t expected = from;
    for (const StoredRecord& record : recovery.records) {
      if (record.index != expected++) fail("records do not run on from the checkpoint");
      auto it = appended_.find(record.index);
      if (it == appended_.end() || record.payload != payload_for(record.index, it->second) ||
          record.type != static_cast<uint8_t>(1 + record.index % 255)) {
        fail("a record differs from what was appended");
      }
    }
    if (expected < synced_next_) fail("lost synced records");
    if (store_->next_index() != expected) fail("next_index disagrees with the records");
    // Indices from here on will be appended anew.
    appended_.erase(appended_.lower_bound(expected), appended_.end());
    synced_next_ = expected;
    // Without damage, a checkpoint attempted but not recovered is gone for good. With it, a
    // skipped file may turn valid again (the same byte flipped back), so keep the bound.
    completed_checkpoint_ = recovery.checkpoint ? from : 0;
    if (!damaged_) attempted_checkpoint_ = completed_checkpoint_;
    return true;
  }

  // One scripted operation; false ends the run.
  bool step(uint8_t op, uint8_t argument) {
    try {
      switch (op % 7) {
        case 0:
          for (int i = 0; i <= argument % 8; i++) {
            uint64_t index = store_->next_index();
            appended_[index] = generation_;
            store_->append(static_cast<uint8_t>(1 + index % 255), payload_for(index, generation_));
          }
          return true;
        case 1:
          store_->commit(0);
          return true;
        case 2:
          store_->sync();
          synced_next_ = store_->next_index();
          return true;
        case 3: {
          uint64_t low = std::max(store_->log().first_index(), completed_checkpoint_);
          uint64_t high = store_->next_index();
          uint64_t at = low + argument % (high - low + 1);
          attempted_checkpoint_ = std::max(attempted_checkpoint_, at);
          store_->write_checkpoint(checkpoint_for(at));
          completed_checkpoint_ = at;
          synced_next_ = store_->next_index();
          return true;
        }
        case 4:
          generation_++;
          return recover(argument % 4 == 0 ? std::nullopt : std::optional<uint64_t>(argument));
        case 5:
          crashing_.arm(argument % 16);
          return true;
        case 6: {
          for (const std::string& name : disk_.list()) {
            if (!name.starts_with("checkpoint-")) continue;
            uint64_t size = disk_.contents(name).size();
            disk_.corrupt(name, (argument * 37u) % size, static_cast<uint8_t>(1 | argument));
            damaged_ = true;
            break;
          }
          return true;
        }
      }
    } catch (const InjectedCrash&) {
      generation_++;
      return recover(argument);
    }
    return true;
  }

  bool start() {
    StoreRecovery recovery;
    store_.emplace(ReplicaStore::open(crashing_, options(), recovery));
    if (!recovery.fresh) fail("a new disk is not fresh");
    return true;
  }

 private:
  MemoryStorage disk_;
  CrashingStorage crashing_{disk_};
  std::optional<ReplicaStore> store_;
  std::map<uint64_t, uint64_t> appended_;  // index -> generation its payload was made with
  uint64_t generation_ = 0;
  uint64_t synced_next_ = 1;           // records below it were synced
  uint64_t completed_checkpoint_ = 0;  // log_index of the last write_checkpoint that returned
  uint64_t attempted_checkpoint_ = 0;  // highest log_index write_checkpoint was called with
  bool damaged_ = false;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // long scripts add little but time
  Run run;
  try {
    run.start();
  } catch (const InjectedCrash&) {
    fail("crash injected before arming");
  }
  for (size_t i = 0; i + 1 < size; i += 2) {
    if (!run.step(data[i], data[i + 1])) return 0;
  }
  return 0;
}
