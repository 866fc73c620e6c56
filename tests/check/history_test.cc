// The history format: reader errors (one test per kind), the writer's exact output, round trips
// and the recorder's lifecycle.
#include "check/history.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_histories.h"

namespace lockstep::check {
namespace {

ReadResult read_text(const std::string& text) {
  std::istringstream in(text);
  return read_history(in);
}

// Reads a history whose third line is `bad` and checks the error names line 3 and `field`.
void expect_error(const std::string& bad, const std::string& field,
                  const std::string& message_part) {
  const std::string good =
      R"({"client":1,"op":"put","key":"k","value":"v","call":1,"return":2,"ok":true})";
  ReadResult result = read_text(good + "\n\n" + bad + "\n" + good + "\n");
  ASSERT_FALSE(result.ok()) << bad;
  EXPECT_EQ(result.error->line, 3u) << bad;
  EXPECT_EQ(result.error->field, field) << bad;
  EXPECT_NE(result.error->message.find(message_part), std::string::npos)
      << result.error->to_string();
  EXPECT_NE(result.error->to_string().find("line 3"), std::string::npos);
}

TEST(HistoryReader, ReadsTheSpecExample) {
  ReadResult result = read_text(
      R"({"client":3,"op":"put","key":"k1","value":"v7","call":1034000,"return":1290000,"ok":true}
{"client":4,"op":"get","key":"k1","output":"v7","call":1100000,"return":1400000,"ok":true}
{"client":5,"op":"append","key":"k2","value":"x9","call":1200000,"return":null,"ok":null}
{"client":6,"op":"cas","key":"k1","expected":"v7","value":"v8","output":"true","call":1500000,"return":1700000,"ok":true}
)");
  ASSERT_TRUE(result.ok()) << result.error->to_string();
  ASSERT_EQ(result.operations.size(), 4u);
  EXPECT_EQ(result.operations[0], testing::put(3, "k1", "v7", 1034000, 1290000));
  EXPECT_EQ(result.operations[1], testing::get(4, "k1", "v7", 1100000, 1400000));
  Operation append = testing::unknown(testing::append(5, "k2", "x9", 1200000, 0));
  EXPECT_EQ(result.operations[2], append);
  EXPECT_EQ(result.operations[3], testing::cas(6, "k1", "v7", "v8", true, 1500000, 1700000));
  EXPECT_EQ(result.line_numbers, (std::vector<size_t>{1, 2, 3, 4}));
}

TEST(HistoryReader, AcceptsDelFailedAndUnknownOutcomesAndExtraFields) {
  ReadResult result = read_text(
      "{\"client\":1,\"op\":\"del\",\"key\":\"k\",\"call\":5,\"return\":9,\"ok\":true}\r\n"
      "{\"client\":2,\"op\":\"get\",\"key\":\"k\",\"call\":5,\"return\":9,\"ok\":false,"
      "\"note\":\"timeout\"}\n"
      "{\"client\":2,\"op\":\"cas\",\"key\":\"k\",\"expected\":\"a\",\"value\":\"b\","
      "\"call\":10,\"return\":20,\"ok\":null}\n");
  ASSERT_TRUE(result.ok()) << result.error->to_string();
  ASSERT_EQ(result.operations.size(), 3u);
  EXPECT_EQ(result.operations[0].kind, OpKind::kDel);
  EXPECT_EQ(result.operations[1].outcome, Outcome::kFailed);
  EXPECT_FALSE(result.operations[1].output.has_value());
  // An unknown outcome may still carry the time the client gave up.
  EXPECT_EQ(result.operations[2].outcome, Outcome::kUnknown);
  EXPECT_EQ(result.operations[2].return_ns, 20u);
  EXPECT_FALSE(result.operations[2].output.has_value());
}

TEST(HistoryReader, BadJson) {
  expect_error(R"({"client":1,"op":"put")", "", "bad JSON");
  expect_error(R"({"client":NaN,"op":"get","key":"k","call":1,"return":2,"ok":true})", "",
               "bad JSON");
}

TEST(HistoryReader, NotAnObject) {
  expect_error("[1,2,3]", "", "expected a JSON object");
}

TEST(HistoryReader, MissingFields) {
  expect_error(R"({"op":"put","key":"k","value":"v","call":1,"return":2,"ok":true})", "client",
               "missing field");
  expect_error(R"({"client":1,"key":"k","value":"v","call":1,"return":2,"ok":true})", "op",
               "missing field");
  expect_error(R"({"client":1,"op":"put","value":"v","call":1,"return":2,"ok":true})", "key",
               "missing field");
  expect_error(R"({"client":1,"op":"append","key":"k","call":1,"return":2,"ok":true})", "value",
               "missing field");
  expect_error(R"({"client":1,"op":"cas","key":"k","value":"v","output":"true","call":1,)"
               R"("return":2,"ok":true})",
               "expected", "missing field");
  expect_error(R"({"client":1,"op":"put","key":"k","value":"v","return":2,"ok":true})", "call",
               "missing field");
  expect_error(R"({"client":1,"op":"put","key":"k","value":"v","call":1,"ok":true})", "return",
               "missing field");
  expect_error(R"({"client":1,"op":"put","key":"k","value":"v","call":1,"return":2})", "ok",
               "missing field");
  expect_error(R"({"client":1,"op":"get","key":"k","call":1,"return":2,"ok":true})", "output",
               "missing field");
}

TEST(HistoryReader, WrongTypes) {
  expect_error(R"({"client":"1","op":"put","key":"k","value":"v","call":1,"return":2,"ok":true})",
               "client", "non-negative integer");
  expect_error(R"({"client":-1,"op":"put","key":"k","value":"v","call":1,"return":2,"ok":true})",
               "client", "non-negative integer");
  expect_error(R"({"client":1,"op":"put","key":7,"value":"v","call":1,"return":2,"ok":true})",
               "key", "expected a string");
  expect_error(R"({"client":1,"op":"put","key":"k","value":null,"call":1,"return":2,"ok":true})",
               "value", "expected a string");
  expect_error(R"({"client":1,"op":"put","key":"k","value":"v","call":1.5,"return":2,"ok":true})",
               "call", "non-negative integer");
  expect_error(R"({"client":1,"op":"put","key":"k","value":"v","call":1,"return":"2","ok":true})",
               "return", "non-negative integer or null");
  expect_error(R"({"client":1,"op":"put","key":"k","value":"v","call":1,"return":2,"ok":"yes"})",
               "ok", "expected true, false or null");
  expect_error(R"({"client":1,"op":"get","key":"k","output":3,"call":1,"return":2,"ok":true})",
               "output", "expected a string");
  expect_error(R"({"client":1,"op":true,"key":"k","call":1,"return":2,"ok":true})", "op",
               "expected a string");
}

TEST(HistoryReader, UnknownOp) {
  expect_error(R"({"client":1,"op":"incr","key":"k","call":1,"return":2,"ok":true})", "op",
               "unknown op \"incr\"");
}

TEST(HistoryReader, ReturnBeforeCall) {
  expect_error(R"({"client":1,"op":"put","key":"k","value":"v","call":10,"return":9,"ok":true})",
               "return", "is before call");
}

TEST(HistoryReader, InconsistentOutcome) {
  expect_error(R"({"client":1,"op":"put","key":"k","value":"v","call":1,"return":null,"ok":true})",
               "return", "ok is true but return is null");
  expect_error(R"({"client":1,"op":"cas","key":"k","expected":"a","value":"b","output":"yes",)"
               R"("call":1,"return":2,"ok":true})",
               "output", "\"true\" or \"false\"");
}

TEST(HistoryReader, MissingFileIsAnError) {
  ReadResult result = read_history_file("/nonexistent/dir/history.jsonl");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error->line, 0u);
}

TEST(HistoryWriter, WritesTheSpecFieldNames) {
  EXPECT_EQ(format_operation(testing::put(3, "k1", "v7", 1034000, 1290000)),
            R"({"client":3,"op":"put","key":"k1","value":"v7","call":1034000,"return":1290000,)"
            R"("ok":true})");
  EXPECT_EQ(format_operation(testing::get(4, "k1", "v7", 1100000, 1400000)),
            R"({"client":4,"op":"get","key":"k1","output":"v7","call":1100000,"return":1400000,)"
            R"("ok":true})");
  EXPECT_EQ(format_operation(testing::unknown(testing::append(5, "k2", "x9", 1200000, 0))),
            R"({"client":5,"op":"append","key":"k2","value":"x9","call":1200000,"return":null,)"
            R"("ok":null})");
  EXPECT_EQ(format_operation(testing::cas(6, "k1", "v7", "v8", true, 1500000, 1700000)),
            R"({"client":6,"op":"cas","key":"k1","expected":"v7","value":"v8","output":"true",)"
            R"("call":1500000,"return":1700000,"ok":true})");
  EXPECT_EQ(format_operation(testing::failed(testing::del(7, "k", 1, 2))),
            R"({"client":7,"op":"del","key":"k","call":1,"return":2,"ok":false})");
}

TEST(HistoryWriter, RoundTripsRandomHistories) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    testing::GeneratorOptions options;
    options.seed = seed;
    options.unknown_fraction = 0.2;
    options.failed_fraction = 0.2;
    std::vector<Operation> history = testing::generate_linearizable(options);
    history.push_back(testing::put(1, "quote\"and\\back\nslash", "\xc3\xa9t\xc3\xa9", 1, 2));
    std::stringstream out;
    ASSERT_FALSE(write_history(out, history).has_value());
    ReadResult back = read_history(out);
    ASSERT_TRUE(back.ok()) << back.error->to_string();
    ASSERT_EQ(back.operations, history) << "seed " << seed;
  }
}

