// Differential test: the optimised checker (Lowe's list, memo, forced reads, look-ahead pruning,
// window shrinking) against a reference written here as plainly as possible, on thousands of
// small random histories with a high rate of concurrency, unknown outcomes and corruptions.
// The optimisations are exactly where a subtle unsoundness would hide, and small histories are
// where a brute-force search is still cheap.
#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <random>
#include <set>

#include "check/linearizability.h"
#include "test_histories.h"

namespace lockstep::check {
namespace {

// Wing & Gong in its textbook form: any pending operation that no other pending completed
// operation precedes in real time may go next; recursion with a memo of (done set, state).
class ReferenceChecker {
 public:
  explicit ReferenceChecker(std::vector<Operation> ops) {
    for (Operation& op : ops) {
      if (op.outcome == Outcome::kFailed) continue;
      if (op.outcome != Outcome::kOk && op.kind == OpKind::kGet) continue;
      ops_.push_back(std::move(op));
    }
  }

  bool linearizable() { return search(0, std::nullopt); }

 private:
  using State = std::optional<std::string>;

  bool completed(size_t i) const { return ops_[i].outcome == Outcome::kOk; }

  std::optional<State> apply(const State& state, const Operation& op) const {
    const bool known = op.outcome == Outcome::kOk;
    switch (op.kind) {
      case OpKind::kGet:
        if (*op.output != state.value_or("")) return std::nullopt;
        return state;
      case OpKind::kPut:
        return State(op.value);
      case OpKind::kAppend:
        return State(state.value_or("") + op.value);
      case OpKind::kDel:
        return State(std::nullopt);
      case OpKind::kCas: {
        const bool matches = state.has_value() && *state == op.expected;
        if (known && (*op.output == "true") != matches) return std::nullopt;
        return matches ? State(op.value) : state;
      }
    }
    return std::nullopt;
  }

  bool search(uint64_t done, const State& state) {
    bool all_completed = true;
    uint64_t deadline = UINT64_MAX;
    for (size_t i = 0; i < ops_.size(); ++i) {
      if (done >> i & 1) continue;
      if (completed(i)) {
        all_completed = false;
        deadline = std::min(deadline, *ops_[i].return_ns);
      }
    }
    if (all_completed) return true;
    if (!seen_.insert({done, state}).second) return false;
    for (size_t i = 0; i < ops_.size(); ++i) {
      if ((done >> i & 1) || ops_[i].call_ns > deadline) continue;
      std::optional<State> after = apply(state, ops_[i]);
      if (after && search(done | uint64_t{1} << i, *after)) return true;
    }
    return false;
  }

  std::vector<Operation> ops_;
  std::set<std::pair<uint64_t, State>> seen_;
};

// Corrupts one operation of a linearizable history in one of several ways, all of which keep
// the history well-formed.
void mutate(std::vector<Operation>& history, std::mt19937_64& random) {
  std::vector<std::string> values = {"", "zz"};
  for (const Operation& op : history) {
    if (!op.value.empty()) values.push_back(op.value);
  }
  Operation& op = history[random() % history.size()];
  switch (random() % 4) {
    case 0:  // a read returns another value (or a concatenation of two)
      if (op.kind == OpKind::kGet && op.outcome == Outcome::kOk) {
        op.output = values[random() % values.size()];
        if (random() % 3 == 0) *op.output += values[random() % values.size()];
      }
      break;
    case 1:  // a cas reports the other outcome
      if (op.kind == OpKind::kCas && op.outcome == Outcome::kOk) {
        op.output = *op.output == "true" ? "false" : "true";
      }
      break;
    case 2: {  // an operation moves in time
      const uint64_t length = op.return_ns ? *op.return_ns - op.call_ns : 0;
      op.call_ns = random() % 4000;
      if (op.return_ns) op.return_ns = op.call_ns + length;
      break;
    }
    case 3:  // a completed write is reported as failed, or an unknown one as completed
      if (op.outcome == Outcome::kOk && op.kind != OpKind::kGet) {
        op.outcome = Outcome::kFailed;
        op.output.reset();
      } else if (op.outcome == Outcome::kUnknown && op.kind == OpKind::kPut) {
        op.outcome = Outcome::kOk;
        op.return_ns = op.call_ns + 500;
      }
      break;
  }
}

TEST(ReferenceChecker, AgreesOnSmallRandomHistories) {
  size_t linearizable = 0;
  size_t violations = 0;
  for (uint64_t seed = 1; seed <= 10000; ++seed) {
    std::mt19937_64 random(seed);
    testing::GeneratorOptions options;
    options.seed = seed;
    options.operations = 6 + random() % 14;
    options.clients = 2 + random() % 6;
    options.keys = 1;
    options.unknown_fraction = 0.25;
    options.failed_fraction = 0.1;
    options.think_ns_max = random() % 2 == 0 ? 0 : 300;
    if (seed % 3 == 0) {  // append-heavy, where the look-ahead pruning works hardest
      options.get_percent = 40;
      options.put_percent = 10;
      options.append_percent = 40;
      options.cas_percent = 5;
    }
    std::vector<Operation> history = testing::generate_linearizable(options);
    const int mutations = static_cast<int>(random() % 4);
    for (int m = 0; m < mutations; ++m)
      mutate(history, random);

    const bool expected = ReferenceChecker(history).linearizable();
    const CheckResult result = check_linearizability(history);
    ASSERT_NE(result.verdict, Verdict::kUndecided) << "seed " << seed;
    ASSERT_EQ(result.verdict == Verdict::kLinearizable, expected) << "seed " << seed;
    if (expected) {
      ++linearizable;
      continue;
    }
    ++violations;
    // The window is itself not linearizable, as the reference sees it too.
    ASSERT_TRUE(result.window.has_value());
    std::vector<Operation> window;
    for (size_t index : result.window->operations)
      window.push_back(history[index]);
    EXPECT_FALSE(ReferenceChecker(window).linearizable()) << "seed " << seed;
  }
  // Both verdicts must be well represented, or the comparison proves little.
  EXPECT_GT(linearizable, 2000u);
  EXPECT_GT(violations, 1500u);
}

}  // namespace
}  // namespace lockstep::check
