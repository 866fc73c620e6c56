#include "storage/wal.h"

#include <xxhash.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "core/assert.h"

namespace lockstep::storage {

namespace {

constexpr std::string_view kSegmentPrefix = "wal-";
constexpr std::string_view kSegmentSuffix = ".log";
constexpr size_t kSegmentIndexDigits = 20;  // enough for any uint64_t, so name order = index order
// Reading accepts any length the header can express and the file holds: record_payload_bytes_max
// limits what this process appends, and a log written under a larger setting must still recover.
constexpr uint64_t kRecordLengthLimit = UINT32_MAX;

void put_u16(uint8_t* p, uint16_t v) {
  for (int i = 0; i < 2; i++)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++)
    v |= uint64_t{p[i]} << (8 * i);
  return v;
}

uint64_t record_checksum(const uint8_t* record, uint64_t index, uint64_t length) {
  return XXH3_64bits_withSeed(record + 8, kWalRecordHeaderBytes - 8 + length,
                              index ^ kWalChecksumSalt);
}

// A record as it lies in a segment image.
struct ParsedRecord {
  uint64_t index = 0;
  uint8_t type = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t end() const { return offset + kWalRecordHeaderBytes + length; }
};

// The record at offset if it is whole and valid. With expected_index set, it must carry that
// index; otherwise any index in [index_min, index_max] is accepted (the search for a valid record
// behind a bad one). Cheap field checks come first so that the search computes few checksums.
std::optional<ParsedRecord> parse_record(std::span<const uint8_t> image, uint64_t offset,
                                         uint64_t index_min, uint64_t index_max,
                                         uint64_t payload_bytes_max) {
  if (offset > image.size() || image.size() - offset < kWalRecordHeaderBytes) return std::nullopt;
  const uint8_t* p = image.data() + offset;
  ParsedRecord record;
  record.offset = offset;
  record.length = get_le(p + 8, 4);
  record.type = p[13];
  record.index = get_le(p + 16, 8);
  if (p[12] != kWalFormatVersion || record.type == 0 || get_le(p + 14, 2) != 0) return std::nullopt;
  if (record.index < index_min || record.index > index_max) return std::nullopt;
  if (record.length > payload_bytes_max ||
      record.length > image.size() - offset - kWalRecordHeaderBytes) {
    return std::nullopt;
  }
  if (record_checksum(p, record.index, record.length) != get_le(p, 8)) return std::nullopt;
  return record;
}

// One past the last nonzero byte at or after from (from itself when everything after is zero).
uint64_t nonzero_end(std::span<const uint8_t> image, uint64_t from) {
  uint64_t end = image.size();
  while (end > from && image[end - 1] == 0)
    end--;
  return end;
}

// What scanning one segment image found.
struct SegmentScan {
  uint64_t next_index = 0;  // one past the last valid record
  uint64_t end_offset = 0;  // end of the last valid record
  uint64_t garbage_end =
      0;  // one past the last nonzero byte after end_offset (== end_offset: clean)
  bool valid_record_after = false;  // a valid later record lies behind the garbage
};

SegmentScan scan_segment(std::span<const uint8_t> image, uint64_t first_index,
                         uint64_t payload_bytes_max) {
  SegmentScan scan;
  scan.next_index = first_index;
  uint64_t offset = 0;
  while (auto record =
             parse_record(image, offset, scan.next_index, scan.next_index, payload_bytes_max)) {
    scan.next_index++;
    offset = record->end();
  }
  scan.end_offset = offset;
  scan.garbage_end = nonzero_end(image, offset);
  // Each record takes at least a header, so a record that legitimately followed the bad one at
  // a distance d has an index at most d / header bytes above it.
  for (uint64_t q = offset + 1; q < scan.garbage_end && !scan.valid_record_after; q++) {
    uint64_t index_max = scan.next_index + (q - offset) / kWalRecordHeaderBytes;
    scan.valid_record_after =
        parse_record(image, q, scan.next_index + 1, index_max, payload_bytes_max).has_value();
  }
  return scan;
}

std::optional<uint64_t> parse_segment_name(std::string_view name) {
  if (name.size() != kSegmentPrefix.size() + kSegmentIndexDigits + kSegmentSuffix.size() ||
      !name.starts_with(kSegmentPrefix) || !name.ends_with(kSegmentSuffix)) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(kSegmentPrefix.size(), kSegmentIndexDigits);
  uint64_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return std::nullopt;  // above 2^64 - 1
    value = value * 10 + digit;
  }
  return value;
}

