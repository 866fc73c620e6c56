// Linearizability checking of key-value histories (Herlihy & Wing 1990).
//
// The model is one register per key, as the KV store implements it (apps/kv/kv_machine.h):
//   get        returns the value, or "" when the key is absent
//   put v      sets the value to v
//   append v   sets the value to old + v (old = "" when absent)
//   del        makes the key absent
//   cas e v    when the key is present and equals e: sets v and returns "true"; else "false"
//              (an absent key never equals e, not even e = "")
//
// Method:
//  1. P-compositionality (Horn & Kroening 2015; also in Lowe 2017): every operation touches one
//     key and the model is a product of independent per-key registers, so the history is
//     linearizable exactly when each per-key sub-history is. Checking keys separately turns one
//     search over all concurrent operations into many small ones.
//  2. Per key, the Wing & Gong (1993) search in Lowe's just-in-time form (Lowe 2017, "Testing for
//     linearizability"): call and return events in one doubly linked list; an operation is
//     linearized (lifted out of the list) when its call is reached and the model accepts it; a
//     return reached before its operation was linearized means a dead end, so the search
//     backtracks. A memo of (set of linearized operations, model state) pairs already explored
//     prunes the search to each configuration once.
//  3. ok:false operations are dropped (they certainly had no effect). ok:null operations get an
//     infinite return time and no output constraint; the search succeeds once every completed
//     operation is linearized, so an unknown operation may take effect at any point after its
//     call, or never (which is the same as taking effect after everything else).
//  4. Two reductions on top, both sound (each only skips configurations that cannot lead to a
//     linearization; see search() for the arguments, and reference_test.cc for a brute-force
//     cross-check): a read the current state explains is linearized as a forced move, never a
//     choice to undo; and after each write, a look-ahead over the pending reads rejects a state
//     no future write can turn into what they returned (the register-with-append case, where
//     every order of concurrent appends is a different state the memo cannot merge).
//  5. Simultaneous events: at equal timestamps calls are ordered before returns, i.e. an
//     operation returning at t and one called at t count as concurrent. The clock has finite
//     resolution, so the order of equal readings is not known; treating them as concurrent can
//     only hide a violation, never report a false one.
//
// The verdict is exact unless a key's search exceeds its step budget, in which case that key
// (and so, unless another key is certainly violated, the history) is undecided.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "check/history.h"

namespace lockstep::check {

enum class Verdict : uint8_t { kLinearizable, kNotLinearizable, kUndecided };

std::string_view verdict_name(Verdict verdict);

struct CheckOptions {
  // Events visited by one key's search before that key is declared undecided. The search is
  // exponential in the worst case (the problem is NP-complete: Gibbons & Korach 1997); this is
  // the limit on that.
  uint64_t steps_per_key_max = 100'000'000;
  // Bytes of memo (linearized-set bitsets) kept per search. Past it the memo is cleared, which
  // costs repeated work but never correctness: the memo only prunes.
  uint64_t memo_bytes_max = 512ull * 1024 * 1024;
  // Bytes of distinct register values one search may hold (appends make values long and many).
  // Past it the key is undecided: unlike the memo, these cannot be forgotten.
  uint64_t state_bytes_max = 1024ull * 1024 * 1024;
  // Whether to compute a minimal violating window for the first violating key.
  bool find_window = true;
  // Total steps spent on shrinking the window (over all the searches it runs).
  uint64_t window_steps_max = 200'000'000;
};

struct KeyReport {
  std::string key;
  Verdict verdict = Verdict::kLinearizable;
  size_t operations = 0;  // operations on this key in the input
  size_t failed = 0;      // ok:false, dropped before the search
  size_t unknown = 0;     // ok:null
  uint64_t steps = 0;     // events visited by the search
};

// A small set of operations of one key that on its own cannot be linearized, which makes the
// whole history non-linearizable too.
//
// How it is found: first the shortest prefix of the key's history (in event order) that is not
// linearizable; linearizability is prefix-closed, so nothing after the cut can be to blame, and
// operations still running at the cut are treated as unknown. Then greedy shrinking: each
// operation is removed when the rest still cannot be linearized. Two rules keep the result an
// honest explanation rather than an artefact of the removal:
//  - reads are removed first: while every write is still there, no removed operation can be
//    what explains the anomaly (adding a read never makes a history linearizable);
//  - a write whose value an operation left in the window observed (a get output, or the
//    expected value of a successful cas, containing it) is kept, so the window never shows a
//    read whose source was cut away and looks like a read of a value nobody wrote;
//  - afterwards, every removed operation is added back alone; if one makes the window
//    linearizable (it could have explained the anomaly), it is pinned and the shrinking starts
//    over; at the end, pins the final window does not need are dropped again. `self_contained`
//    says that this converged.
struct Window {
  std::string key;
  std::vector<size_t> operations;  // indices into the checked history, by call time
  // The cut: the violation is already complete at this time. An operation of the window still
  // running then was treated as unknown while shrinking (its later return and output can only
  // make the window harder to linearize, so the window as recorded is not linearizable either).
  // UINT64_MAX when the search budget ran out before the cut was found.
  uint64_t cut_ns = 0;
  bool minimal = true;         // false when the shrinking ran out of steps
  bool self_contained = true;  // no single removed operation can repair the window
};

struct CheckResult {
  Verdict verdict = Verdict::kLinearizable;
  std::vector<KeyReport> keys;              // one per key, sorted by key
  std::vector<std::string> violating_keys;  // sorted
  std::vector<std::string> undecided_keys;  // sorted
  std::optional<Window> window;             // for the first violating key, when asked for
  uint64_t steps = 0;                       // over all keys, not counting the window
};

// Checks the whole history. Operations may be in any order.
CheckResult check_linearizability(std::span<const Operation> history,
                                  const CheckOptions& options = {});

// Checks the sub-history made of history[i] for i in `subset` as if it were a whole history on
// one key (every operation in it must have the same key), within the limits of `options`. Adds
// the steps taken to `steps`.
Verdict check_single_key(std::span<const Operation> history, std::span<const size_t> subset,
                         const CheckOptions& options, uint64_t& steps);

// The window as readable text: one line per operation with its client, what it did, what it
// returned and its interval in microseconds after the window's first call. `line_numbers`, when
// given, maps history indices to input lines (ReadResult::line_numbers).
std::string format_window(const Window& window, std::span<const Operation> history,
                          std::span<const size_t> line_numbers = {});

}  // namespace lockstep::check