TEST(HistoryWriter, RejectsInvalidUtf8) {
  std::vector<Operation> history = {testing::put(1, "k", "\xff\xfe", 1, 2)};
  std::stringstream out;
  auto error = write_history(out, history);
  ASSERT_TRUE(error.has_value());
  EXPECT_NE(error->find("JSON"), std::string::npos) << *error;
}

TEST(HistoryRecorder, RecordsEveryOutcome) {
  HistoryRecorder recorder;
  const uint64_t a = recorder.invoke(1, OpKind::kPut, "k", "v1", "", 100);
  const uint64_t b = recorder.invoke(2, OpKind::kGet, "k", "", "", 110);
  const uint64_t c = recorder.invoke(3, OpKind::kCas, "k", "v2", "v1", 120);
  const uint64_t d = recorder.invoke(4, OpKind::kAppend, "k", "x", "", 130);
  const uint64_t e = recorder.invoke(5, OpKind::kPut, "k", "v3", "", 140);  // never completes
  recorder.complete_ok(a, std::nullopt, 200);
  recorder.complete_ok(b, "v1", 210);
  recorder.complete_failed(c, 220);
  recorder.complete_unknown(d);

  const auto& ops = recorder.operations();
  ASSERT_EQ(ops.size(), 5u);
  EXPECT_EQ(ops[a], testing::put(1, "k", "v1", 100, 200));
  EXPECT_EQ(ops[b], testing::get(2, "k", "v1", 110, 210));
  EXPECT_EQ(ops[c].outcome, Outcome::kFailed);
  EXPECT_EQ(ops[c].return_ns, 220u);
  EXPECT_EQ(ops[c].expected, "v1");
  EXPECT_EQ(ops[d].outcome, Outcome::kUnknown);
  EXPECT_FALSE(ops[d].return_ns.has_value());
  // Still in flight when the run ended: a checker must assume it may have happened.
  EXPECT_EQ(ops[e].outcome, Outcome::kUnknown);
  EXPECT_FALSE(ops[e].return_ns.has_value());

  const auto path = std::filesystem::temp_directory_path() /
                    ("lockstep_recorder_" + std::to_string(::getpid()) + ".jsonl");
  ASSERT_FALSE(recorder.write_jsonl(path.string()).has_value());
  ReadResult back = read_history_file(path.string());
  std::filesystem::remove(path);
  ASSERT_TRUE(back.ok()) << back.error->to_string();
  EXPECT_EQ(back.operations, ops);
}

TEST(HistoryRecorderDeathTest, CompletingTwiceAborts) {
  HistoryRecorder recorder;
  const uint64_t id = recorder.invoke(1, OpKind::kPut, "k", "v", "", 1);
  recorder.complete_ok(id, std::nullopt, 2);
  EXPECT_DEATH(recorder.complete_unknown(id), "completed twice");
  EXPECT_DEATH(recorder.complete_ok(99, std::nullopt, 2), "never invoked");
}

}  // namespace
}  // namespace lockstep::check
