// The linearizability checker: hand-made histories with a known verdict, the minimal window,
// randomized histories that are linearizable by construction (and mutations that are not), and
// a size sanity run.
#include "check/linearizability.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <set>

#include "test_histories.h"

namespace lockstep::check {
namespace {

using testing::append;
using testing::cas;
using testing::del;
using testing::failed;
using testing::get;
using testing::put;
using testing::unknown;

Verdict verdict_of(const std::vector<Operation>& history, CheckOptions options = {}) {
  return check_linearizability(history, options).verdict;
}

// The history restricted to `indices`, with the window's cut applied: an operation still running
// at the cut becomes unknown, as the shrinker saw it.
std::vector<Operation> sub_history(const std::vector<Operation>& history,
                                   const std::vector<size_t>& indices, uint64_t cut_ns) {
  std::vector<Operation> out;
  for (size_t index : indices) {
    Operation op = history[index];
    if (op.outcome == Outcome::kOk && *op.return_ns > cut_ns) op = unknown(op);
    out.push_back(op);
  }
  return out;
}

bool read_only(const Operation& op) {
  return op.kind == OpKind::kGet ||
         (op.kind == OpKind::kCas && op.outcome == Outcome::kOk && op.output == "false");
}

// What every window must satisfy: on one key, not linearizable (as recorded, and as cut), and
// no read in it can be dropped (reads never help a history become linearizable, so a read that
// could go would make the window non-minimal).
void expect_valid_window(const std::vector<Operation>& history, const Window& window) {
  ASSERT_FALSE(window.operations.empty());
  std::vector<Operation> recorded;
  for (size_t index : window.operations) {
    EXPECT_EQ(history[index].key, window.key);
    recorded.push_back(history[index]);
  }
  EXPECT_EQ(verdict_of(recorded), Verdict::kNotLinearizable);
  std::vector<Operation> cut = sub_history(history, window.operations, window.cut_ns);
  EXPECT_EQ(verdict_of(cut), Verdict::kNotLinearizable);
  if (!window.minimal) return;
  for (size_t i = 0; i < cut.size(); ++i) {
    if (!read_only(cut[i])) continue;
    std::vector<Operation> smaller = cut;
    smaller.erase(smaller.begin() + static_cast<std::ptrdiff_t>(i));
    EXPECT_EQ(verdict_of(smaller), Verdict::kLinearizable)
        << "read " << i << " of the window could be dropped";
  }
}

TEST(Linearizability, EmptyAndTrivialHistories) {
  EXPECT_EQ(verdict_of({}), Verdict::kLinearizable);
  EXPECT_EQ(verdict_of({get(1, "k", "", 0, 10)}), Verdict::kLinearizable);
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), get(1, "k", "a", 20, 30)}),
            Verdict::kLinearizable);
}

TEST(Linearizability, ConcurrentOverlappingOperations) {
  // put b overlaps put a and the read, so b-then-a is a valid order and the read sees a.
  EXPECT_EQ(
      verdict_of({put(1, "k", "a", 0, 10), put(2, "k", "b", 5, 15), get(3, "k", "a", 12, 20)}),
      Verdict::kLinearizable);
  // Two readers overlapping a write may see it in either order, as long as no one sees it
  // "un-happen": old then new is fine even if the other reader saw new first, while the reads
  // overlap the write.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), put(2, "k", "b", 20, 60), get(3, "k", "b", 25, 30),
                        get(4, "k", "a", 22, 40)}),
            Verdict::kLinearizable);
  // Appends that overlap can take effect in either order.
  EXPECT_EQ(verdict_of({append(1, "k", "x", 0, 10), append(2, "k", "y", 0, 10),
                        get(3, "k", "yx", 20, 30)}),
            Verdict::kLinearizable);
}

TEST(Linearizability, EqualTimestampsCountAsConcurrent) {
  // The put returns at 10 and the get is called at 10: the clock cannot order them, so the get
  // may precede the put.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), get(2, "k", "", 10, 20)}), Verdict::kLinearizable);
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), get(2, "k", "", 11, 20)}),
            Verdict::kNotLinearizable);
}