Bytes read_whole(const File& file, const std::string& path, uint64_t bytes) {
  Bytes image(bytes);
  size_t got = file.read(0, image);
  if (got != bytes) throw StorageError("short read of " + path);
  return image;
}

void validate(const WalOptions& options) {
  if (options.segment_bytes < kWalSegmentBytesMin || options.segment_bytes > kWalSegmentBytesMax) {
    throw std::invalid_argument("wal: segment_bytes out of range");
  }
  if (options.first_index == 0) throw std::invalid_argument("wal: first_index starts at 1");
}

}  // namespace

WalCorruption::WalCorruption(std::string file, uint64_t offset, const std::string& reason)
    : std::runtime_error("write-ahead log corrupted: " + file + " at byte offset " +
                         std::to_string(offset) + ": " + reason +
                         "; records that were synced are damaged, so the replica refuses to start "
                         "from this log (restore it from a peer)"),
      file_(std::move(file)),
      offset_(offset) {}

std::optional<SyncPolicy> parse_sync_policy(std::string_view text) {
  if (text == "always") return SyncPolicy::kAlways;
  if (text == "batch-interval") return SyncPolicy::kBatchInterval;
  if (text == "none") return SyncPolicy::kNone;
  return std::nullopt;
}

std::string_view to_string(SyncPolicy policy) {
  switch (policy) {
    case SyncPolicy::kAlways:
      return "always";
    case SyncPolicy::kBatchInterval:
      return "batch-interval";
    case SyncPolicy::kNone:
      return "none";
  }
  return "?";
}

std::string Wal::segment_name(uint64_t first_index) {
  char digits[kSegmentIndexDigits + 1];
  std::snprintf(digits, sizeof digits, "%020" PRIu64, first_index);
  return std::string(kSegmentPrefix) + digits + std::string(kSegmentSuffix);
}

void Wal::encode_record(uint64_t index, uint8_t type, std::span<const uint8_t> payload,
                        Bytes& out) {
  LOCKSTEP_ASSERT(type != 0, "record type 0 is reserved: zeroed space must not parse as a record");
  LOCKSTEP_ASSERT(payload.size() <= UINT32_MAX, "record payload length must fit 32 bits");
  size_t start = out.size();
  out.resize(start + kWalRecordHeaderBytes + payload.size());
  uint8_t* p = out.data() + start;
  put_u32(p + 8, static_cast<uint32_t>(payload.size()));
  p[12] = kWalFormatVersion;
  p[13] = type;
  put_u16(p + 14, 0);
  put_u64(p + 16, index);
  std::copy(payload.begin(), payload.end(), p + kWalRecordHeaderBytes);
  put_u64(p, record_checksum(p, index, payload.size()));
}

Wal::Wal(Storage& storage, WalOptions options) : storage_(&storage), options_(options) {}
Wal::Wal(Wal&&) noexcept = default;
Wal& Wal::operator=(Wal&&) noexcept = default;
Wal::~Wal() = default;

