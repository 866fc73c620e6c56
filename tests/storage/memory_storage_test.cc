// The in-memory disk must lose exactly what a real one may lose, or the WAL's crash tests prove
// nothing: these pin down its model (storage.h's contract).
#include "storage/memory_storage.h"

#include <gtest/gtest.h>

#include <set>

namespace lockstep::storage {
namespace {

Bytes bytes_of(std::string_view s) {
  return Bytes(s.begin(), s.end());
}

TEST(MemoryStorage, SyncedDataSurvivesACrashUnsyncedDoesNot) {
  MemoryStorage disk;
  auto file = disk.open("a", OpenMode::kCreateNew);
  disk.sync_directory();
  file->append(bytes_of("durable"));
  file->sync();
  file->append(bytes_of("-lost"));
  EXPECT_EQ(disk.contents("a"), bytes_of("durable-lost"));
  disk.crash();
  EXPECT_EQ(disk.contents("a"), bytes_of("durable"));
}

TEST(MemoryStorage, CreationNeedsADirectorySyncRemovalToo) {
  MemoryStorage disk;
  {
    auto file = disk.open("kept", OpenMode::kCreateNew);
    file->append(bytes_of("x"));
    file->sync();
  }
  disk.sync_directory();
  {
    auto file = disk.open("vanishes", OpenMode::kCreateNew);
    file->append(bytes_of("y"));
    file->sync();  // the data is synced but the name is not
  }
  disk.remove("kept");
  EXPECT_EQ(disk.list(), std::vector<std::string>{"vanishes"});
  disk.crash();
  EXPECT_EQ(disk.list(), std::vector<std::string>{"kept"});  // removal undone
  EXPECT_EQ(disk.contents("kept"), bytes_of("x"));
}

TEST(MemoryStorage, TornCrashKeepsAPrefixOfTheUnsyncedWrites) {
  // Three unsynced appends of 10 bytes each: every seed must leave the durable part plus a prefix
  // of the 30 bytes, and over many seeds every kind of outcome must occur (all, none, torn).
  std::set<size_t> lengths;
  for (uint64_t seed = 0; seed < 400; seed++) {
    MemoryStorage disk;
    auto file = disk.open("f", OpenMode::kCreateNew);
    disk.sync_directory();
    file->append(bytes_of("base"));
    file->sync();
    Bytes all = bytes_of("base");
    for (int i = 0; i < 3; i++) {
      Bytes chunk(10, static_cast<uint8_t>('a' + i));
      file->append(chunk);
      all.insert(all.end(), chunk.begin(), chunk.end());
    }
    disk.crash(seed);
    Bytes after = disk.contents("f");
    ASSERT_GE(after.size(), 4u) << "seed " << seed;
    ASSERT_TRUE(std::equal(after.begin(), after.end(), all.begin())) << "seed " << seed;
    lengths.insert(after.size());
  }
  EXPECT_TRUE(lengths.count(4) && lengths.count(34)) << "neither extreme was ever chosen";
  EXPECT_GT(lengths.size(), 6u) << "writes were never torn inside";
}

TEST(MemoryStorage, PreallocationAndTruncationAreOperationsToo) {
  MemoryStorage disk;
  auto file = disk.open("f", OpenMode::kCreateNew);
  disk.sync_directory();
  file->preallocate(4096);
  EXPECT_EQ(file->size(), 4096u);
  disk.crash();
  EXPECT_EQ(disk.contents("f").size(), 0u) << "an unsynced preallocation must not survive";
}

TEST(MemoryStorage, CorruptFlipsDurableBytesAndHandlesDieAtACrash) {
  MemoryStorage disk;
  auto file = disk.open("f", OpenMode::kCreateNew);
  disk.sync_directory();
  file->append(bytes_of("abc"));
  file->sync();
  disk.corrupt("f", 1, 0x01);
  EXPECT_EQ(disk.contents("f"), bytes_of("acc"));
  disk.crash();
  EXPECT_EQ(disk.contents("f"), bytes_of("acc"));
  EXPECT_THROW(file->append(bytes_of("z")), StorageError);
  EXPECT_THROW(disk.open("f", OpenMode::kCreateNew), StorageError);
  EXPECT_THROW(disk.open("g", OpenMode::kExisting), StorageError);
}

TEST(MemoryStorage, CountsSyncsAndWrites) {
  MemoryStorage disk;
  auto file = disk.open("f", OpenMode::kCreateNew);
  disk.sync_directory();
  file->append(bytes_of("a"));
  file->write_at(10, bytes_of("b"));
  file->sync();
  EXPECT_EQ(disk.write_count(), 2u);
  EXPECT_EQ(disk.data_sync_count(), 1u);
  EXPECT_EQ(disk.directory_sync_count(), 1u);
  EXPECT_EQ(file->size(), 11u);
}

}  // namespace
}  // namespace lockstep::storage
