#include "check/history.h"

#include <fstream>
#include <istream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "core/assert.h"

namespace lockstep::check {

namespace {

using nlohmann::json;

// Lines longer than this are rejected rather than parsed: values are bounded by the KV store's
// kValueBytesMax (1 MiB) plus the expected value of a cas, so anything far larger is not ours.
constexpr size_t kLineBytesMax = 8 * 1024 * 1024;

ReadError make_error(size_t line, std::string field, std::string message) {
  return ReadError{line, std::move(field), std::move(message)};
}

const char* json_type_name(const json& value) {
  return value.type_name();
}

// Reads a required or optional string field. Returns an error for a wrong type; `present` tells
// whether the field was there (null counts as absent only when `null_ok`).
std::optional<ReadError> read_string(const json& object, const char* field, size_t line,
                                     bool required, bool null_ok, std::optional<std::string>& out) {
  out.reset();
  auto it = object.find(field);
  if (it == object.end()) {
    if (required) return make_error(line, field, "missing field");
    return std::nullopt;
  }
  if (it->is_null() && null_ok) return std::nullopt;
  if (!it->is_string()) {
    return make_error(line, field, std::string("expected a string, got ") + json_type_name(*it));
  }
  out = it->get<std::string>();
  return std::nullopt;
}

std::optional<ReadError> read_unsigned(const json& object, const char* field, size_t line,
                                       std::optional<uint64_t>& out, bool null_ok) {
  out.reset();
  auto it = object.find(field);
  if (it == object.end()) return make_error(line, field, "missing field");
  if (it->is_null() && null_ok) return std::nullopt;
  if (!it->is_number_unsigned()) {
    // nlohmann stores every non-negative integer literal as unsigned, so anything else here is a
    // negative number, a fraction or another type.
    return make_error(line, field,
                      std::string("expected a non-negative integer") + (null_ok ? " or null" : "") +
                          ", got " + (it->is_number() ? it->dump() : json_type_name(*it)));
  }
  out = it->get<uint64_t>();
  return std::nullopt;
}

}  // namespace

std::string_view op_kind_name(OpKind kind) {
  switch (kind) {
    case OpKind::kGet:
      return "get";
    case OpKind::kPut:
      return "put";
    case OpKind::kAppend:
      return "append";
    case OpKind::kCas:
      return "cas";
    case OpKind::kDel:
      return "del";
  }
  return "?";
}

std::optional<OpKind> parse_op_kind(std::string_view name) {
  for (OpKind kind : {OpKind::kGet, OpKind::kPut, OpKind::kAppend, OpKind::kCas, OpKind::kDel}) {
    if (op_kind_name(kind) == name) return kind;
  }
  return std::nullopt;
}

bool op_kind_has_output(OpKind kind) {
  return kind == OpKind::kGet || kind == OpKind::kCas;
}

std::string ReadError::to_string() const {
  std::string text = "line " + std::to_string(line);
  if (!field.empty()) text += ", field \"" + field + "\"";
  text += ": " + message;
  return text;
}

std::optional<ReadError> parse_operation(std::string_view line, size_t line_number,
                                         Operation& out) {
  if (line.size() > kLineBytesMax) {
    return make_error(line_number, "",
                      "line longer than " + std::to_string(kLineBytesMax) + " bytes");
  }
  json object;
  try {
    object = json::parse(line);
  } catch (const json::parse_error& error) {
    return make_error(line_number, "", std::string("bad JSON: ") + error.what());
  }
  if (!object.is_object()) {
    return make_error(line_number, "",
                      std::string("expected a JSON object, got ") + json_type_name(object));
  }

  Operation op;
  std::optional<uint64_t> number;
  if (auto error = read_unsigned(object, "client", line_number, number, false)) return error;
  op.client = *number;

  std::optional<std::string> text;
  if (auto error = read_string(object, "op", line_number, true, false, text)) return error;
  auto kind = parse_op_kind(*text);
  if (!kind) {
    return make_error(line_number, "op",
                      "unknown op \"" + *text + "\" (expected get, put, append, cas or del)");
  }
  op.kind = *kind;

  if (auto error = read_string(object, "key", line_number, true, false, text)) return error;
  op.key = std::move(*text);

  const bool needs_value =
      op.kind == OpKind::kPut || op.kind == OpKind::kAppend || op.kind == OpKind::kCas;
  if (auto error = read_string(object, "value", line_number, needs_value, !needs_value, text)) {
    return error;
  }
  if (needs_value) op.value = std::move(*text);
  const bool needs_expected = op.kind == OpKind::kCas;
  if (auto error =
          read_string(object, "expected", line_number, needs_expected, !needs_expected, text)) {
    return error;
  }
  if (needs_expected) op.expected = std::move(*text);

  if (auto error = read_unsigned(object, "call", line_number, number, false)) return error;
  op.call_ns = *number;
  if (auto error = read_unsigned(object, "return", line_number, number, true)) return error;
  op.return_ns = number;
  if (op.return_ns && *op.return_ns < op.call_ns) {
    return make_error(line_number, "return",
                      "return (" + std::to_string(*op.return_ns) + ") is before call (" +
                          std::to_string(op.call_ns) + ")");
  }

  auto ok = object.find("ok");
  if (ok == object.end()) return make_error(line_number, "ok", "missing field");
  if (ok->is_null()) {
    op.outcome = Outcome::kUnknown;
  } else if (ok->is_boolean()) {
    op.outcome = ok->get<bool>() ? Outcome::kOk : Outcome::kFailed;
  } else {
    return make_error(line_number, "ok",
                      std::string("expected true, false or null, got ") + json_type_name(*ok));
  }
  if (op.outcome == Outcome::kOk && !op.return_ns) {
    return make_error(line_number, "return", "ok is true but return is null");
  }

  // The output is only meaningful for a completed get or cas; elsewhere it is type-checked (a
  // string of the wrong type is still a malformed line) and dropped.
  const bool needs_output = op.outcome == Outcome::kOk && op_kind_has_output(op.kind);
  if (auto error = read_string(object, "output", line_number, needs_output, true, text)) {
    return error;
  }
  if (needs_output) {
    if (!text) return make_error(line_number, "output", "null output for a completed operation");
    if (op.kind == OpKind::kCas && *text != "true" && *text != "false") {
      return make_error(line_number, "output",
                        "cas output must be \"true\" or \"false\", got \"" + *text + "\"");
    }
    op.output = std::move(*text);
  }
  out = std::move(op);
  return std::nullopt;
}

ReadResult read_history(std::istream& in) {
  ReadResult result;
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    Operation op;
    if (auto error = parse_operation(line, line_number, op)) {
      result.error = std::move(error);
      return result;
    }
    result.operations.push_back(std::move(op));
    result.line_numbers.push_back(line_number);
  }
  if (in.bad()) result.error = make_error(line_number, "", "read error");
  return result;
}

