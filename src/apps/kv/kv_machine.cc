#include "apps/kv/kv_machine.h"

#include <charconv>
#include <string_view>
#include <utility>

#include "core/wire.h"

// Command layout: one op byte, then the op's fields in this order, each a varint length and the
// bytes (strings) or a zigzag varint (delta). Fields the op does not use are not encoded.
//   get    key
//   put    key value
//   del    key
//   append key value
//   cas    key expected value
//   incr   key delta
// Result layout: one code byte, then the value as a length-prefixed string.
//
// Snapshot layout: a version byte (kSnapshotVersion), a varint entry count, then each entry as
// key and value (length-prefixed), keys strictly ascending. Strict order makes the encoding of a
// state unique, so equal states give equal bytes and equal service digests.

namespace lockstep::kv {
namespace {

constexpr uint8_t kSnapshotVersion = 1;
// An entry is at least two length varints (empty key and value).
constexpr size_t kEntryBytesMin = 2;

bool valid_op(uint8_t op) {
  return op >= static_cast<uint8_t>(Op::kGet) && op <= static_cast<uint8_t>(Op::kIncr);
}

bool uses_value(Op op) {
  return op == Op::kPut || op == Op::kAppend || op == Op::kCas;
}

Result error(std::string message) {
  return Result{ResultCode::kError, std::move(message)};
}

// Strict: the whole text must be an optional '-' and decimal digits; no sign '+', no spaces, no
// empty string. Anything else is "not a number" rather than a guess at what the user meant.
std::optional<int64_t> parse_int64(std::string_view text) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr != end) return std::nullopt;
  return value;
}

}  // namespace

Bytes encode_command(const Command& command) {
  Bytes out;
  Writer w(out);
  w.u8(static_cast<uint8_t>(command.op));
  w.string(command.key);
  if (command.op == Op::kCas) w.string(command.expected);
  if (uses_value(command.op)) w.string(command.value);
  if (command.op == Op::kIncr) w.svarint(command.delta);
  return out;
}

std::optional<Command> decode_command(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  uint8_t op = r.u8();
  if (!r.ok() || !valid_op(op)) return std::nullopt;
  Command command;
  command.op = static_cast<Op>(op);
  command.key = r.string(kKeyBytesMax);
  if (command.op == Op::kCas) command.expected = r.string(kValueBytesMax);
  if (uses_value(command.op)) command.value = r.string(kValueBytesMax);
  if (command.op == Op::kIncr) command.delta = r.svarint();
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return command;
}

Bytes encode_result(const Result& result) {
  Bytes out;
  Writer w(out);
  w.u8(static_cast<uint8_t>(result.code));
  w.string(result.value);
  return out;
}

std::optional<Result> decode_result(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  uint8_t code = r.u8();
  if (!r.ok() || code > static_cast<uint8_t>(ResultCode::kError)) return std::nullopt;
  Result result;
  result.code = static_cast<ResultCode>(code);
  result.value = r.string(kValueBytesMax);
  if (!r.ok() || !r.at_end()) return std::nullopt;
  return result;
}

Bytes KvMachine::apply(std::span<const uint8_t> command) {
  std::optional<Command> decoded = decode_command(command);
  if (!decoded) return encode_result(error("malformed command"));
  return encode_result(execute(*decoded));
}

Result KvMachine::execute(const Command& command) {
  switch (command.op) {
    case Op::kGet: {
      auto it = data_.find(command.key);
      if (it == data_.end()) return Result{ResultCode::kNotFound, ""};
      return Result{ResultCode::kOk, it->second};
    }
    case Op::kPut:
      data_.insert_or_assign(command.key, command.value);
      return Result{};
    case Op::kDel:
      data_.erase(command.key);
      return Result{};
    case Op::kAppend: {
      auto it = data_.find(command.key);
      size_t old_bytes = it == data_.end() ? 0 : it->second.size();
      // Checked before changing anything, so a refused append leaves the value as it was.
      if (command.value.size() > kValueBytesMax - old_bytes) return error("value too large");
      if (it == data_.end()) {
        data_.emplace(command.key, command.value);
      } else {
        it->second += command.value;
      }
      return Result{};
    }
    case Op::kCas: {
      auto it = data_.find(command.key);
      if (it == data_.end() || it->second != command.expected) {
        return Result{ResultCode::kOk, "false"};
      }
      it->second = command.value;
      return Result{ResultCode::kOk, "true"};
    }
    case Op::kIncr: {
      auto it = data_.find(command.key);
      int64_t old_value = 0;
      if (it != data_.end()) {
        std::optional<int64_t> parsed = parse_int64(it->second);
        if (!parsed) return error("value is not a decimal int64");
        old_value = *parsed;
      }
      int64_t new_value = 0;
      if (__builtin_add_overflow(old_value, command.delta, &new_value)) {
        return error("increment overflows int64");
      }
      std::string text = std::to_string(new_value);
      data_.insert_or_assign(command.key, text);
      return Result{ResultCode::kOk, std::move(text)};
    }
  }
  // decode_command admits only the ops above.
  return error("unknown op");
}

Bytes KvMachine::snapshot() const {
  Bytes out;
  Writer w(out);
  w.u8(kSnapshotVersion);
  w.varint(data_.size());
  for (const auto& [key, value] : data_) {
    w.string(key);
    w.string(value);
  }
  return out;
}

void KvMachine::restore(std::span<const uint8_t> snapshot) {
  Reader r(snapshot);
  uint8_t version = r.u8();
  if (!r.ok()) throw SnapshotError("kv snapshot: empty");
  if (version != kSnapshotVersion) throw SnapshotError("kv snapshot: unknown version");
  uint64_t count = r.count(kEntryBytesMin);
  // Built aside and swapped in at the end, so a bad snapshot leaves data_ untouched.
  std::map<std::string, std::string> restored;
  for (uint64_t i = 0; i < count && r.ok(); ++i) {
    std::string key = r.string(kKeyBytesMax);
    std::string value = r.string(kValueBytesMax);
    if (!r.ok()) break;
    if (!restored.empty() && !(restored.rbegin()->first < key)) {
      throw SnapshotError("kv snapshot: keys not strictly ascending");
    }
    restored.emplace_hint(restored.end(), std::move(key), std::move(value));
  }
  if (!r.ok()) throw SnapshotError("kv snapshot: truncated or oversized field");
  if (!r.at_end()) throw SnapshotError("kv snapshot: trailing bytes");
  data_.swap(restored);
}

}  // namespace lockstep::kv
