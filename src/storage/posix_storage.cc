#include "storage/posix_storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace lockstep::storage {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path, int error) {
  throw StorageError(what + " " + path + ": " + std::strerror(error));
}

// Names are plain file names inside the storage directory: a '/' or ".." would escape it.
void check_name(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos) {
    throw StorageError("invalid file name '" + std::string(name) + "'");
  }
}

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override { ::close(fd_); }
  PosixFile(const PosixFile&) = delete;
  PosixFile& operator=(const PosixFile&) = delete;

  uint64_t size() const override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail("fstat", path_, errno);
    return static_cast<uint64_t>(st.st_size);
  }

  size_t read(uint64_t offset, std::span<uint8_t> out) const override {
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n =
          ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("pread", path_, errno);
      if (n == 0) break;  // end of file
      done += static_cast<size_t>(n);
    }
    return done;
  }

  void write_at(uint64_t offset, std::span<const uint8_t> data) override {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n =
          ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail("pwrite", path_, errno);
      done += static_cast<size_t>(n);  // a short write (e.g. a signal) continues where it stopped
    }
  }

  void append(std::span<const uint8_t> data) override { write_at(size(), data); }

  void truncate(uint64_t new_size) override {
    if (::ftruncate(fd_, static_cast<off_t>(new_size)) != 0) fail("ftruncate", path_, errno);
  }

  void preallocate(uint64_t new_size) override {
    uint64_t current = size();
    if (new_size <= current) return;
    // Mode 0 allocates blocks and extends the size, so the data syncs that follow do not change
    // the file's size. posix_fallocate is the fallback for file systems without fallocate (glibc
    // emulates it by writing zeros, slower but the same result).
    if (::fallocate(fd_, 0, static_cast<off_t>(current), static_cast<off_t>(new_size - current)) ==
        0) {
      return;
    }
    if (errno != EOPNOTSUPP && errno != ENOSYS) fail("fallocate", path_, errno);
    int error =
        ::posix_fallocate(fd_, static_cast<off_t>(current), static_cast<off_t>(new_size - current));
    if (error != 0) fail("posix_fallocate", path_, error);
  }

  void sync() override {
    while (::fdatasync(fd_) != 0) {
      // After a failed fdatasync the kernel may have dropped the dirty pages (the 2018 "fsyncgate"
      // finding), so retrying could report success for data that is gone: only EINTR is retried.
      if (errno != EINTR) fail("fdatasync", path_, errno);
    }
  }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

PosixStorage::PosixStorage(std::string directory) : directory_(std::move(directory)) {
  if (::mkdir(directory_.c_str(), 0755) != 0 && errno != EEXIST) {
    fail("mkdir", directory_, errno);
  }
  directory_fd_ = ::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory_fd_ < 0) fail("open directory", directory_, errno);
}

PosixStorage::~PosixStorage() {
  ::close(directory_fd_);
}

std::unique_ptr<File> PosixStorage::open(std::string_view name, OpenMode mode) {
  check_name(name);
  std::string file_name(name);
  int flags = O_RDWR | O_CLOEXEC;
  if (mode == OpenMode::kCreateNew) flags |= O_CREAT | O_EXCL;
  int fd = ::openat(directory_fd_, file_name.c_str(), flags, 0644);
  if (fd < 0) fail("open", directory_ + "/" + file_name, errno);
  return std::make_unique<PosixFile>(fd, directory_ + "/" + file_name);
}

std::vector<std::string> PosixStorage::list() const {
  // A second descriptor: readdir consumes the stream and closedir closes it.
  int fd = ::openat(directory_fd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("open directory", directory_, errno);
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    int error = errno;
    ::close(fd);
    fail("fdopendir", directory_, error);
  }
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(directory_fd_, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(st.st_mode)) {
      names.push_back(std::move(name));
    }
    errno = 0;
  }
  int error = errno;
  ::closedir(dir);
  if (error != 0) fail("readdir", directory_, error);
  std::sort(names.begin(), names.end());
  return names;
}

void PosixStorage::remove(std::string_view name) {
  check_name(name);
  std::string file_name(name);
  if (::unlinkat(directory_fd_, file_name.c_str(), 0) != 0) {
    fail("unlink", directory_ + "/" + file_name, errno);
  }
}

void PosixStorage::sync_directory() {
  while (::fsync(directory_fd_) != 0) {
    if (errno != EINTR) fail("fsync directory", directory_, errno);
  }
}

}  // namespace lockstep::storage
