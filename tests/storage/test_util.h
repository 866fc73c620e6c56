// Helpers shared by the storage tests: deterministic payloads and reading a whole log back.
#pragma once

#include <cstdint>
#include <vector>

#include "storage/wal.h"

namespace lockstep::storage::testing {

struct Recorded {
  uint64_t index = 0;
  uint8_t type = 0;
  Bytes payload;
  bool operator==(const Recorded&) const = default;
};

// A payload that depends on the index and salt, of a length that varies with them, so that a
// record read back at the wrong position or with another's bytes shows.
inline Bytes payload_for(uint64_t index, uint64_t salt = 0, size_t length_max = 300) {
  uint64_t state = index * 0x9e3779b97f4a7c15ULL + salt;
  state ^= state >> 29;
  size_t length = static_cast<size_t>(state % (length_max + 1));
  Bytes bytes(length);
  for (size_t i = 0; i < length; i++) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    bytes[i] = static_cast<uint8_t>(state >> 56);
  }
  return bytes;
}

inline uint8_t type_for(uint64_t index) {
  return static_cast<uint8_t>(1 + index % 255);
}

inline std::vector<Recorded> read_all(const Wal& wal) {
  std::vector<Recorded> records;
  wal.replay(wal.first_index(), [&](const WalRecord& r) {
    records.push_back({r.index, r.type, Bytes(r.payload.begin(), r.payload.end())});
  });
  return records;
}

}  // namespace lockstep::storage::testing
