#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "apps/kv/kv_machine.h"
#include "core/wire.h"

namespace lockstep::kv {
namespace {

Command make(Op op, std::string key, std::string value = "", std::string expected = "",
             int64_t delta = 0) {
  Command command;
  command.op = op;
  command.key = std::move(key);
  command.value = std::move(value);
  command.expected = std::move(expected);
  command.delta = delta;
  return command;
}
Command get(std::string key) {
  return make(Op::kGet, std::move(key));
}
Command put(std::string key, std::string value) {
  return make(Op::kPut, std::move(key), std::move(value));
}
Command del(std::string key) {
  return make(Op::kDel, std::move(key));
}
Command append(std::string key, std::string value) {
  return make(Op::kAppend, std::move(key), std::move(value));
}
Command cas(std::string key, std::string expected, std::string value) {
  return make(Op::kCas, std::move(key), std::move(value), std::move(expected));
}
Command incr(std::string key, int64_t delta) {
  return make(Op::kIncr, std::move(key), "", "", delta);
}

Result ok(std::string value = "") {
  return Result{ResultCode::kOk, std::move(value)};
}
Result not_found() {
  return Result{ResultCode::kNotFound, ""};
}

class KvTest : public ::testing::Test {
 protected:
  Result run(const Command& command) { return run_bytes(encode_command(command)); }
  Result run_bytes(const Bytes& bytes) {
    std::optional<Result> result = decode_result(kv.apply(bytes));
    EXPECT_TRUE(result.has_value()) << "apply must always return a decodable result";
    return result.value_or(Result{ResultCode::kError, "undecodable"});
  }
  // An error result whose message we do not pin down, and no state change.
  void expect_error_no_change(const Command& command) {
    auto before = kv.data();
    EXPECT_EQ(run(command).code, ResultCode::kError);
    EXPECT_EQ(kv.data(), before);
  }
  KvMachine kv;
};

TEST_F(KvTest, GetAbsentIsNotFound) {
  EXPECT_EQ(run(get("k")), not_found());
}

TEST_F(KvTest, PutThenGet) {
  EXPECT_EQ(run(put("k", "v")), ok());
  EXPECT_EQ(run(get("k")), ok("v"));
  EXPECT_EQ(run(put("k", "w")), ok());
  EXPECT_EQ(run(get("k")), ok("w"));
}

TEST_F(KvTest, EmptyKeyAndValueAreOrdinary) {
  EXPECT_EQ(run(put("", "")), ok());
  EXPECT_EQ(run(get("")), ok(""));
  EXPECT_EQ(kv.data().size(), 1u);
}

TEST_F(KvTest, BinaryKeysAndValues) {
  std::string key("a\0b", 3);
  std::string value("\xff\0\x01", 3);
  EXPECT_EQ(run(put(key, value)), ok());
  EXPECT_EQ(run(get(key)), ok(value));
  EXPECT_EQ(run(get("a")), not_found());
}

TEST_F(KvTest, DelPresentAndAbsent) {
  run(put("k", "v"));
  EXPECT_EQ(run(del("k")), ok());
  EXPECT_EQ(run(get("k")), not_found());
  EXPECT_EQ(run(del("k")), ok());
  EXPECT_EQ(run(del("never")), ok());
  EXPECT_TRUE(kv.data().empty());
}

TEST_F(KvTest, AppendToAbsentAndPresent) {
  EXPECT_EQ(run(append("k", "ab")), ok());
  EXPECT_EQ(run(get("k")), ok("ab"));
  EXPECT_EQ(run(append("k", "cd")), ok());
  EXPECT_EQ(run(get("k")), ok("abcd"));
  EXPECT_EQ(run(append("k", "")), ok());
  EXPECT_EQ(run(get("k")), ok("abcd"));
}

TEST_F(KvTest, AppendBeyondValueLimitIsRefusedWithoutChange) {
  run(put("k", std::string(kValueBytesMax - 1, 'x')));
  EXPECT_EQ(run(append("k", "y")), ok());
  EXPECT_EQ(kv.data().at("k").size(), kValueBytesMax);
  expect_error_no_change(append("k", "z"));
}

TEST_F(KvTest, CasOnAbsentKeyFailsEvenForEmptyExpected) {
  EXPECT_EQ(run(cas("k", "", "v")), ok("false"));
  EXPECT_EQ(run(get("k")), not_found());
}

TEST_F(KvTest, CasMatchAndMismatch) {
  run(put("k", "a"));
  EXPECT_EQ(run(cas("k", "b", "c")), ok("false"));
  EXPECT_EQ(run(get("k")), ok("a"));
  EXPECT_EQ(run(cas("k", "a", "c")), ok("true"));
  EXPECT_EQ(run(get("k")), ok("c"));
}

TEST_F(KvTest, CasOnEmptyValueMatchesEmptyExpected) {
  run(put("k", ""));
  EXPECT_EQ(run(cas("k", "", "x")), ok("true"));
  EXPECT_EQ(run(get("k")), ok("x"));
}

TEST_F(KvTest, IncrAbsentCountsFromZero) {
  EXPECT_EQ(run(incr("n", 5)), ok("5"));
  EXPECT_EQ(run(incr("n", -7)), ok("-2"));
  EXPECT_EQ(run(get("n")), ok("-2"));
  EXPECT_EQ(run(incr("m", 0)), ok("0"));
  EXPECT_EQ(run(get("m")), ok("0"));
}

TEST_F(KvTest, IncrParsesExistingDecimal) {
  run(put("n", "41"));
  EXPECT_EQ(run(incr("n", 1)), ok("42"));
  run(put("n", "-9223372036854775808"));
  EXPECT_EQ(run(incr("n", 1)), ok("-9223372036854775807"));
}

TEST_F(KvTest, IncrOnNonNumberIsErrorWithoutChange) {
  for (const char* text : {"", "abc", "12a", " 1", "1 ", "+1", "0x10", "1.5", "--1", "-"}) {
    SCOPED_TRACE(text);
    run(put("n", text));
    expect_error_no_change(incr("n", 1));
    EXPECT_EQ(kv.data().at("n"), text);
  }
}

TEST_F(KvTest, IncrOverflowIsErrorWithoutChange) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  run(put("n", std::to_string(kMax)));
  expect_error_no_change(incr("n", 1));
  EXPECT_EQ(run(incr("n", 0)), ok(std::to_string(kMax)));
  run(put("n", std::to_string(kMin)));
  expect_error_no_change(incr("n", -1));
  // Out of range as text is as much an error as out of range by arithmetic.
  run(put("n", "9223372036854775808"));
  expect_error_no_change(incr("n", 0));
}

TEST_F(KvTest, IncrOnAbsentExtremeDeltas) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(run(incr("a", kMin)), ok(std::to_string(kMin)));
  expect_error_no_change(incr("a", -1));
  EXPECT_EQ(run(incr("a", kMax)), ok("-1"));
}

