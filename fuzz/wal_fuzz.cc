// libFuzzer target for the write-ahead log's recovery (storage/wal.h). The input becomes what the
// disk held when the replica started (MemoryStorage), and Wal::open must either recover or throw
// WalCorruption; it must never crash, hang, or recover records that were not on the disk.
//
// The first byte picks the mode:
//  - raw (even): the rest of the input is the single segment's bytes, as found.
//  - structured (odd): the rest describes records ([length][type][payload]...) that the harness
//    encodes with correct checksums, optionally split over two segments and padded with
//    preallocated zeros, and then damages with a few mutations (flip a byte, or cut the last
//    segment short). Without this the fuzzer would almost never get past the 64-bit checksum.
// Oracles, in every mode: recovered records are exactly those on the disk, at indices 1, 2, ...;
// after a successful recovery, a new record can be appended, synced and recovered again (no stale
// piece of a torn tail may ever turn into corruption or a phantom record). In structured mode:
// no damage means everything is recovered; cutting the last segment short (a torn write) never
// makes recovery fail and loses only the records the cut touched.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <vector>

#include "storage/memory_storage.h"
#include "storage/wal.h"

namespace {

using lockstep::Bytes;
using lockstep::storage::MemoryStorage;
using lockstep::storage::Wal;
using lockstep::storage::WalCorruption;
using lockstep::storage::WalOptions;
using lockstep::storage::WalRecord;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "wal_fuzz: %s\n", what);
  std::abort();
}

struct Record {
  uint8_t type;
  Bytes payload;
};

WalOptions fuzz_options() {
  WalOptions options;
  options.segment_bytes = 4096;
  return options;
}

// Opens the log; returns the records recovered, or nothing when it reported corruption.
std::optional<std::vector<Record>> recover(MemoryStorage& disk) {
  try {
    Wal wal = Wal::open(disk, fuzz_options());
    std::vector<Record> records;
    uint64_t expected = wal.first_index();
    wal.replay(wal.first_index(), [&](const WalRecord& r) {
      if (r.index != expected++) fail("replay skipped or repeated an index");
      records.push_back({r.type, Bytes(r.payload.begin(), r.payload.end())});
    });
    if (expected != wal.next_index()) fail("replay and next_index disagree");
    // Recovery must leave the log fit to write: append, sync, reopen, and find it all again.
    wal.append(0x7f, Bytes{0xde, 0xad});
    wal.sync();
    Wal again = Wal::open(disk, fuzz_options());
    if (again.next_index() != wal.next_index()) fail("a record synced after recovery was lost");
    uint64_t i = 0;
    again.replay(again.first_index(), [&](const WalRecord& r) {
      bool same = i < records.size()
                      ? (r.type == records[i].type &&
                         Bytes(r.payload.begin(), r.payload.end()) == records[i].payload)
                      : (r.type == 0x7f && r.payload.size() == 2);
      if (!same) fail("second recovery differs from the first");
      i++;
    });
    return records;
  } catch (const WalCorruption&) {
    return std::nullopt;
  }
}

bool is_prefix(const std::vector<Record>& recovered, const std::vector<Record>& written) {
  if (recovered.size() > written.size()) return false;
  for (size_t i = 0; i < recovered.size(); i++) {
    if (recovered[i].type != written[i].type || recovered[i].payload != written[i].payload) {
      return false;
    }
  }
  return true;
}

void run_raw(std::span<const uint8_t> data) {
  MemoryStorage disk;
  disk.put_durable_file(Wal::segment_name(1), Bytes(data.begin(), data.end()));
  auto recovered = recover(disk);
  if (!recovered) return;
  // Every recovered record must be, byte for byte, where the log says it was.
  Bytes encoded;
  for (size_t i = 0; i < recovered->size(); i++) {
    Wal::encode_record(i + 1, (*recovered)[i].type, (*recovered)[i].payload, encoded);
  }
  if (encoded.size() > data.size() || !std::equal(encoded.begin(), encoded.end(), data.begin())) {
    fail("recovered records that are not on the disk");
  }
}

void run_structured(std::span<const uint8_t> data) {
  if (data.size() < 3) return;
  const uint8_t flags = data[0];
  const uint8_t mutation_count = data[1] % 4;
  const uint8_t padding_units = data[2];  // preallocated zeros, in 16-byte units
  data = data.subspan(3);
  struct Mutation {
    bool cut;
    bool second_file;
    uint16_t offset;
    uint8_t mask;
  };
  std::vector<Mutation> mutations;
  for (int i = 0; i < mutation_count && data.size() >= 4; i++) {
    mutations.push_back({(data[0] & 1) != 0, (data[0] & 2) != 0,
                         static_cast<uint16_t>(data[1] | data[2] << 8),
                         static_cast<uint8_t>(data[3] | 1)});
    data = data.subspan(4);
  }
  std::vector<Record> written;
  while (data.size() >= 2 && written.size() < 64) {
    size_t length = std::min<size_t>(data[0], data.size() - 2);
    uint8_t type = static_cast<uint8_t>(data[1] | 1);
    written.push_back({type, Bytes(data.begin() + 2, data.begin() + 2 + length)});
    data = data.subspan(2 + length);
  }
  // Two segments: the first holds the first half of the records and is padded like a sealed one.
  const bool two_segments = (flags & 2) != 0 && written.size() >= 2;
  const size_t split = two_segments ? written.size() / 2 : written.size();
  Bytes first, second;
  for (size_t i = 0; i < written.size(); i++) {
    Wal::encode_record(i + 1, written[i].type, written[i].payload, i < split ? first : second);
  }
  Bytes& last = two_segments ? second : first;
  last.resize(last.size() + 16 * size_t{padding_units}, 0);
  if (two_segments) first.resize(first.size() + 64, 0);

  bool damaged = false;
  bool only_cuts_of_the_last = true;
  size_t cut_at = last.size();
  for (const Mutation& m : mutations) {
    Bytes& target = two_segments && m.second_file ? second : first;
    if (target.empty()) continue;
    size_t offset = m.offset % target.size();
    damaged = true;
    if (m.cut && &target == &last) {
      std::fill(target.begin() + static_cast<ptrdiff_t>(offset), target.end(), 0);
      cut_at = std::min(cut_at, offset);
    } else {
      target[offset] ^= m.mask;
      only_cuts_of_the_last = false;
    }
  }

  MemoryStorage disk;
  disk.put_durable_file(Wal::segment_name(1), first);
  if (two_segments) disk.put_durable_file(Wal::segment_name(split + 1), second);
  auto recovered = recover(disk);
  if (!damaged && (!recovered || recovered->size() != written.size())) {
    fail("an undamaged log did not recover in full");
  }
  if (damaged && only_cuts_of_the_last) {
    if (!recovered) fail("a torn tail was reported as corruption");
    // Records wholly before the cut must all survive.
    size_t offset = 0, whole = two_segments ? split : 0;
    for (size_t i = whole; i < written.size(); i++) {
      offset += lockstep::storage::kWalRecordHeaderBytes + written[i].payload.size();
      if (offset > cut_at) break;
      whole = i + 1;
    }
    if (recovered->size() < whole) fail("a torn tail took records before the cut with it");
  }
  if (recovered && !is_prefix(*recovered, written)) fail("recovered records that were not written");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> input(data, size);
  if (input[0] & 1) {
    run_structured(input);
  } else {
    run_raw(input.subspan(1));
  }
  return 0;
}
