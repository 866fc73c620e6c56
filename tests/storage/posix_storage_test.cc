// The write-ahead log on a real directory: the same round trip, torn tail and corruption checks
// as against MemoryStorage, through the POSIX calls. Plus a DISABLED_ measurement of sync costs.
#include "storage/posix_storage.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "storage/wal.h"
#include "test_util.h"

namespace lockstep::storage {
namespace {

using testing::payload_for;
using testing::read_all;
using testing::Recorded;
using testing::type_for;

// A fresh directory under base (TMPDIR or /tmp), removed with everything in it at the end.
class TempDir {
 public:
  explicit TempDir(const char* base = nullptr) {
    if (base == nullptr) base = std::getenv("TMPDIR");
    std::string pattern = std::string(base ? base : "/tmp") + "/lockstep-wal-XXXXXX";
    char* made = ::mkdtemp(pattern.data());
    if (made == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(PosixStorage, WalRoundTripRolloverAndReopen) {
  TempDir dir;
  WalOptions options;
  options.segment_bytes = 8192;
  options.record_payload_bytes_max = 1024;
  std::vector<Recorded> appended;
  {
    PosixStorage disk(dir.path());
    Wal wal = Wal::open(disk, options);
    for (uint64_t i = 1; i <= 300; i++) {
      appended.push_back({i, type_for(i), payload_for(i)});
      wal.append(type_for(i), appended.back().payload);
      if (i % 17 == 0) wal.sync();
    }
    wal.sync();
    EXPECT_GT(wal.segment_count(), 3u);
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_EQ(std::filesystem::file_size(entry.path()), 8192u) << entry.path();
  }
  PosixStorage disk(dir.path());
  Wal wal = Wal::open(disk, options);
  EXPECT_EQ(wal.recovery().torn_bytes_dropped, 0u);
  EXPECT_EQ(read_all(wal), appended);
  wal.truncate_prefix(200);
  EXPECT_LE(wal.first_index(), 200u);
  EXPECT_EQ(disk.list().size(), wal.segment_count());
}

TEST(PosixStorage, TornTailAndCorruptionOnARealFile) {
  TempDir dir;
  WalOptions options;
  options.segment_bytes = 8192;
  uint64_t record_bytes = kWalRecordHeaderBytes + 100;
  {
    PosixStorage disk(dir.path());
    Wal wal = Wal::open(disk, options);
    for (int i = 0; i < 5; i++)
      wal.append(1, Bytes(100, static_cast<uint8_t>(i)));
    wal.sync();
  }
  std::string path = dir.path() + "/" + Wal::segment_name(1);
  auto poke = [&](uint64_t offset, uint8_t value) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, &value, 1, static_cast<off_t>(offset)), 1);
    ::close(fd);
  };
  poke(4 * record_bytes + 50, 0xee);  // inside the last record: a torn tail
  {
    PosixStorage disk(dir.path());
    Wal wal = Wal::open(disk, options);
    EXPECT_EQ(wal.next_index(), 5u);
    EXPECT_EQ(wal.recovery().torn_offset, 4 * record_bytes);
    wal.append(2, Bytes(100, 9));
    wal.append(2, Bytes(100, 9));
    wal.sync();
  }
  poke(2 * record_bytes + 30, 0xee);  // inside record 3, valid records after: corruption
  PosixStorage disk(dir.path());
  try {
    Wal::open(disk, options);
    FAIL() << "corruption not detected";
  } catch (const WalCorruption& e) {
    EXPECT_EQ(e.file(), path);
    EXPECT_EQ(e.offset(), 2 * record_bytes);
  }
}

TEST(PosixStorage, ErrorsNameTheFile) {
  TempDir dir;
  PosixStorage disk(dir.path());
  try {
    disk.open("missing", OpenMode::kExisting);
    FAIL();
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path() + "/missing"), std::string::npos);
  }
  EXPECT_THROW(disk.open("../escape", OpenMode::kCreateNew), StorageError);
  disk.open("present", OpenMode::kCreateNew);
  EXPECT_THROW(disk.open("present", OpenMode::kCreateNew), StorageError);
  EXPECT_EQ(disk.list(), std::vector<std::string>{"present"});
}

// The local cluster launcher forks replicas: a descriptor without FD_CLOEXEC would leak the log's
// files into every child.
TEST(PosixStorage, DescriptorsAreCloseOnExec) {
  TempDir dir;
  PosixStorage disk(dir.path());
  auto file = disk.open("segment", OpenMode::kCreateNew);
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    auto target = std::filesystem::read_symlink(entry.path(), error);
    if (error || target.string().rfind(dir.path(), 0) != 0) continue;
    int fd = std::stoi(entry.path().filename().string());
    EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC) << target;
    checked++;
  }
  EXPECT_EQ(checked, 2) << "expected the directory and the file";
}

// Not a test: prints sync costs on this machine's disk. Run test_storage with
// --gtest_also_run_disabled_tests --gtest_filter='*SyncThroughput*' and optionally
// LOCKSTEP_BENCH_DIR=<directory on the disk to measure> (default TMPDIR or /tmp).
TEST(PosixStorage, DISABLED_SyncThroughput) {
  const char* base = std::getenv("LOCKSTEP_BENCH_DIR");
  const Bytes payload(128 - kWalRecordHeaderBytes, 0x42);  // 128 bytes on disk per record
  for (uint64_t per_sync : {1, 16, 128}) {
    TempDir dir(base);
    PosixStorage disk(dir.path());
    Wal wal = Wal::open(disk, WalOptions{});
    const uint64_t records = per_sync == 1 ? 5000 : 40000;
    auto start = std::chrono::steady_clock::now();
    for (uint64_t i = 1; i <= records; i++) {
      wal.append(1, payload);
      if (i % per_sync == 0) wal.sync();
    }
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double syncs = static_cast<double>(records / per_sync);
    std::printf("dir %s, %3llu records/sync: %8.0f syncs/s %9.0f records/s %6.1f us/sync\n",
                dir.path().c_str(), static_cast<unsigned long long>(per_sync), syncs / seconds,
                static_cast<double>(records) / seconds, 1e6 * seconds / syncs);
  }
}

}  // namespace
}  // namespace lockstep::storage