TEST(Linearizability, UnknownOperationsMayTakeEffectLaterOrNever) {
  // Took effect (observed by a later read).
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), unknown(append(2, "k", "x", 20, 0)),
                        get(3, "k", "ax", 30, 40)}),
            Verdict::kLinearizable);
  // Took effect long after the client gave up: first read misses it, second sees it.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), unknown(put(2, "k", "b", 20, 0)),
                        get(3, "k", "a", 30, 40), get(3, "k", "b", 1000, 1010)}),
            Verdict::kLinearizable);
  // Never took effect.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), unknown(put(2, "k", "b", 20, 0)),
                        get(3, "k", "a", 30, 40), get(3, "k", "a", 1000, 1010)}),
            Verdict::kLinearizable);
  // But it cannot take effect before its call.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), get(3, "k", "b", 30, 40),
                        unknown(put(2, "k", "b", 50, 0))}),
            Verdict::kNotLinearizable);
  // Nor be seen, then un-seen.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), unknown(put(2, "k", "b", 20, 0)),
                        get(3, "k", "b", 30, 40), get(3, "k", "a", 50, 60)}),
            Verdict::kNotLinearizable);
  // An unknown cas may have succeeded.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), unknown(cas(2, "k", "a", "b", true, 20, 0)),
                        get(3, "k", "b", 30, 40)}),
            Verdict::kLinearizable);
}

TEST(Linearizability, FailedOperationsHaveNoEffect) {
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), failed(put(2, "k", "b", 20, 30)),
                        get(3, "k", "a", 40, 50)}),
            Verdict::kLinearizable);
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), failed(put(2, "k", "b", 20, 30)),
                        get(3, "k", "b", 40, 50)}),
            Verdict::kNotLinearizable);
}

TEST(Linearizability, CompareAndSet) {
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), cas(2, "k", "a", "b", true, 20, 30),
                        cas(3, "k", "a", "c", false, 40, 50), get(4, "k", "b", 60, 70)}),
            Verdict::kLinearizable);
  // Two concurrent cas from the same value: exactly one may win.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), cas(2, "k", "a", "b", true, 20, 30),
                        cas(3, "k", "a", "c", false, 20, 30)}),
            Verdict::kLinearizable);
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), cas(2, "k", "a", "b", true, 20, 30),
                        cas(3, "k", "a", "c", true, 20, 30)}),
            Verdict::kNotLinearizable);
  // An absent key never equals the expected value, not even "".
  EXPECT_EQ(verdict_of({cas(1, "k", "", "x", false, 0, 10)}), Verdict::kLinearizable);
  EXPECT_EQ(verdict_of({cas(1, "k", "", "x", true, 0, 10)}), Verdict::kNotLinearizable);
  // A cas that failed on the current value is a violation.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), cas(2, "k", "a", "b", false, 20, 30)}),
            Verdict::kNotLinearizable);
}

TEST(Linearizability, Delete) {
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), del(2, "k", 20, 30), get(3, "k", "", 40, 50),
                        cas(4, "k", "a", "b", false, 60, 70), append(5, "k", "x", 80, 90),
                        get(6, "k", "x", 100, 110)}),
            Verdict::kLinearizable);
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), del(2, "k", 20, 30), get(3, "k", "a", 40, 50)}),
            Verdict::kNotLinearizable);
}

TEST(Linearizability, StaleRead) {
  EXPECT_EQ(
      verdict_of({put(1, "k", "1", 0, 10), put(2, "k", "2", 20, 30), get(3, "k", "1", 40, 50)}),
      Verdict::kNotLinearizable);
}

TEST(Linearizability, LostWrite) {
  // Both appends completed before the read, which saw only one of them.
  EXPECT_EQ(verdict_of(
                {append(1, "k", "x", 0, 10), append(2, "k", "y", 0, 10), get(3, "k", "x", 20, 30)}),
            Verdict::kNotLinearizable);
}

