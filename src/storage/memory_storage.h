// Storage in memory that models durability precisely, for tests, fuzzing and (later) the
// simulator's disk faults.
//
// The model follows storage.h's contract and no more. The directory is a map from names to inodes,
// kept twice: as the program sees it and as it was at the last sync_directory(). Each inode keeps
// its durable bytes (as of its last sync), its current bytes, and the list of operations since
// that sync. A crash:
//  - reverts the directory to its durable map (unsynced creations vanish, unsynced removals are
//    undone) and drops inodes no name refers to;
//  - per inode, either drops every unsynced operation (crash()) or, with a seed, keeps a random
//    prefix of them with the last kept write possibly cut short at a random byte (a torn write;
//    crash(seed)). Whole-prefix is the order a single-queue disk persists in; a disk that
//    reorders sectors within an unsynced batch is not modelled (see wal.h, "limits").
// corrupt() flips bits of the durable and the current bytes alike: the medium went bad.
// Handles opened before a crash belong to the dead process: using one throws StorageError.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/types.h"
#include "storage/storage.h"

namespace lockstep::storage {

class MemoryStorage final : public Storage {
 public:
  MemoryStorage() = default;
  MemoryStorage(const MemoryStorage&) = delete;
  MemoryStorage& operator=(const MemoryStorage&) = delete;

  std::unique_ptr<File> open(std::string_view name, OpenMode mode) override;
  std::vector<std::string> list() const override;
  void remove(std::string_view name) override;
  void sync_directory() override;
  std::string describe() const override { return "memory:"; }

  // Simulates a machine crash (power loss). Without a seed every unsynced operation is lost; with
  // one, a seeded random prefix of each file's unsynced operations survives, the last possibly
  // torn. Deterministic per seed.
  void crash(std::optional<uint64_t> torn_seed = std::nullopt);
  // XORs mask into the byte at offset of the named file, durable and current (a bad sector).
  void corrupt(std::string_view name, uint64_t offset, uint8_t mask = 0xff);
  // Creates or replaces a file whose bytes are already durable, name included (test setup,
  // fuzzing: "this is what the disk held when the replica started").
  void put_durable_file(std::string_view name, Bytes contents);
  // The current bytes of a file (as a read would see them). Throws if there is no such file.
  Bytes contents(std::string_view name) const;

  // Counters for tests (group commit: one data sync per batch).
  uint64_t data_sync_count() const { return data_sync_count_; }
  uint64_t directory_sync_count() const { return directory_sync_count_; }
  uint64_t write_count() const { return write_count_; }

 private:
  class MemoryFile;
  friend class MemoryFile;

  // One unsynced change to an inode, replayed onto the durable bytes at a crash that keeps it.
  struct Operation {
    enum class Kind { kWrite, kResize } kind = Kind::kWrite;
    uint64_t offset = 0;  // kWrite: where; kResize: the new size
    Bytes data;           // kWrite only
  };
  struct Inode {
    Bytes durable;
    Bytes current;
    std::vector<Operation> unsynced;
    int open_handles = 0;
  };
  using InodeId = uint64_t;

  Inode& inode_of(InodeId id);
  void check_epoch(uint64_t epoch) const;
  static void apply(Bytes& bytes, const Operation& operation);

  std::map<std::string, InodeId, std::less<>> names_;          // as the program sees them
  std::map<std::string, InodeId, std::less<>> durable_names_;  // as of the last sync_directory
  std::map<InodeId, Inode> inodes_;
  InodeId next_inode_ = 1;
  uint64_t epoch_ = 0;  // bumped by crash(); handles from an older epoch are dead
  uint64_t data_sync_count_ = 0;
  uint64_t directory_sync_count_ = 0;
  uint64_t write_count_ = 0;
};

}  // namespace lockstep::storage
