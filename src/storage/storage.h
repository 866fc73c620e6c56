// The disk as the write-ahead log sees it: a flat directory of files with explicit durability.
// Two implementations share this interface: PosixStorage (posix_storage.h, the real disk) and
// MemoryStorage (memory_storage.h, which models what survives a crash precisely, so the simulator
// and the tests can lose unsynced writes, tear writes and corrupt sectors; STYLE habit 3).
//
// The durability contract every implementation follows, and every caller may rely on no more than:
//  - Data written by append/write_at/truncate/preallocate is durable only after File::sync()
//    returns (fdatasync: the data, and the metadata needed to read it back such as the size).
//  - A created or removed file name is durable only after Storage::sync_directory() returns.
//    A file whose creation was not yet made durable may vanish at a crash, data and all; a removal
//    that was not made durable may be undone.
//  - Until then, a crash may keep any prefix of the unsynced operations, the last one possibly
//    only in part (a torn write). Bytes that were durable stay as they were unless the medium
//    itself corrupts them, which only a checksum can notice.
// Errors (a full disk, an I/O error, a missing file) throw StorageError; none is retried here.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::storage {

// An operating-system or model error, with the file and operation in the message. Fatal for the
// write-ahead log: a replica that cannot persist must not pretend it did.
class StorageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One open file. Not thread-safe; owned by whoever opened it, and closed when destroyed.
class File {
 public:
  virtual ~File() = default;

  // Current size in bytes, including unsynced writes and preallocated space.
  virtual uint64_t size() const = 0;
  // Reads up to out.size() bytes at offset; returns how many were read (fewer only at the end of
  // the file). Sees unsynced writes.
  virtual size_t read(uint64_t offset, std::span<uint8_t> out) const = 0;
  // Writes all of data at offset, extending the file (zero-filled) if offset is past its end.
  virtual void write_at(uint64_t offset, std::span<const uint8_t> data) = 0;
  // Writes all of data at the current end of the file.
  virtual void append(std::span<const uint8_t> data) = 0;
  // Sets the size; bytes past it are gone, a grown file reads as zeros.
  virtual void truncate(uint64_t size) = 0;
  // Makes the file at least size bytes long with the new space allocated and reading as zeros,
  // so later writes into it do not have to grow the file (an fdatasync after a write that grows
  // a file also commits the new size and block allocation, which costs about 2.5x on our disk).
  virtual void preallocate(uint64_t size) = 0;
  // Makes every earlier write to this file durable (fdatasync).
  virtual void sync() = 0;
};

enum class OpenMode {
  kExisting,   // the file must exist
  kCreateNew,  // the file must not exist; it is created empty
};

// A directory of files named by plain names (no '/'). Not thread-safe.
class Storage {
 public:
  virtual ~Storage() = default;

  virtual std::unique_ptr<File> open(std::string_view name, OpenMode mode) = 0;
  // The regular files in the directory, sorted by name.
  virtual std::vector<std::string> list() const = 0;
  // Removes the name; the removal is durable after sync_directory(). The file must not be open.
  virtual void remove(std::string_view name) = 0;
  // Makes earlier creations and removals durable (fsync of the directory).
  virtual void sync_directory() = 0;
  // Where the files live, for error messages ("/var/lib/lockstep/r0" or "memory:").
  virtual std::string describe() const = 0;
};

}  // namespace lockstep::storage
