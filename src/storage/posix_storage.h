// Storage on a real POSIX directory: pread/pwrite, fdatasync for File::sync, fsync of the
// directory for sync_directory, fallocate for preallocation. Every descriptor is O_CLOEXEC so a
// child process (the local cluster launcher forks replicas) never inherits the log's files.
#pragma once

#include <string>

#include "storage/storage.h"

namespace lockstep::storage {

class PosixStorage final : public Storage {
 public:
  // Opens the directory, creating it (one level) if it does not exist. Throws StorageError.
  explicit PosixStorage(std::string directory);
  ~PosixStorage() override;
  PosixStorage(const PosixStorage&) = delete;
  PosixStorage& operator=(const PosixStorage&) = delete;

  std::unique_ptr<File> open(std::string_view name, OpenMode mode) override;
  std::vector<std::string> list() const override;
  void remove(std::string_view name) override;
  void sync_directory() override;
  std::string describe() const override { return directory_; }

 private:
  std::string directory_;
  int directory_fd_ = -1;
};

}  // namespace lockstep::storage