ReadResult read_history_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ReadResult result;
    result.error = make_error(0, "", "cannot open " + path);
    return result;
  }
  return read_history(in);
}

std::string format_operation(const Operation& operation) {
  // ordered_json keeps the field order of the format document, which makes files diffable and
  // readable; a plain json object would sort the keys.
  nlohmann::ordered_json line;
  line["client"] = operation.client;
  line["op"] = std::string(op_kind_name(operation.kind));
  line["key"] = operation.key;
  if (operation.kind == OpKind::kCas) line["expected"] = operation.expected;
  if (operation.kind == OpKind::kPut || operation.kind == OpKind::kAppend ||
      operation.kind == OpKind::kCas) {
    line["value"] = operation.value;
  }
  if (operation.outcome == Outcome::kOk && op_kind_has_output(operation.kind)) {
    LOCKSTEP_ASSERT(operation.output.has_value(), "a completed get or cas needs an output");
    line["output"] = *operation.output;
  }
  line["call"] = operation.call_ns;
  if (operation.return_ns) {
    line["return"] = *operation.return_ns;
  } else {
    line["return"] = nullptr;
  }
  switch (operation.outcome) {
    case Outcome::kOk:
      line["ok"] = true;
      break;
    case Outcome::kFailed:
      line["ok"] = false;
      break;
    case Outcome::kUnknown:
      line["ok"] = nullptr;
      break;
  }
  try {
    return line.dump();
  } catch (const nlohmann::ordered_json::type_error& error) {
    throw std::invalid_argument(std::string("operation cannot be written as JSON: ") +
                                error.what());
  }
}

std::optional<std::string> write_history(std::ostream& out, std::span<const Operation> operations) {
  for (const Operation& op : operations) {
    try {
      out << format_operation(op) << '\n';
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
  }
  out.flush();
  if (!out) return "write failed";
  return std::nullopt;
}

std::optional<std::string> write_history_file(const std::string& path,
                                              std::span<const Operation> operations) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return "cannot open " + path + " for writing";
  if (auto error = write_history(out, operations)) return path + ": " + *error;
  return std::nullopt;
}

uint64_t HistoryRecorder::invoke(uint64_t client, OpKind kind, std::string key, std::string value,
                                 std::string expected, uint64_t call_ns) {
  Operation op;
  op.client = client;
  op.kind = kind;
  op.key = std::move(key);
  op.value = std::move(value);
  op.expected = std::move(expected);
  op.call_ns = call_ns;
  op.outcome = Outcome::kUnknown;  // until told otherwise, an invoked operation may take effect
  operations_.push_back(std::move(op));
  completed_.push_back(false);
  return operations_.size() - 1;
}

void HistoryRecorder::mark_completed(uint64_t id) {
  LOCKSTEP_ASSERT(id < operations_.size(), "completing an operation that was never invoked");
  LOCKSTEP_ASSERT(!completed_[id], "an operation completed twice");
  completed_[id] = true;
}

void HistoryRecorder::complete_ok(uint64_t id, std::optional<std::string> output,
                                  uint64_t return_ns) {
  mark_completed(id);
  Operation& op = operations_[id];
  LOCKSTEP_ASSERT(return_ns >= op.call_ns, "an operation returned before it was called");
  LOCKSTEP_ASSERT(output.has_value() == op_kind_has_output(op.kind),
                  "get and cas complete with an output, the other ops without");
  LOCKSTEP_ASSERT(op.kind != OpKind::kCas || *output == "true" || *output == "false",
                  "a cas output is \"true\" or \"false\"");
  op.output = std::move(output);
  op.return_ns = return_ns;
  op.outcome = Outcome::kOk;
}

void HistoryRecorder::complete_failed(uint64_t id, uint64_t return_ns) {
  mark_completed(id);
  Operation& op = operations_[id];
  LOCKSTEP_ASSERT(return_ns >= op.call_ns, "an operation returned before it was called");
  op.return_ns = return_ns;
  op.outcome = Outcome::kFailed;
}

void HistoryRecorder::complete_unknown(uint64_t id) {
  mark_completed(id);
  Operation& op = operations_[id];
  op.return_ns.reset();
  op.outcome = Outcome::kUnknown;
}

std::optional<std::string> HistoryRecorder::write_jsonl(const std::string& path) const {
  return write_history_file(path, operations_);
}

}  // namespace lockstep::check