TEST_F(KvTest, MalformedCommandsAreErrorsWithoutChange) {
  run(put("k", "v"));
  auto before = kv.data();
  Bytes valid = encode_command(put("x", "y"));
  std::vector<Bytes> malformed = {
      {},                                               // empty
      {0},                                              // op 0
      {7, 0},                                           // op past the last
      {0xff, 0},                                        // op far out of range
      {static_cast<uint8_t>(Op::kGet)},                 // no key
      {static_cast<uint8_t>(Op::kGet), 5, 'a'},         // key shorter than its length
      {static_cast<uint8_t>(Op::kGet), 0, 0},           // trailing byte
      {static_cast<uint8_t>(Op::kPut), 1, 'k'},         // no value
      {static_cast<uint8_t>(Op::kIncr), 1, 'k'},        // no delta
      {static_cast<uint8_t>(Op::kIncr), 1, 'k', 0x80},  // unterminated varint
      Bytes(valid.begin(), valid.end() - 1),            // truncated
  };
  Bytes trailing = valid;
  trailing.push_back(0);
  malformed.push_back(trailing);
  for (const Bytes& bytes : malformed) {
    EXPECT_EQ(run_bytes(bytes).code, ResultCode::kError);
    EXPECT_FALSE(decode_command(bytes).has_value());
    EXPECT_EQ(kv.data(), before);
  }
}

TEST_F(KvTest, OversizeKeyOrValueIsRejected) {
  Command long_key = put(std::string(kKeyBytesMax + 1, 'k'), "v");
  EXPECT_FALSE(decode_command(encode_command(long_key)).has_value());
  expect_error_no_change(long_key);
  Command long_value = put("k", std::string(kValueBytesMax + 1, 'v'));
  EXPECT_FALSE(decode_command(encode_command(long_value)).has_value());
  expect_error_no_change(long_value);
  // Exactly at the limits is fine.
  EXPECT_EQ(run(put(std::string(kKeyBytesMax, 'k'), std::string(kValueBytesMax, 'v'))), ok());
}

TEST(KvCodecTest, CommandRoundTrip) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  for (const Command& command :
       {get("k"), put("k", "v"), put("", ""), del("k"), append("k", "tail"), cas("k", "old", "new"),
        cas("k", "", ""), incr("k", 0), incr("k", -1), incr("k", kMin), incr("k", kMax)}) {
    std::optional<Command> decoded = decode_command(encode_command(command));
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(*decoded, command);
  }
}

TEST(KvCodecTest, FieldsTheOpDoesNotUseAreNotEncoded) {
  Command noisy = get("k");
  noisy.value = "ignored";
  noisy.delta = 5;
  EXPECT_EQ(encode_command(noisy), encode_command(get("k")));
}

