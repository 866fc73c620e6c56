// Operation histories: what every client of a run invoked, when, and what it got back.
//
// On-disk format (the contract is /work/shared/history-format.md; summarised here because this
// header owns the code that reads and writes it): UTF-8 JSON lines, one operation per line, in
// any order. Blank lines are skipped. Fields:
//
//   client    integer >= 0; one client has at most one operation outstanding
//   op        "get" | "put" | "append" | "cas" | "del"   ("del" is a lockstep extension: the KV
//             store has it, and a history that uses it must still be checkable)
//   key       string
//   value     string; required for put, append and cas (the new value), ignored otherwise
//   expected  string; required for cas
//   output    string or null; required for get and cas when ok is true ("true"/"false" for cas);
//             ignored for the other ops and whenever ok is not true
//   call      integer >= 0, nanoseconds on one monotonic clock shared by every client
//   return    integer >= call, or null when the outcome is unknown
//   ok        true (completed, output known) | false (certainly no effect) | null (unknown: may
//             take effect at any time after call, even after `return` if one is given)
//
// Unknown extra fields are ignored so that workloads may add their own. The reader rejects a
// line with the line number and the offending field; it never aborts on bad input.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep::check {

enum class OpKind : uint8_t { kGet, kPut, kAppend, kCas, kDel };

// The three values of the `ok` field.
enum class Outcome : uint8_t {
  kOk,       // ok: true
  kFailed,   // ok: false; the operation certainly had no effect
  kUnknown,  // ok: null; it may have taken effect at any time after call
};

std::string_view op_kind_name(OpKind kind);
std::optional<OpKind> parse_op_kind(std::string_view name);

// True for the operations whose completed form returns an output (get and cas).
bool op_kind_has_output(OpKind kind);

struct Operation {
  uint64_t client = 0;
  OpKind kind = OpKind::kGet;
  std::string key;
  std::string value;     // put, append: the argument; cas: the new value
  std::string expected;  // cas only
  // get: the value read ("" when absent); cas: "true" or "false". Present exactly when the
  // operation completed (outcome kOk) and its kind has an output; the reader enforces that.
  std::optional<std::string> output;
  uint64_t call_ns = 0;
  std::optional<uint64_t> return_ns;  // absent when the outcome is unknown
  Outcome outcome = Outcome::kUnknown;

  bool operator==(const Operation&) const = default;
};

struct ReadError {
  size_t line = 0;    // 1-based line number in the input
  std::string field;  // the offending field, empty when the line as a whole is bad
  std::string message;

  // "line 7, field \"call\": expected a non-negative integer"
  std::string to_string() const;
};

struct ReadResult {
  std::vector<Operation> operations;
  // line_numbers[i] is the 1-based input line of operations[i], so that reports can point back
  // into the file.
  std::vector<size_t> line_numbers;
  std::optional<ReadError> error;  // set on the first bad line; operations are then partial

  bool ok() const { return !error.has_value(); }
};

// Parses one line; `line_number` is only used in the error.
std::optional<ReadError> parse_operation(std::string_view line, size_t line_number, Operation& out);

ReadResult read_history(std::istream& in);
// A file that cannot be opened is reported as a ReadError on line 0.
ReadResult read_history_file(const std::string& path);

// Serialises one operation as one JSON line (without the newline), with the field names of the
// format above. Throws std::invalid_argument when a string is not valid UTF-8 (JSON cannot carry
// it, and silently replacing bytes would make the history lie).
std::string format_operation(const Operation& operation);

// Writes every operation, one line each. Returns an error message, or nothing on success.
std::optional<std::string> write_history(std::ostream& out, std::span<const Operation> operations);
std::optional<std::string> write_history_file(const std::string& path,
                                              std::span<const Operation> operations);

// Records a history as a workload (or the simulator) runs it. Not thread-safe, on purpose: it
// takes no locks so that the simulator stays deterministic; a multi-threaded workload gives each
// thread its own recorder and concatenates them (operations may appear in any order).
//
// Lifecycle of one operation: invoke() returns its id; then at most one of complete_ok,
// complete_failed or complete_unknown. An operation never completed stays unknown (ok: null),
// which is exactly what a checker must assume about a request still in flight when the run ended.
// Completing an unknown id, or completing twice, is a caller bug and aborts.
class HistoryRecorder {
 public:
  uint64_t invoke(uint64_t client, OpKind kind, std::string key, std::string value,
                  std::string expected, uint64_t call_ns);
  // `output` is required (and only allowed) for get and cas; return_ns must be >= call_ns.
  void complete_ok(uint64_t id, std::optional<std::string> output, uint64_t return_ns);
  // The operation certainly had no effect (rejected before any replica saw it).
  void complete_failed(uint64_t id, uint64_t return_ns);
  // The outcome will never be known (timeout, crash): ok null, return null.
  void complete_unknown(uint64_t id);

  const std::vector<Operation>& operations() const { return operations_; }
  std::optional<std::string> write_jsonl(const std::string& path) const;

 private:
  void mark_completed(uint64_t id);

  std::vector<Operation> operations_;
  std::vector<bool> completed_;
};

}  // namespace lockstep::check