Wal Wal::open(Storage& storage, WalOptions options) {
  validate(options);
  options.record_payload_bytes_max =
      std::min(options.record_payload_bytes_max, options.segment_bytes - kWalRecordHeaderBytes);
  Wal wal(storage, options);
  std::vector<std::pair<uint64_t, std::string>> found;
  for (std::string& name : storage.list()) {
    // Other files (an operator's notes, a future snapshot) are not the log's business.
    if (auto first = parse_segment_name(name)) found.emplace_back(*first, std::move(name));
  }
  std::sort(found.begin(), found.end());
  if (found.empty()) {
    wal.next_index_ = wal.written_next_index_ = wal.synced_next_index_ = options.first_index;
    wal.create_segment(options.first_index);
    return wal;
  }

  uint64_t expected = found.front().first;
  for (size_t i = 0; i < found.size(); i++) {
    const auto& [first_index, name] = found[i];
    const bool last = i + 1 == found.size();
    std::string path = storage.describe() + "/" + name;
    if (first_index != expected) {
      // The previous segment ended cleanly before the index this one starts at (records lost
      // there, e.g. zeroed sectors) or this one overlaps it: either way the sequence has a hole.
      throw WalCorruption(path, 0,
                          "segment starts at index " + std::to_string(first_index) +
                              " but the log before it ends at index " +
                              std::to_string(expected - 1));
    }
    std::unique_ptr<File> file = storage.open(name, OpenMode::kExisting);
    uint64_t size = file->size();
    if (size > kWalSegmentBytesMax) {
      throw WalCorruption(path, kWalSegmentBytesMax, "segment larger than any this log writes");
    }
    Bytes image = read_whole(*file, path, size);
    SegmentScan scan = scan_segment(image, first_index, kRecordLengthLimit);
    bool clean = scan.garbage_end == scan.end_offset;
    if (!clean && (!last || scan.valid_record_after)) {
      throw WalCorruption(path, scan.end_offset,
                          "record " + std::to_string(scan.next_index) + " fails validation " +
                              (last ? "and valid records follow it"
                                    : "in a segment that was sealed (synced) before the next"));
    }
    Segment segment{name, first_index, scan.next_index, scan.end_offset,
                    std::max(size, options.segment_bytes)};
    wal.recovery_.segments++;
    wal.recovery_.records += scan.next_index - first_index;
    expected = scan.next_index;
    if (last) {
      if (!clean) {
        // Zero the torn bytes (and make that durable) before anything is written behind them:
        // left in place, a whole stale record of the torn batch could later sit right after new
        // records with the index that follows them and be taken for a real record.
        wal.recovery_.torn_bytes_dropped = scan.garbage_end - scan.end_offset;
        wal.recovery_.torn_offset = scan.end_offset;
        wal.recovery_.torn_file = name;
        Bytes zeros(scan.garbage_end - scan.end_offset, 0);
        file->write_at(scan.end_offset, zeros);
      }
      // A segment written with a smaller segment_bytes, or whose preallocation did not survive.
      if (size < segment.capacity) file->preallocate(segment.capacity);
      if (!clean || size < segment.capacity) file->sync();
      wal.file_ = std::move(file);
    }
    wal.segments_.push_back(std::move(segment));
  }
  wal.next_index_ = wal.written_next_index_ = wal.synced_next_index_ = expected;
  return wal;
}

void Wal::create_segment(uint64_t first_index) {
  Segment segment{segment_name(first_index), first_index, first_index, 0, options_.segment_bytes};
  std::unique_ptr<File> file = storage_->open(segment.name, OpenMode::kCreateNew);
  file->preallocate(options_.segment_bytes);
  // The size first, then the name: once the name is durable the whole preallocated file is.
  file->sync();
  storage_->sync_directory();
  file_ = std::move(file);
  file_unsynced_ = false;
  segments_.push_back(std::move(segment));
}

void Wal::roll_over() {
  LOCKSTEP_ASSERT(segments_.back().first_index < next_index_,
                  "rolling over an empty segment: a record is larger than a segment");
  // Seal: the segment is durable before the next one exists, so recovery may treat any bad record
  // in a non-last segment as corruption rather than a torn write.
  flush();
  if (file_unsynced_) {
    file_->sync();
    file_unsynced_ = false;
  }
  synced_next_index_ = written_next_index_;
  create_segment(next_index_);
}