TEST(KvCodecTest, ResultRoundTripAndRejects) {
  for (const Result& result : {ok(), ok("v"), not_found(), Result{ResultCode::kError, "boom"}}) {
    std::optional<Result> decoded = decode_result(encode_result(result));
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(*decoded, result);
  }
  EXPECT_FALSE(decode_result(Bytes{}).has_value());
  EXPECT_FALSE(decode_result(Bytes{3, 0}).has_value());     // code past kError
  EXPECT_FALSE(decode_result(Bytes{0}).has_value());        // no value
  EXPECT_FALSE(decode_result(Bytes{0, 0, 0}).has_value());  // trailing
}

TEST_F(KvTest, SnapshotRoundTrip) {
  run(put("b", "2"));
  run(put("a", std::string("\0x", 2)));
  run(put("", "empty key"));
  run(incr("n", 10));
  Bytes snapshot = kv.snapshot();
  KvMachine copy;
  copy.restore(snapshot);
  EXPECT_EQ(copy.data(), kv.data());
  EXPECT_EQ(copy.snapshot(), snapshot);
  // The copy behaves like the original from here on.
  EXPECT_EQ(decode_result(copy.apply(encode_command(incr("n", 1)))), ok("11"));
}

TEST_F(KvTest, RestoreReplacesRatherThanMerges) {
  KvMachine other;
  other.apply(encode_command(put("only", "this")));
  run(put("k", "v"));
  kv.restore(other.snapshot());
  EXPECT_EQ(kv.data(), other.data());
  kv.restore(KvMachine{}.snapshot());
  EXPECT_TRUE(kv.data().empty());
}

TEST_F(KvTest, RestoreGarbageThrowsAndKeepsState) {
  run(put("k", "v"));
  run(put("l", "w"));
  auto before = kv.data();
  Bytes good;
  {
    KvMachine source;
    source.apply(encode_command(put("a", "1")));
    source.apply(encode_command(put("b", "2")));
    good = source.snapshot();
  }
  std::vector<Bytes> bad = {
      {},
      {2, 0},                             // unknown version
      {1},                                // no count
      {1, 1},                             // count says one entry, none there
      {1, 0x80},                          // unterminated count
      {1, 0xff, 0xff, 0xff, 0xff, 0x0f},  // forged huge count
      {1, 2, 1, 'b', 0, 1, 'a', 0},       // keys out of order
      {1, 2, 1, 'a', 0, 1, 'a', 0},       // duplicate key
      {1, 0, 0},                          // trailing byte
  };
  for (size_t cut = 0; cut < good.size(); ++cut)
    bad.emplace_back(good.begin(), good.begin() + cut);
  Bytes trailing = good;
  trailing.push_back(0);
  bad.push_back(trailing);
  for (const Bytes& bytes : bad) {
    EXPECT_THROW(kv.restore(bytes), SnapshotError);
    EXPECT_EQ(kv.data(), before);
  }
  // The good one is accepted, so the failures above are about the damage, not the format.
  kv.restore(good);
  EXPECT_EQ(kv.data().size(), 2u);
}

// A snapshot of one entry with the given key and value sizes, written field by field so that it
// can break the limits the machine itself never would.
Bytes one_entry_snapshot(size_t key_bytes, size_t value_bytes) {
  Bytes out;
  Writer w(out);
  w.u8(1);
  w.varint(1);
  w.string(std::string(key_bytes, 'k'));
  w.string(std::string(value_bytes, 'v'));
  return out;
}

TEST_F(KvTest, RestoreRejectsOversizeKeyOrValue) {
  EXPECT_THROW(kv.restore(one_entry_snapshot(kKeyBytesMax + 1, 0)), SnapshotError);
  EXPECT_THROW(kv.restore(one_entry_snapshot(0, kValueBytesMax + 1)), SnapshotError);
  EXPECT_TRUE(kv.data().empty());
  kv.restore(one_entry_snapshot(kKeyBytesMax, kValueBytesMax));
  ASSERT_EQ(kv.data().size(), 1u);
  EXPECT_EQ(kv.data().begin()->first.size(), kKeyBytesMax);
  EXPECT_EQ(kv.data().begin()->second.size(), kValueBytesMax);
}

TEST(KvDeterminismTest, SameCommandsSameSnapshot) {
  KvMachine a;
  KvMachine b;
  for (int i = 0; i < 200; ++i) {
    std::string key = "k" + std::to_string((i * 7919) % 31);
    Bytes command;
    switch (i % 5) {
      case 0:
        command = encode_command(put(key, std::to_string(i)));
        break;
      case 1:
        command = encode_command(incr(key, i));
        break;
      case 2:
        command = encode_command(append(key, "x"));
        break;
      case 3:
        command = encode_command(cas(key, std::to_string(i - 3), "c"));
        break;
      case 4:
        command = encode_command(del(key));
        break;
    }
    EXPECT_EQ(a.apply(command), b.apply(command));
  }
  EXPECT_EQ(a.snapshot(), b.snapshot());
  EXPECT_FALSE(a.data().empty());
}

}  // namespace
}  // namespace lockstep::kv
