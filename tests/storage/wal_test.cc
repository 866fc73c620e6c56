// The write-ahead log against the in-memory disk: round trips, recovery, torn tails, corruption,
// group commit, prefix truncation, sync policies, and randomized crashes.
#include "storage/wal.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "storage/memory_storage.h"
#include "test_util.h"

namespace lockstep::storage {
namespace {

using testing::payload_for;
using testing::read_all;
using testing::Recorded;
using testing::type_for;

WalOptions small_segments() {
  WalOptions options;
  options.segment_bytes = 4096;  // a few records per segment, so rollover happens often
  options.record_payload_bytes_max = 1024;
  return options;
}

std::vector<Recorded> append_n(Wal& wal, uint64_t count, uint64_t salt = 0) {
  std::vector<Recorded> appended;
  for (uint64_t i = 0; i < count; i++) {
    uint64_t index = wal.next_index();
    Bytes payload = payload_for(index, salt);
    EXPECT_EQ(wal.append(type_for(index), payload), index);
    appended.push_back({index, type_for(index), payload});
  }
  return appended;
}

// Byte offset of each record in a single-segment log (they lie back to back from 0).
std::vector<uint64_t> record_offsets(const std::vector<Recorded>& records) {
  std::vector<uint64_t> offsets;
  uint64_t offset = 0;
  for (const Recorded& r : records) {
    offsets.push_back(offset);
    offset += kWalRecordHeaderBytes + r.payload.size();
  }
  offsets.push_back(offset);  // end
  return offsets;
}

TEST(Wal, SegmentNamesSortByIndex) {
  EXPECT_EQ(Wal::segment_name(1), "wal-00000000000000000001.log");
  EXPECT_EQ(Wal::segment_name(UINT64_MAX), "wal-18446744073709551615.log");
  EXPECT_LT(Wal::segment_name(9), Wal::segment_name(10));
}

TEST(Wal, RoundTripAcrossSegmentRollover) {
  MemoryStorage disk;
  Wal wal = Wal::open(disk, small_segments());
  EXPECT_EQ(wal.next_index(), 1u);
  auto appended = append_n(wal, 200);
  wal.sync();
  EXPECT_EQ(wal.synced_index(), 200u);
  EXPECT_GT(wal.segment_count(), 5u);
  EXPECT_EQ(read_all(wal), appended);
  for (const std::string& name : disk.list()) {
    EXPECT_EQ(disk.contents(name).size(), 4096u) << name << " was not preallocated";
  }
}

TEST(Wal, RecoversAfterReopenAndContinues) {
  MemoryStorage disk;
  std::vector<Recorded> appended;
  {
    Wal wal = Wal::open(disk, small_segments());
    appended = append_n(wal, 50);
    wal.sync();
  }
  {
    Wal wal = Wal::open(disk, small_segments());
    EXPECT_EQ(wal.recovery().records, 50u);
    EXPECT_EQ(wal.recovery().torn_bytes_dropped, 0u) << "preallocated zeros taken for garbage";
    EXPECT_EQ(wal.next_index(), 51u);
    EXPECT_EQ(read_all(wal), appended);
    auto more = append_n(wal, 30, 7);
    appended.insert(appended.end(), more.begin(), more.end());
    wal.sync();
  }
  Wal wal = Wal::open(disk, small_segments());
  EXPECT_EQ(read_all(wal), appended);
  std::vector<Recorded> tail;
  wal.replay(60, [&](const WalRecord& r) {
    tail.push_back({r.index, r.type, Bytes(r.payload.begin(), r.payload.end())});
  });
  EXPECT_EQ(tail, std::vector<Recorded>(appended.begin() + 59, appended.end()));
}

TEST(Wal, EmptyAndNonDefaultFirstIndex) {
  MemoryStorage disk;
  WalOptions options = small_segments();
  options.first_index = 1000;
  {
    Wal wal = Wal::open(disk, options);
    EXPECT_EQ(disk.list(), std::vector<std::string>{Wal::segment_name(1000)});
    EXPECT_TRUE(read_all(wal).empty());
  }
  Wal wal = Wal::open(disk, options);
  EXPECT_EQ(wal.next_index(), 1000u);
  EXPECT_EQ(wal.append(1, payload_for(1000)), 1000u);
}

enum class TailKind { kZeroFilled, kFileEndsThere, kGarbage };

// Cut the last record at every byte offset; whatever follows the cut, recovery must drop that
// record alone, report it, and take new records behind the survivors without tripping over the
// remains on the next reopen.
TEST(Wal, TornTailAtEveryByteOfTheLastRecordIsTruncated) {
  WalOptions options;
  options.segment_bytes = 8192;
  MemoryStorage source;
  std::vector<Recorded> appended;
  {
    Wal wal = Wal::open(source, options);
    appended = append_n(wal, 6);
    appended.push_back({7, 9, Bytes(100, 0xab)});
    wal.append(9, appended.back().payload);
    wal.sync();
  }
  const std::string name = Wal::segment_name(1);
  const Bytes image = source.contents(name);
  const auto offsets = record_offsets(appended);
  const uint64_t last_start = offsets[6], last_end = offsets[7];
  const std::vector<Recorded> survivors(appended.begin(), appended.begin() + 6);

  for (TailKind kind : {TailKind::kZeroFilled, TailKind::kFileEndsThere, TailKind::kGarbage}) {
    for (uint64_t cut = last_start; cut < last_end; cut++) {
      SCOPED_TRACE("kind " + std::to_string(static_cast<int>(kind)) + " cut " +
                   std::to_string(cut));
      Bytes torn(image.begin(), image.begin() + static_cast<ptrdiff_t>(cut));
      if (kind == TailKind::kZeroFilled) torn.resize(image.size(), 0);
      if (kind == TailKind::kGarbage) {
        // The rest of the record with every byte changed: present but never valid.
        for (uint64_t i = cut; i < last_end; i++)
          torn.push_back(static_cast<uint8_t>(image[i] ^ 0x5a));
        torn.resize(image.size(), 0);
      }
      MemoryStorage disk;
      disk.put_durable_file(name, torn);
      {
        Wal wal = Wal::open(disk, options);
        ASSERT_EQ(wal.next_index(), 7u);
        ASSERT_EQ(read_all(wal), survivors);
        const WalRecovery& r = wal.recovery();
        uint64_t nonzero_torn = 0;
        for (uint64_t i = last_start; i < torn.size(); i++)
          if (torn[i] != 0) nonzero_torn = i + 1 - last_start;
        EXPECT_EQ(r.torn_bytes_dropped, nonzero_torn);
        EXPECT_EQ(r.torn_offset, nonzero_torn > 0 ? last_start : 0);
        if (nonzero_torn > 0) {
          EXPECT_EQ(r.torn_file, name);
        }
        // A short record (1 byte) right behind the survivors, so remains of the torn record
        // would lie right after it.
        EXPECT_EQ(wal.append(3, Bytes{1}), 7u);
        wal.sync();
      }
      Wal wal = Wal::open(disk, options);
      auto expected = survivors;
      expected.push_back({7, 3, Bytes{1}});
      ASSERT_EQ(read_all(wal), expected);
      EXPECT_EQ(wal.recovery().torn_bytes_dropped, 0u);
    }
  }
}

// A damaged record followed by valid ones was synced and maybe acted upon: refuse to start.
TEST(Wal, CorruptionInTheMiddleNamesFileAndOffset) {
  WalOptions options;
  options.segment_bytes = 8192;
  MemoryStorage source;
  std::vector<Recorded> appended;
  {
    Wal wal = Wal::open(source, options);
    appended = append_n(wal, 10);
    wal.sync();
  }
  const std::string name = Wal::segment_name(1);
  const auto offsets = record_offsets(appended);
  for (size_t victim : {size_t{0}, size_t{4}, size_t{8}}) {
    for (uint64_t at = offsets[victim]; at < offsets[victim + 1]; at++) {
      MemoryStorage disk;
      disk.put_durable_file(name, source.contents(name));
      disk.corrupt(name, at, 0x10);
      try {
        Wal wal = Wal::open(disk, options);
        FAIL() << "no corruption reported for a flip at " << at << " in record " << victim + 1;
      } catch (const WalCorruption& e) {
        EXPECT_EQ(e.offset(), offsets[victim]);
        std::string message = e.what();
        EXPECT_NE(message.find(name), std::string::npos) << message;
        EXPECT_NE(message.find("offset " + std::to_string(offsets[victim])), std::string::npos)
            << message;
        EXPECT_NE(message.find("refuses to start"), std::string::npos) << message;
      }
    }
  }
}

TEST(Wal, ZeroedRecordInTheMiddleIsCorruption) {
  WalOptions options;
  options.segment_bytes = 8192;
  MemoryStorage disk;
  std::vector<Recorded> appended;
  {
    Wal wal = Wal::open(disk, options);
    appended = append_n(wal, 10);
    wal.sync();
  }
  const std::string name = Wal::segment_name(1);
  const auto offsets = record_offsets(appended);
  Bytes image = disk.contents(name);
  std::fill(image.begin() + static_cast<ptrdiff_t>(offsets[3]),
            image.begin() + static_cast<ptrdiff_t>(offsets[4]), 0);  // a lost write
  disk.put_durable_file(name, image);
  EXPECT_THROW(Wal::open(disk, options), WalCorruption);
}

TEST(Wal, BadRecordInASealedSegmentIsCorruptionEvenAtItsEnd) {
  MemoryStorage disk;
  std::vector<Recorded> appended;
  {
    Wal wal = Wal::open(disk, small_segments());
    appended = append_n(wal, 60);
    wal.sync();
    ASSERT_GE(wal.segment_count(), 3u);
  }
  // The last record of the first segment: nothing valid follows it in its own file, but its
  // segment was sealed, so it cannot be a torn write.
  auto names = disk.list();
  std::vector<Recorded> first_segment;
  uint64_t second_first = std::stoull(names[1].substr(4, 20));
  for (const Recorded& r : appended)
    if (r.index < second_first) first_segment.push_back(r);
  uint64_t last_offset = record_offsets(first_segment)[first_segment.size() - 1];
  disk.corrupt(names[0], last_offset + kWalRecordHeaderBytes - 1);
  try {
    Wal::open(disk, small_segments());
    FAIL() << "corruption in a sealed segment accepted";
  } catch (const WalCorruption& e) {
    EXPECT_EQ(e.file(), "memory:/" + names[0]);
    EXPECT_EQ(e.offset(), last_offset);
  }
}

TEST(Wal, MissingSegmentIsCorruption) {
  MemoryStorage disk;
  {
    Wal wal = Wal::open(disk, small_segments());
    append_n(wal, 60);
    wal.sync();
  }
  auto names = disk.list();
  ASSERT_GE(names.size(), 3u);
  disk.remove(names[1]);
  try {
    Wal::open(disk, small_segments());
    FAIL() << "a hole between segments accepted";
  } catch (const WalCorruption& e) {
    EXPECT_NE(std::string(e.what()).find(names[2]), std::string::npos) << e.what();
  }
}

TEST(Wal, CrashLosesOnlyUnsyncedRecords) {
  MemoryStorage disk;
  std::vector<Recorded> appended;
  {
    Wal wal = Wal::open(disk, small_segments());
    appended = append_n(wal, 40);
    wal.sync();
    append_n(wal, 5);
    wal.flush();       // written to the OS, not synced
    append_n(wal, 5);  // still buffered
    disk.crash();
  }
  Wal wal = Wal::open(disk, small_segments());
  EXPECT_EQ(wal.next_index(), 41u);
  EXPECT_EQ(read_all(wal), appended);
}

TEST(Wal, GroupCommitIssuesOneSyncPerBatch) {
  MemoryStorage disk;
  WalOptions options;
  options.segment_bytes = 1 << 20;
  Wal wal = Wal::open(disk, options);
  uint64_t syncs = disk.data_sync_count();
  uint64_t writes = disk.write_count();
  append_n(wal, 1000);
  EXPECT_EQ(disk.data_sync_count(), syncs) << "append must not sync";
  wal.sync();
  EXPECT_EQ(disk.data_sync_count(), syncs + 1);
  EXPECT_EQ(disk.write_count(), writes + 1) << "the batch should go out as one write";
  wal.sync();
  EXPECT_EQ(disk.data_sync_count(), syncs + 1) << "nothing new to sync";
}

TEST(Wal, BufferLimitWritesWithoutSyncing) {
  MemoryStorage disk;
  WalOptions options;
  options.segment_bytes = 1 << 20;
  options.buffer_bytes_max = 1000;
  Wal wal = Wal::open(disk, options);
  uint64_t syncs = disk.data_sync_count();
  uint64_t writes = disk.write_count();
  for (int i = 0; i < 10; i++)
    wal.append(1, Bytes(200, 1));
  EXPECT_GE(disk.write_count(), writes + 2);
  EXPECT_EQ(disk.data_sync_count(), syncs);
}

TEST(Wal, TruncatePrefixDropsWholeSegmentsBelowTheIndex) {
  MemoryStorage disk;
  std::vector<Recorded> appended;
  {
    Wal wal = Wal::open(disk, small_segments());
    appended = append_n(wal, 100);
    wal.sync();
    auto names = disk.list();
    uint64_t third = std::stoull(names[2].substr(4, 20));
    wal.truncate_prefix(third);  // exactly the start of the third segment: two go
    EXPECT_EQ(wal.first_index(), third);
    EXPECT_EQ(disk.list(), std::vector<std::string>(names.begin() + 2, names.end()));
    wal.truncate_prefix(third + 1);  // inside the third segment: it stays
    EXPECT_EQ(wal.first_index(), third);
    wal.truncate_prefix(UINT64_MAX);  // the segment being written always stays
    EXPECT_EQ(wal.segment_count(), 1u);
    disk.crash();  // the removals were made durable
  }
  Wal wal = Wal::open(disk, small_segments());
  auto recovered = read_all(wal);
  ASSERT_FALSE(recovered.empty());
  EXPECT_EQ(recovered.back().index, 100u);
  EXPECT_EQ(recovered,
            std::vector<Recorded>(appended.end() - static_cast<ptrdiff_t>(recovered.size()),
                                  appended.end()));
  EXPECT_EQ(wal.first_index(), recovered.front().index);
}

TEST(Wal, SyncPolicies) {
  EXPECT_EQ(parse_sync_policy("always"), SyncPolicy::kAlways);
  EXPECT_EQ(parse_sync_policy("batch-interval"), SyncPolicy::kBatchInterval);
  EXPECT_EQ(parse_sync_policy("none"), SyncPolicy::kNone);
  EXPECT_EQ(parse_sync_policy("sometimes"), std::nullopt);
  for (auto p : {SyncPolicy::kAlways, SyncPolicy::kBatchInterval, SyncPolicy::kNone})
    EXPECT_EQ(parse_sync_policy(to_string(p)), p);

  MemoryStorage disk;
  WalOptions options;
  options.segment_bytes = 1 << 20;
  options.sync_policy = SyncPolicy::kAlways;
  {
    Wal wal = Wal::open(disk, options);
    EXPECT_FALSE(wal.should_sync_now(0)) << "nothing to sync";
    wal.append(1, Bytes{1});
    EXPECT_TRUE(wal.should_sync_now(0));
    EXPECT_TRUE(wal.commit(0));
    EXPECT_EQ(wal.synced_index(), 1u);
    EXPECT_FALSE(wal.should_sync_now(0));
  }
  MemoryStorage disk2;
  options.sync_policy = SyncPolicy::kBatchInterval;
  options.batch_interval_ns = 1000;
  {
    Wal wal = Wal::open(disk2, options);
    uint64_t syncs = disk2.data_sync_count();
    wal.append(1, Bytes{1});
    EXPECT_FALSE(wal.commit(5000)) << "the interval starts when the record is first seen";
    EXPECT_EQ(disk2.contents(Wal::segment_name(1))[13], 1) << "commit must still write";
    wal.append(1, Bytes{2});
    EXPECT_FALSE(wal.commit(5999));
    EXPECT_EQ(disk2.data_sync_count(), syncs);
    EXPECT_TRUE(wal.commit(6000));
    EXPECT_EQ(disk2.data_sync_count(), syncs + 1);
    EXPECT_EQ(wal.synced_index(), 2u);
    wal.append(1, Bytes{3});
    EXPECT_FALSE(wal.should_sync_now(9000)) << "a new interval starts after a sync";
    EXPECT_TRUE(wal.should_sync_now(10000));
  }
  MemoryStorage disk3;
  options.sync_policy = SyncPolicy::kNone;
  {
    Wal wal = Wal::open(disk3, options);
    uint64_t syncs = disk3.data_sync_count();
    wal.append(1, Bytes{1});
    EXPECT_FALSE(wal.commit(UINT64_MAX));
    EXPECT_EQ(disk3.data_sync_count(), syncs);
    EXPECT_EQ(wal.synced_index(), 0u);
    wal.sync();  // an explicit sync still syncs
    EXPECT_EQ(disk3.data_sync_count(), syncs + 1);
  }
}

// Cycles of appends, syncs and torn crashes: whatever was synced survives, and what the log holds
// after each crash is always a prefix of what was appended (a torn tail is never corruption).
TEST(Wal, RandomizedCrashesKeepEverySyncedRecord) {
  // How often the interesting cases came up, so that the test shows it reached them.
  uint64_t lost_unsynced = 0, torn_tails = 0, truncations = 0, rollovers = 0;
  for (uint64_t seed = 1; seed <= 300; seed++) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    uint64_t state = seed;
    auto next = [&](uint64_t bound) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      return (state >> 33) % bound;
    };
    MemoryStorage disk;
    WalOptions options = small_segments();
    options.buffer_bytes_max = 512 + next(2048);  // sometimes several writes per batch
    std::vector<Recorded> model;  // everything appended and not lost, by index - first
    uint64_t synced = 0;
    uint64_t first = 1;
    for (int cycle = 0; cycle < 8; cycle++) {
      Wal wal = Wal::open(disk, options);
      auto recovered = read_all(wal);
      ASSERT_GE(wal.next_index(), synced + 1) << "a synced record was lost";
      ASSERT_LE(wal.first_index(), synced + 1);
      ASSERT_EQ(wal.next_index() - wal.first_index(), recovered.size());
      for (const Recorded& r : recovered) {
        ASSERT_GE(r.index, first);
        ASSERT_LT(r.index - first, model.size()) << "a record that was never appended";
        ASSERT_EQ(r, model[r.index - first]);
      }
      lost_unsynced += model.size() > wal.next_index() - first;
      torn_tails += wal.recovery().torn_bytes_dropped > 0;
      rollovers += wal.segment_count() > 1;
      model.resize(wal.next_index() - first);  // the lost suffix is forgotten for good
      synced = wal.next_index() - 1;
      uint64_t steps = 1 + next(40);
      for (uint64_t step = 0; step < steps; step++) {
        uint64_t action = next(10);
        if (action < 7) {
          uint64_t index = wal.next_index();
          Bytes payload = payload_for(index, seed * 100 + static_cast<uint64_t>(cycle), 600);
          wal.append(type_for(index), payload);
          model.push_back({index, type_for(index), payload});
        } else if (action < 9) {
          wal.sync();
          synced = wal.synced_index();
        } else {
          uint64_t below = wal.first_index() + next(wal.next_index() - wal.first_index() + 1);
          if (below <= synced + 1) {
            wal.truncate_prefix(below);
            model.erase(model.begin(),
                        model.begin() + static_cast<ptrdiff_t>(wal.first_index() - first));
            truncations += wal.first_index() != first;
            first = wal.first_index();
          }
        }
      }
      disk.crash(seed * 1000 + static_cast<uint64_t>(cycle));
    }
  }
  EXPECT_GT(lost_unsynced, 100u);
  EXPECT_GT(torn_tails, 100u);
  EXPECT_GT(truncations, 50u);
  EXPECT_GT(rollovers, 100u);
  std::printf(
      "lost unsynced %llu, torn tails %llu, truncations %llu, rollovers %llu\n",
      static_cast<unsigned long long>(lost_unsynced), static_cast<unsigned long long>(torn_tails),
      static_cast<unsigned long long>(truncations), static_cast<unsigned long long>(rollovers));
}

TEST(Wal, RejectsBadOptions) {
  MemoryStorage disk;
  WalOptions options;
  options.segment_bytes = 100;
  EXPECT_THROW(Wal::open(disk, options), std::invalid_argument);
  options = WalOptions{};
  options.segment_bytes = 4096;
  EXPECT_EQ(Wal::open(disk, options).options().record_payload_bytes_max,
            4096 - kWalRecordHeaderBytes)
      << "a record must fit a segment";
  options = WalOptions{};
  options.first_index = 0;
  EXPECT_THROW(Wal::open(disk, options), std::invalid_argument);
}

TEST(Wal, IgnoresFilesThatAreNotSegments) {
  MemoryStorage disk;
  disk.put_durable_file("README", Bytes{1, 2, 3});
  disk.put_durable_file("wal-1.log", Bytes{1, 2, 3});
  Wal wal = Wal::open(disk, small_segments());
  EXPECT_EQ(wal.next_index(), 1u);
  EXPECT_EQ(wal.recovery().segments, 0u);
}

}  // namespace
}  // namespace lockstep::storage