uint64_t Wal::append(uint8_t type, std::span<const uint8_t> payload) {
  LOCKSTEP_ASSERT(type != 0, "record type 0 is reserved");
  LOCKSTEP_ASSERT(payload.size() <= options_.record_payload_bytes_max,
                  "record payload above record_payload_bytes_max");
  const Segment& segment = segments_.back();
  uint64_t record_bytes = kWalRecordHeaderBytes + payload.size();
  if (segment.end_offset + buffer_.size() + record_bytes > segment.capacity) roll_over();
  if (buffer_.empty()) buffer_first_index_ = next_index_;
  encode_record(next_index_, type, payload, buffer_);
  uint64_t index = next_index_++;
  if (buffer_.size() >= options_.buffer_bytes_max) flush();
  return index;
}

void Wal::flush() {
  if (buffer_.empty()) return;
  Segment& segment = segments_.back();
  LOCKSTEP_ASSERT(buffer_first_index_ == segment.next_index, "buffer does not continue the file");
  LOCKSTEP_ASSERT(segment.end_offset + buffer_.size() <= segment.capacity,
                  "batch runs past the segment's preallocated space");
  file_->write_at(segment.end_offset, buffer_);
  segment.end_offset += buffer_.size();
  segment.next_index = next_index_;
  written_next_index_ = next_index_;
  file_unsynced_ = true;
  buffer_.clear();
}

void Wal::sync() {
  flush();
  if (file_unsynced_) {
    file_->sync();  // one fdatasync for the whole batch: group commit
    file_unsynced_ = false;
  }
  synced_next_index_ = next_index_;
  unsynced_since_ns_.reset();
}

bool Wal::should_sync_now(uint64_t now_ns) {
  if (synced_next_index_ == next_index_) {
    unsynced_since_ns_.reset();
    return false;
  }
  switch (options_.sync_policy) {
    case SyncPolicy::kAlways:
      return true;
    case SyncPolicy::kNone:
      return false;
    case SyncPolicy::kBatchInterval:
      if (!unsynced_since_ns_) unsynced_since_ns_ = now_ns;
      return now_ns - *unsynced_since_ns_ >= options_.batch_interval_ns;
  }
  return true;
}

bool Wal::commit(uint64_t now_ns) {
  if (should_sync_now(now_ns)) {
    sync();
    return true;
  }
  flush();
  return false;
}

void Wal::truncate_prefix(uint64_t index) {
  // Oldest first, each removal durable before the next, so a crash in between leaves a log
  // whose segments still run on without a gap.
  while (segments_.size() > 1 && segments_[1].first_index <= index) {
    storage_->remove(segments_.front().name);
    storage_->sync_directory();
    segments_.erase(segments_.begin());
  }
}

uint64_t Wal::first_index() const {
  return segments_.front().first_index;
}

void Wal::replay(uint64_t from_index, const std::function<void(const WalRecord&)>& visit) const {
  LOCKSTEP_ASSERT(from_index >= first_index(), "replay below the log's first index");
  for (const Segment& segment : segments_) {
    if (segment.next_index <= from_index) continue;
    std::string path = storage_->describe() + "/" + segment.name;
    Bytes image;
    if (&segment == &segments_.back()) {
      image = Bytes(segment.end_offset);
      if (file_->read(0, image) != image.size()) throw StorageError("short read of " + path);
    } else {
      auto file = storage_->open(segment.name, OpenMode::kExisting);
      image = Bytes(segment.end_offset);
      if (file->read(0, image) != image.size()) throw StorageError("short read of " + path);
    }
    uint64_t offset = 0;
    for (uint64_t index = segment.first_index; index < segment.next_index; index++) {
      auto record = parse_record(image, offset, index, index, kRecordLengthLimit);
      if (!record) {
        throw WalCorruption(path, offset,
                            "record " + std::to_string(index) + " changed on disk after recovery");
      }
      if (index >= from_index) {
        visit(WalRecord{index, record->type,
                        std::span<const uint8_t>(image).subspan(
                            record->offset + kWalRecordHeaderBytes, record->length)});
      }
      offset = record->end();
    }
  }
}

}  // namespace lockstep::storage
