// The replicated key-value store: lockstep's first application.
//
// Commands (encode with the helpers below, decode inside apply):
//   get k            -> value of k, or absent
//   put k v          -> ok
//   del k            -> ok; existed or not
//   append k v       -> ok; k's value becomes old + v (old = "" when absent)
//   cas k expected v -> "true" and sets k to v when k's value equals expected (absent never
//                       equals), else "false"
//   incr k delta     -> the new value as decimal text; an absent key counts as 0; a value that is
//                       not a decimal int64 (or overflow) gives an error result and no change
// Keys and values are byte strings up to kKeyBytesMax / kValueBytesMax.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>

#include "statemachine/state_machine.h"

namespace lockstep::kv {

inline constexpr size_t kKeyBytesMax = 4096;
inline constexpr size_t kValueBytesMax = 1024 * 1024;

enum class Op : uint8_t { kGet = 1, kPut = 2, kDel = 3, kAppend = 4, kCas = 5, kIncr = 6 };

struct Command {
  Op op = Op::kGet;
  std::string key;
  std::string value;     // put, append, cas (new value)
  std::string expected;  // cas
  int64_t delta = 0;     // incr
  bool operator==(const Command&) const = default;
};

enum class ResultCode : uint8_t { kOk = 0, kNotFound = 1, kError = 2 };

struct Result {
  ResultCode code = ResultCode::kOk;
  std::string value;  // get: the value; cas: "true"/"false"; incr: new value; error: message
  bool operator==(const Result&) const = default;
};

Bytes encode_command(const Command& command);
std::optional<Command> decode_command(std::span<const uint8_t> bytes);
Bytes encode_result(const Result& result);
std::optional<Result> decode_result(std::span<const uint8_t> bytes);

class KvMachine final : public StateMachine {
 public:
  Bytes apply(std::span<const uint8_t> command) override;
  Bytes snapshot() const override;
  void restore(std::span<const uint8_t> snapshot) override;

  // For tests and tools; not part of the replicated interface.
  const std::map<std::string, std::string>& data() const { return data_; }

 private:
  Result execute(const Command& command);
  std::map<std::string, std::string> data_;
};

}  // namespace lockstep::kv
