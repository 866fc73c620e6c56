// Primitive encoders for lockstep's binary formats (messages, snapshots, commands): LEB128
// varints, fixed-width little-endian integers and length-prefixed byte strings. The Reader never
// trusts its input: every read checks the bytes left and reports failure instead of reading past
// the end; once a read fails the reader stays failed, so callers may check ok() once at the end.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "core/types.h"

namespace lockstep {

class Writer {
 public:
  explicit Writer(Bytes& out) : out_(out) {}

  void u8(uint8_t v) { out_.push_back(v); }
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<uint8_t>(v) | 0x80);
      v >>= 7;
    }
    out_.push_back(static_cast<uint8_t>(v));
  }
  // Zigzag, so that small negative numbers stay short.
  void svarint(int64_t v) {
    varint((static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
  }
  void fixed64(uint64_t v) {
    for (int i = 0; i < 8; ++i)
      out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void bytes(std::span<const uint8_t> b) {
    varint(b.size());
    out_.insert(out_.end(), b.begin(), b.end());
  }
  void string(std::string_view s) {
    varint(s.size());
    out_.insert(out_.end(), s.begin(), s.end());
  }

 private:
  Bytes& out_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> in) : in_(in) {}

  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }
  size_t remaining() const { return in_.size() - pos_; }
  // Marks the input malformed (for checks the caller makes itself, e.g. an enum's range).
  void fail() { ok_ = false; }

  uint8_t u8() {
    if (!need(1)) return 0;
    return in_[pos_++];
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (!need(1)) return 0;
      uint8_t b = in_[pos_++];
      if (shift == 63 && b > 1) break;  // more than 64 bits
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    ok_ = false;
    return 0;
  }
  int64_t svarint() {
    uint64_t u = varint();
    return static_cast<int64_t>((u >> 1) ^ (~(u & 1) + 1));
  }
  uint64_t fixed64() {
    if (!need(8)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= static_cast<uint64_t>(in_[pos_ + i]) << (8 * i);
    pos_ += 8;
    return v;
  }
  // A length-prefixed byte string, at most `max` bytes.
  Bytes bytes(size_t max = SIZE_MAX) {
    std::span<const uint8_t> view = bytes_view(max);
    return Bytes(view.begin(), view.end());
  }
  std::string string(size_t max = SIZE_MAX) {
    std::span<const uint8_t> view = bytes_view(max);
    return std::string(view.begin(), view.end());
  }
  std::span<const uint8_t> bytes_view(size_t max = SIZE_MAX) {
    uint64_t n = varint();
    if (!ok_ || n > max || !need(n)) {
      ok_ = false;
      return {};
    }
    std::span<const uint8_t> view = in_.subspan(pos_, n);
    pos_ += n;
    return view;
  }
  // A count of items each at least `item_bytes_min` long: rejects counts the input cannot hold,
  // so a forged count never makes the decoder allocate more than the input's size.
  uint64_t count(size_t item_bytes_min = 1) {
    uint64_t n = varint();
    if (!ok_) return 0;
    if (item_bytes_min > 0 && n > remaining() / item_bytes_min) {
      ok_ = false;
      return 0;
    }
    return n;
  }

 private:
  bool need(uint64_t n) {
    if (!ok_ || n > in_.size() - pos_) {
      ok_ = false;
      return false;
    }
    return true;
  }
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace lockstep