TEST(Linearizability, ReadOfNeverWrittenValue) {
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), get(2, "k", "zzz", 0, 30)}),
            Verdict::kNotLinearizable);
  // The value exists, but on another key: keys are independent registers.
  EXPECT_EQ(verdict_of({put(1, "j", "zzz", 0, 10), get(2, "k", "zzz", 20, 30)}),
            Verdict::kNotLinearizable);
}

TEST(Linearizability, CasViolatingOrder) {
  // The second cas claims the value was still "a" after the first one had replaced it.
  EXPECT_EQ(verdict_of({put(1, "k", "a", 0, 10), cas(2, "k", "a", "b", true, 20, 30),
                        cas(3, "k", "a", "c", true, 40, 50)}),
            Verdict::kNotLinearizable);
}

TEST(Linearizability, ReportsViolatingAndUndecidedKeys) {
  std::vector<Operation> history = {put(1, "good", "a", 0, 10),  get(2, "good", "a", 20, 30),
                                    put(1, "bad", "1", 0, 10),   put(2, "bad", "2", 20, 30),
                                    get(3, "bad", "1", 40, 50),  put(4, "slow", "s", 0, 100),
                                    get(5, "slow", "s", 50, 150)};
  CheckResult result = check_linearizability(history);
  EXPECT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_EQ(result.violating_keys, std::vector<std::string>{"bad"});
  EXPECT_TRUE(result.undecided_keys.empty());
  ASSERT_EQ(result.keys.size(), 3u);
  EXPECT_EQ(result.keys[0].key, "bad");
  EXPECT_EQ(result.keys[1].key, "good");
  EXPECT_EQ(result.keys[1].verdict, Verdict::kLinearizable);
  EXPECT_EQ(result.keys[1].operations, 2u);

  // With one step per key nothing can be decided: every key with work to do is undecided, and
  // without a certain violation the history is undecided.
  CheckOptions tiny;
  tiny.steps_per_key_max = 1;
  history.erase(history.begin() + 2, history.begin() + 5);
  CheckResult undecided = check_linearizability(history, tiny);
  EXPECT_EQ(undecided.verdict, Verdict::kUndecided);
  EXPECT_EQ(undecided.undecided_keys, (std::vector<std::string>{"good", "slow"}));
}

TEST(Linearizability, KeyStatsCountOutcomes) {
  const std::vector<Operation> history = {put(1, "k", "a", 0, 10), failed(put(2, "k", "b", 0, 10)),
                                          unknown(put(3, "k", "c", 0, 0)),
                                          get(4, "k", "a", 20, 30)};
  CheckResult result = check_linearizability(history);
  ASSERT_EQ(result.keys.size(), 1u);
  EXPECT_EQ(result.keys[0].operations, 4u);
  EXPECT_EQ(result.keys[0].failed, 1u);
  EXPECT_EQ(result.keys[0].unknown, 1u);
  EXPECT_GT(result.keys[0].steps, 0u);
}

// A stale read hidden in a longer history: the window is exactly the three operations that
// make it, with the noise before and after (and the other key) shrunk away.
TEST(LinearizabilityWindow, StaleReadWindowIsTheThreeOperations) {
  std::vector<Operation> history;
  for (uint64_t i = 0; i < 20; ++i) {
    history.push_back(put(1, "k", "n" + std::to_string(i), i * 100, i * 100 + 10));
    history.push_back(get(2, "k", "n" + std::to_string(i), i * 100 + 20, i * 100 + 30));
    history.push_back(put(3, "other", "o" + std::to_string(i), i * 100, i * 100 + 50));
  }
  const size_t first = history.size();
  history.push_back(put(1, "k", "v1", 5000, 5010));
  history.push_back(put(2, "k", "v2", 5020, 5030));
  history.push_back(get(3, "k", "v1", 5040, 5050));
  history.push_back(put(1, "k", "v3", 6000, 6010));
  history.push_back(get(2, "k", "v3", 6020, 6030));

  CheckResult result = check_linearizability(history);
  ASSERT_EQ(result.verdict, Verdict::kNotLinearizable);
  ASSERT_TRUE(result.window.has_value());
  const Window& window = *result.window;
  EXPECT_EQ(window.key, "k");
  EXPECT_EQ(window.operations, (std::vector<size_t>{first, first + 1, first + 2}));
  EXPECT_TRUE(window.minimal);
  EXPECT_TRUE(window.self_contained);
  EXPECT_EQ(window.cut_ns, 5050u);
  expect_valid_window(history, window);

  const std::string text = format_window(window, history);
  EXPECT_NE(text.find("these 3 operations cannot be linearized"), std::string::npos) << text;
  EXPECT_NE(text.find("put(\"v1\")"), std::string::npos) << text;
  EXPECT_NE(text.find("get() = \"v1\""), std::string::npos) << text;
  EXPECT_NE(text.find("client 3"), std::string::npos) << text;
  // Times are relative to the window's first call (5000 ns): the read runs 40..50 ns later.
  EXPECT_NE(text.find("0.040,        0.050"), std::string::npos) << text;
}

TEST(LinearizabilityWindow, NeverWrittenReadIsAloneInItsWindow) {
  std::vector<Operation> history = {put(1, "k", "a", 0, 10), get(2, "k", "a", 20, 30),
                                    put(1, "k", "b", 40, 50), get(2, "k", "zzz", 60, 70),
                                    get(3, "k", "b", 80, 90)};
  CheckResult result = check_linearizability(history);
  ASSERT_TRUE(result.window.has_value());
  EXPECT_EQ(result.window->operations, std::vector<size_t>{3});
  expect_valid_window(history, *result.window);
}

TEST(LinearizabilityWindow, KeepsTheWritesThatExplainTheAnomaly) {
  // Lost write: both appends stay, because the read's value is only wrong given both.
  std::vector<Operation> lost = {put(4, "k", "p", 0, 5), append(1, "k", "x", 10, 20),
                                 append(2, "k", "y", 10, 20), get(3, "k", "px", 30, 40)};
  CheckResult result = check_linearizability(lost);
  ASSERT_TRUE(result.window.has_value());
  EXPECT_EQ(result.window->operations, (std::vector<size_t>{0, 1, 2, 3}));
  expect_valid_window(lost, *result.window);

  // The cas order violation needs all three.
  std::vector<Operation> cas_order = {get(9, "k", "", 0, 5), put(1, "k", "a", 10, 20),
                                      cas(2, "k", "a", "b", true, 30, 40),
                                      cas(3, "k", "a", "c", true, 50, 60)};
  result = check_linearizability(cas_order);
  ASSERT_TRUE(result.window.has_value());
  EXPECT_EQ(result.window->operations, (std::vector<size_t>{1, 2, 3}));
  expect_valid_window(cas_order, *result.window);
}

TEST(LinearizabilityWindow, CanBeSkipped) {
  CheckOptions options;
  options.find_window = false;
  const std::vector<Operation> history = {put(1, "k", "1", 0, 10), put(2, "k", "2", 20, 30),
                                          get(3, "k", "1", 40, 50)};
  CheckResult result = check_linearizability(history, options);
  EXPECT_EQ(result.verdict, Verdict::kNotLinearizable);
  EXPECT_FALSE(result.window.has_value());
}

// Histories linearizable by construction must be judged so, whatever the interleaving; the
// memo must not change verdicts (it only prunes), so the same runs with a memo that is
// forgotten at every insert must agree.
TEST(LinearizabilityRandom, GeneratedHistoriesAreLinearizable) {
  for (uint64_t seed = 1; seed <= 150; ++seed) {
    testing::GeneratorOptions options;
    options.seed = seed;
    options.operations = 50 + seed % 200;
    options.clients = 2 + seed % 12;
    options.keys = 1 + seed % 4;
    options.unknown_fraction = (seed % 3) * 0.1;
    std::vector<Operation> history = testing::generate_linearizable(options);
    CheckResult result = check_linearizability(history);
    ASSERT_EQ(result.verdict, Verdict::kLinearizable) << "seed " << seed;
    if (seed % 5 == 0 && options.operations <= 120) {
      CheckOptions forgetful;
      forgetful.memo_bytes_max = 0;
      EXPECT_EQ(verdict_of(history, forgetful), Verdict::kLinearizable) << "seed " << seed;
    }
  }
}

TEST(LinearizabilityRandom, MutatedReadsAreCaught) {
  size_t never_written_caught = 0;
  size_t other_value_mutations = 0;
  size_t other_value_caught = 0;
  for (uint64_t seed = 1; seed <= 100; ++seed) {
    testing::GeneratorOptions options;
    options.seed = seed;
    options.operations = 120;
    options.clients = 6;
    options.keys = 2;
    std::vector<Operation> history = testing::generate_linearizable(options);
    std::vector<size_t> reads;
    for (size_t i = 0; i < history.size(); ++i) {
      if (history[i].kind == OpKind::kGet && history[i].outcome == Outcome::kOk) reads.push_back(i);
    }
    if (reads.empty()) continue;
    std::mt19937_64 random(seed);
    const size_t target = reads[random() % reads.size()];

    // A value nobody wrote: always a violation, and the window is that read alone.
    std::vector<Operation> never_written = history;
    never_written[target].output = "never-written";
    CheckResult result = check_linearizability(never_written);
    ASSERT_EQ(result.verdict, Verdict::kNotLinearizable) << "seed " << seed;
    ASSERT_TRUE(result.window.has_value());
    EXPECT_EQ(result.window->operations, std::vector<size_t>{target}) << "seed " << seed;
    ++never_written_caught;

    // A value some put on the same key wrote, but not the one read: usually a violation (not
    // always: the put may be concurrent with the read).
    std::vector<std::string> candidates;
    for (const Operation& op : history) {
      if (op.key == history[target].key && op.kind == OpKind::kPut &&
          op.value != history[target].output) {
        candidates.push_back(op.value);
      }
    }
    if (candidates.empty()) continue;
    std::vector<Operation> other_value = history;
    other_value[target].output = candidates[random() % candidates.size()];
    ++other_value_mutations;
    result = check_linearizability(other_value);
    ASSERT_NE(result.verdict, Verdict::kUndecided) << "seed " << seed;
    if (result.verdict == Verdict::kNotLinearizable) {
      ++other_value_caught;
      ASSERT_TRUE(result.window.has_value());
      expect_valid_window(other_value, *result.window);
      // The read whose output was changed is part of the explanation.
      const auto& ops = result.window->operations;
      EXPECT_NE(std::find(ops.begin(), ops.end(), target), ops.end()) << "seed " << seed;
    }
  }
  EXPECT_EQ(never_written_caught, 100u);
  std::printf("other-value mutations caught: %zu of %zu\n", other_value_caught,
              other_value_mutations);
  EXPECT_GT(other_value_caught * 2, other_value_mutations);
}

// Size sanity: 10k operations from 64 clients over 50 keys, with some unknown outcomes, must be
// checked (and found linearizable) well within the default budget. No timing assertion: the
// time is printed for the record.
TEST(LinearizabilityPerformance, TenThousandOperations) {
  testing::GeneratorOptions options;
  options.seed = 42;
  options.operations = 10'000;
  options.clients = 64;
  options.keys = 50;
  options.unknown_fraction = 0.02;
  std::vector<Operation> history = testing::generate_linearizable(options);
  const auto started = std::chrono::steady_clock::now();
  CheckResult result = check_linearizability(history);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_EQ(result.verdict, Verdict::kLinearizable);
  EXPECT_EQ(result.keys.size(), 50u);
  std::printf("10k ops / 64 clients / 50 keys: %.3f s, %llu steps\n", seconds,
              static_cast<unsigned long long>(result.steps));
}

}  // namespace
}  // namespace lockstep::check
