#include "check/linearizability.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/assert.h"

namespace lockstep::check {

namespace {

constexpr uint64_t kInfinite = std::numeric_limits<uint64_t>::max();

// Rounds of "shrink, then look for a removed operation that repairs the window" before giving
// up on a self-contained window. Each round pins at least one operation, so this only bounds
// pathological histories.
constexpr int kWindowRoundsMax = 8;

// One operation as the search sees it: failed operations are already gone, unknown ones have an
// infinite return and no output constraint. Strings point into the checked history.
struct SearchOp {
  uint64_t call_ns = 0;
  uint64_t return_ns = kInfinite;
  OpKind kind = OpKind::kGet;
  const std::string* value = nullptr;
  const std::string* expected = nullptr;
  const std::string* output = nullptr;  // nullptr: any output is acceptable
};

// Converts history[index] for the search, cutting the history at `cut_ns` (a prefix in event
// order, see Window): an operation running at the cut becomes unknown. Returns false when the
// operation has no place in the search at all: it failed, was called after the cut, or is a get
// whose result is unknown (it neither changes the state nor constrains it).
bool to_search_op(const Operation& op, uint64_t cut_ns, SearchOp& out) {
  if (op.outcome == Outcome::kFailed) return false;
  if (op.call_ns > cut_ns) return false;
  out.call_ns = op.call_ns;
  out.kind = op.kind;
  out.value = &op.value;
  out.expected = &op.expected;
  const bool completed =
      op.outcome == Outcome::kOk && op.return_ns.has_value() && *op.return_ns <= cut_ns;
  if (completed) {
    out.return_ns = *op.return_ns;
    out.output = op.output ? &*op.output : nullptr;
  } else {
    out.return_ns = kInfinite;
    out.output = nullptr;
  }
  if (op.kind == OpKind::kGet && out.output == nullptr) return false;
  return true;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The sequential specification: one register per key. States are interned so that the memo and
// the backtracking stack hold 32-bit ids instead of (possibly long, for append) strings. The
// encoding is a presence byte then the value, because an absent key and a key holding "" differ
// for cas (kv_machine.h: absent never equals).
class RegisterModel {
 public:
  static constexpr uint32_t kAbsent = 0;
  static constexpr int64_t kRejected = -1;

  RegisterModel() { intern(std::string(1, '\0')); }

  // The state after `op` (the index-th search op) runs in `state`, or kRejected when the op's
  // recorded output is impossible there. Transitions are cached: backtracking tries the same
  // (state, op) pair many times, and for append computing the new state costs a string copy.
  // The value held in `state` ("" when absent).
  std::string_view value(uint32_t state) const {
    return std::string_view(*states_[state]).substr(1);
  }

  int64_t step(uint32_t state, const SearchOp& op, uint32_t index) {
    const uint64_t cache_key = (uint64_t{state} << 32) | index;
    auto cached = transitions_.find(cache_key);
    if (cached != transitions_.end()) return cached->second;
    if (transitions_.size() >= kTransitionsMax) transitions_.clear();  // a cache, bounded
    const int64_t next = compute(state, op);
    transitions_.emplace(cache_key, next);
    return next;
  }

 private:
  static constexpr size_t kTransitionsMax = size_t{1} << 22;

  int64_t compute(uint32_t state, const SearchOp& op) {
    const std::string& encoded = *states_[state];
    const bool present = encoded[0] != '\0';
    const std::string_view current = std::string_view(encoded).substr(1);
    switch (op.kind) {
      case OpKind::kGet:
        if (op.output != nullptr && *op.output != current) return kRejected;
        return state;
      case OpKind::kPut:
        return intern(std::string(1, '\1') + *op.value);
      case OpKind::kAppend: {
        std::string next(1, '\1');
        next.reserve(1 + current.size() + op.value->size());
        next.append(current);
        next.append(*op.value);
        return intern(std::move(next));
      }
      case OpKind::kDel:
        return kAbsent;
      case OpKind::kCas: {
        const bool matches = present && current == *op.expected;
        if (op.output != nullptr && (*op.output == "true") != matches) return kRejected;
        return matches ? intern(std::string(1, '\1') + *op.value) : state;
      }
    }
    return kRejected;
  }

  uint32_t intern(std::string encoded) {
    auto [it, inserted] =
        ids_.try_emplace(std::move(encoded), static_cast<uint32_t>(states_.size()));
    if (inserted) {
      states_.push_back(&it->first);
      state_bytes_ += it->first.size() + sizeof(*states_.data()) + 64;  // 64: node overhead
    }
    return it->second;
  }

 public:
  // Bytes held by the interned states. They cannot be forgotten like the memo (the stack and
  // the memo refer to them by id), so the search gives up instead when they grow too large.
  uint64_t state_bytes() const { return state_bytes_; }

 private:
  uint64_t state_bytes_ = 0;

  // Node-based map: the keys' addresses are stable, so states_ can point at them.
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<const std::string*> states_;
  std::unordered_map<uint64_t, int64_t> transitions_;
};

// The set of (linearized operations, model state) configurations already explored (Lowe 2017:
// without it the search revisits the same configuration once per order in which its
// operations could have been linearized). Open addressing over flat arrays, because the bitsets
// are the bulk of the memory and one allocation per entry would dominate the run time. The set's
// hash is maintained incrementally by the caller (Zobrist hashing: XOR of one random word per
// operation), so an insert costs one bitset compare on a hit, not a rehash of the bitset.
class ConfigurationMemo {
 public:
  ConfigurationMemo(size_t words, uint64_t bytes_max) : words_(words), bytes_max_(bytes_max) {
    table_.assign(1024, 0);
  }

  // True when the configuration was new (and is now recorded).
  bool insert(uint64_t set_hash, uint32_t state, const std::vector<uint64_t>& bits) {
    const uint64_t hash = set_hash ^ splitmix64(state);
    size_t mask = table_.size() - 1;
    for (size_t slot = hash & mask;; slot = (slot + 1) & mask) {
      const uint32_t entry = table_[slot];
      if (entry == 0) break;
      const size_t e = entry - 1;
      if (hashes_[e] == hash && states_[e] == state &&
          std::equal(bits.begin(), bits.end(), pool_.begin() + e * words_)) {
        return false;
      }
    }
    if (bytes() > bytes_max_) clear();  // forgetting is safe: the memo only prunes
    if ((hashes_.size() + 1) * 2 > table_.size()) grow();
    mask = table_.size() - 1;
    size_t slot = hash & mask;
    while (table_[slot] != 0)
      slot = (slot + 1) & mask;
    hashes_.push_back(hash);
    states_.push_back(state);
    pool_.insert(pool_.end(), bits.begin(), bits.end());
    table_[slot] = static_cast<uint32_t>(hashes_.size());
    return true;
  }

  bool cleared() const { return cleared_; }

 private:
  uint64_t bytes() const {
    return pool_.size() * sizeof(uint64_t) + table_.size() * sizeof(uint32_t) +
           hashes_.size() * (sizeof(uint64_t) + sizeof(uint32_t));
  }

  void clear() {
    hashes_.clear();
    states_.clear();
    pool_.clear();
    table_.assign(1024, 0);
    cleared_ = true;
  }

  void grow() {
    std::vector<uint32_t> table(table_.size() * 2, 0);
    const size_t mask = table.size() - 1;
    for (size_t e = 0; e < hashes_.size(); ++e) {
      size_t slot = hashes_[e] & mask;
      while (table[slot] != 0)
        slot = (slot + 1) & mask;
      table[slot] = static_cast<uint32_t>(e + 1);
    }
    table_ = std::move(table);
  }

  size_t words_;
  uint64_t bytes_max_;
  std::vector<uint32_t> table_;  // entry index + 1; 0 is an empty slot
  std::vector<uint64_t> hashes_;
  std::vector<uint32_t> states_;
  std::vector<uint64_t> pool_;  // words_ per entry
  bool cleared_ = false;
};

struct SearchOutcome {
  Verdict verdict = Verdict::kLinearizable;
  uint64_t steps = 0;
};

// Wing & Gong's search with Lowe's just-in-time linearization (Lowe 2017), over
// the operations of one key.
SearchOutcome search(const std::vector<SearchOp>& ops, uint64_t steps_max,
                     const CheckOptions& limits) {
  SearchOutcome outcome;
  const size_t n = ops.size();
  size_t completed_total = 0;
  for (const SearchOp& op : ops)
    completed_total += op.return_ns != kInfinite ? 1 : 0;
  if (completed_total == 0) return outcome;  // unknown operations alone can all never happen
  LOCKSTEP_ASSERT(n < (size_t{1} << 30), "too many operations on one key for 32-bit node ids");

  // Events: node 2i is op i's call, 2i+1 its return (absent for unknown operations). Sorted by
  // time, calls before returns at equal times (see the header), then by operation.
  struct Event {
    uint64_t time_ns;
    int32_t node;
  };
  std::vector<Event> events;
  events.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    events.push_back({ops[i].call_ns, static_cast<int32_t>(2 * i)});
    if (ops[i].return_ns != kInfinite) {
      events.push_back({ops[i].return_ns, static_cast<int32_t>(2 * i + 1)});
    }
  }
  std::sort(events.begin(), events.end(), [](const Event& a, const Event& b) {
    if (a.time_ns != b.time_ns) return a.time_ns < b.time_ns;
    const bool a_return = (a.node & 1) != 0;
    const bool b_return = (b.node & 1) != 0;
    if (a_return != b_return) return !a_return;
    return a.node < b.node;
  });

  // Doubly linked list over the nodes; `head` is a sentinel before the first event. Lifted
  // nodes keep their own links, so they can be put back in LIFO order (dancing links).
  const int32_t head = static_cast<int32_t>(2 * n);
  std::vector<int32_t> next(2 * n + 1, -1);
  std::vector<int32_t> prev(2 * n + 1, -1);
  int32_t last = head;
  for (const Event& event : events) {
    next[last] = event.node;
    prev[event.node] = last;
    last = event.node;
  }

  auto has_return = [&](size_t op) { return ops[op].return_ns != kInfinite; };
  auto unlink = [&](int32_t node) {
    next[prev[node]] = next[node];
    if (next[node] != -1) prev[next[node]] = prev[node];
  };
  auto relink = [&](int32_t node) {
    next[prev[node]] = node;
    if (next[node] != -1) prev[next[node]] = node;
  };
  auto lift = [&](int32_t call) {
    unlink(call);
    if (has_return(static_cast<size_t>(call / 2))) unlink(call + 1);
  };
  auto unlift = [&](int32_t call) {
    if (has_return(static_cast<size_t>(call / 2))) relink(call + 1);
    relink(call);
  };

  RegisterModel model;
  const size_t words = (n + 63) / 64;
  ConfigurationMemo memo(words, limits.memo_bytes_max);
  std::vector<uint64_t> linearized(words, 0);
  uint64_t set_hash = 0;
  std::vector<uint64_t> zobrist(n);
  for (size_t i = 0; i < n; ++i)
    zobrist[i] = splitmix64(0x6c696e6561726973ull + i);

  // Candidates (the calls before the first return in the list) are tried in two passes:
  //  0. reads (get, cas that returned "false") the current state explains. Linearizing such a
  //     read first is always safe: it does not change the state, and any linearization from
  //     here can be reordered to put it first (every pending operation returns after the read's
  //     call, since the read is a candidate). So it is a forced move, never a choice to undo: if
  //     the search fails after it, this configuration fails. This partial-order reduction is
  //     what keeps reads from multiplying the search space.
  //  1. everything else, in call order: the choices Wing & Gong's search branches on. Call
  //     order approximates the order in which operations took effect, which is why Lowe's list
  //     finds a linearization quickly when there is one. (Trying unknown-outcome operations
  //     last looks attractive, since they may be left out, but measured far worse: a write
  //     that did take effect gets tried only after every order of the later writes.)
  // Passes only reorder what the search tries at a configuration; each candidate is still tried
  // once, so the search stays exhaustive.
  enum Pass : uint8_t { kReads = 0, kOthers = 1 };
  std::vector<uint8_t> pass_of(n);
  for (size_t i = 0; i < n; ++i) {
    const SearchOp& op = ops[i];
    const bool read_only =
        op.output != nullptr &&
        (op.kind == OpKind::kGet || (op.kind == OpKind::kCas && *op.output == "false"));
    pass_of[i] = read_only ? kReads : kOthers;
  }

  // Look-ahead pruning, specific to this model. Between now and the point where a pending read
  // is linearized, the value can only be extended by appends, except where an operation that
  // replaces it (put, cas that may succeed, del) runs, and only operations called before the
  // read's return can run there. So the read's output must start with the current value or
  // with the value of one of those replacing operations (anything, after a del). Checked after
  // every write, this cuts a wrong guess among concurrent writes at once; without it the search
  // tries every order of the other appends under the wrong guess (k! values the memo cannot
  // merge). Walking the list from the head, the calls met before a read's return are exactly
  // the operations that may still precede it. The walk is bounded, which only weakens the
  // pruning, never its soundness.
  constexpr size_t kLookaheadNodesMax = 256;
  std::vector<uint8_t> replaces_value(n);
  std::vector<const std::string*> required_prefix(n, nullptr);
  for (size_t i = 0; i < n; ++i) {
    const SearchOp& op = ops[i];
    const bool cas_may_succeed =
        op.kind == OpKind::kCas && (op.output == nullptr || *op.output == "true");
    replaces_value[i] = op.kind == OpKind::kPut || op.kind == OpKind::kDel || cas_may_succeed;
    if (op.kind == OpKind::kGet) required_prefix[i] = op.output;
    if (op.kind == OpKind::kCas && op.output != nullptr && *op.output == "true") {
      required_prefix[i] = op.expected;
    }
  }
  std::vector<const std::string*> replacements;
  std::vector<const std::string*> appended;
  auto starts_with_any = [](std::string_view text, const std::vector<const std::string*>& of) {
    return std::any_of(of.begin(), of.end(),
                       [&](const std::string* prefix) { return text.starts_with(*prefix); });
  };
  auto pending_reads_satisfiable = [&](uint32_t current_state) {
    const std::string_view current = model.value(current_state);
    replacements.clear();
    appended.clear();
    bool deleted = false;
    size_t walked = 0;
    for (int32_t node = next[head]; node != -1 && walked < kLookaheadNodesMax;
         node = next[node], ++walked) {
      const size_t op = static_cast<size_t>(node / 2);
      if ((node & 1) == 0) {
        if (ops[op].kind == OpKind::kAppend) appended.push_back(ops[op].value);
        if (!replaces_value[op]) continue;
        if (ops[op].kind == OpKind::kDel) {
          deleted = true;
        } else {
          replacements.push_back(ops[op].value);
        }
        continue;
      }
      if (required_prefix[op] == nullptr) continue;
      const std::string_view needed = *required_prefix[op];
      // After a del the value is "" followed by appends: "" or starting with an append's value.
      const bool explained = needed.starts_with(current) || starts_with_any(needed, replacements) ||
                             (deleted && (needed.empty() || starts_with_any(needed, appended)));
      if (!explained) return false;
    }
    return true;
  };

  struct Frame {
    int32_t call;
    uint32_t state_before;
    uint8_t pass;
  };
  std::vector<Frame> stack;
  uint32_t state = RegisterModel::kAbsent;
  size_t completed_linearized = 0;
  int32_t entry = next[head];
  uint8_t pass = kReads;

  // Undoes choices until one whose pass had alternatives left; false when none is left.
  auto backtrack = [&]() {
    while (!stack.empty()) {
      const Frame frame = stack.back();
      stack.pop_back();
      const size_t undone = static_cast<size_t>(frame.call / 2);
      state = frame.state_before;
      linearized[undone / 64] &= ~(uint64_t{1} << (undone % 64));
      set_hash ^= zobrist[undone];
      if (has_return(undone)) --completed_linearized;
      unlift(frame.call);
      if (frame.pass != kReads) {
        entry = next[frame.call];
        pass = frame.pass;
        return true;
      }
    }
    return false;
  };

  while (true) {
    // Every completed operation is in the linearization: the unknown ones left over are those
    // that never took effect, which the format allows.
    if (completed_linearized == completed_total) return outcome;
    if (outcome.steps >= steps_max || model.state_bytes() > limits.state_bytes_max) {
      outcome.verdict = Verdict::kUndecided;
      return outcome;
    }
    ++outcome.steps;
    // A completed operation that is not linearized keeps its return in the list, and the scan
    // never passes a return, so the scan cannot run off the end here.
    LOCKSTEP_ASSERT(entry != -1, "search ran past the last return event");
    const size_t op = static_cast<size_t>(entry / 2);
    bool dead_end = false;
    if ((entry & 1) == 0) {
      if (pass_of[op] == pass) {
        // A call: try to linearize the operation now.
        const int64_t after = model.step(state, ops[op], static_cast<uint32_t>(op));
        if (after != RegisterModel::kRejected) {
          linearized[op / 64] |= uint64_t{1} << (op % 64);
          set_hash ^= zobrist[op];
          if (memo.insert(set_hash, static_cast<uint32_t>(after), linearized)) {
            stack.push_back({entry, state, pass});
            state = static_cast<uint32_t>(after);
            if (has_return(op)) ++completed_linearized;
            lift(entry);
            entry = next[head];
            const bool was_read = pass == kReads;
            pass = kReads;
            if (was_read || pending_reads_satisfiable(state)) continue;
            // Recorded in the memo already, as failed; undo it like any dead end.
            if (!backtrack()) {
              outcome.verdict = Verdict::kNotLinearizable;
              return outcome;
            }
            continue;
          }
          linearized[op / 64] &= ~(uint64_t{1} << (op % 64));
          set_hash ^= zobrist[op];
          // Seen before, so it failed (a configuration on the current path has fewer
          // operations). After a forced read that failure is this configuration's too.
          dead_end = pass == kReads;
        }
      }
      if (!dead_end) {
        entry = next[entry];
        continue;
      }
    } else if (pass != kOthers) {
      // The end of this pass's candidates: the next pass starts over from the head.
      ++pass;
      entry = next[head];
      continue;
    }
    // The return of an operation not yet linearized, with every candidate tried: any order
    // from here would place that operation after its return. Undo the latest choice.
    if (!backtrack()) {
      outcome.verdict = Verdict::kNotLinearizable;
      return outcome;
    }
  }
}

// Builds the search input for history[i], i in `subset`, cut at `cut_ns`.
std::vector<SearchOp> search_ops(std::span<const Operation> history, std::span<const size_t> subset,
                                 uint64_t cut_ns) {
  std::vector<SearchOp> ops;
  ops.reserve(subset.size());
  for (size_t index : subset) {
    SearchOp op;
    if (to_search_op(history[index], cut_ns, op)) ops.push_back(op);
  }
  return ops;
}

bool is_read_only(const Operation& op) {
  if (op.kind == OpKind::kGet) return true;
  return op.kind == OpKind::kCas && op.outcome == Outcome::kOk && op.output == "false";
}

// Whether `reader` saw the value written by `writer` (see Window for why this matters). A
// heuristic for keeping the window readable, not for correctness: it may keep an extra write when
// one value contains another.
bool observes(const Operation& reader, const Operation& writer) {
  if (writer.kind == OpKind::kDel || is_read_only(writer)) return false;
  if (reader.outcome != Outcome::kOk || !reader.output) return false;
  const std::string* seen = nullptr;
  if (reader.kind == OpKind::kGet) seen = &*reader.output;
  if (reader.kind == OpKind::kCas && *reader.output == "true") seen = &reader.expected;
  if (seen == nullptr) return false;
  // Containment rather than equality for every write: appends after a put keep the put's value
  // as a prefix of what is read.
  return seen->find(writer.value) != std::string::npos;
}

class WindowFinder {
 public:
  WindowFinder(std::span<const Operation> history, const CheckOptions& options)
      : history_(history), options_(options), budget_(options.window_steps_max) {}

  Window find(const std::string& key, std::vector<size_t> key_ops) {
    Window window;
    window.key = key;
    std::sort(key_ops.begin(), key_ops.end(), [&](size_t a, size_t b) {
      return std::pair(history_[a].call_ns, a) < std::pair(history_[b].call_ns, b);
    });
    cut_ns_ = shortest_violating_prefix(key_ops);
    std::vector<size_t> prefix;
    for (size_t index : key_ops) {
      SearchOp unused;
      if (to_search_op(history_[index], cut_ns_, unused)) prefix.push_back(index);
    }

    std::vector<bool> pinned(prefix.size(), false);
    std::vector<bool> keep;
    window.self_contained = false;
    for (int round = 0; round < kWindowRoundsMax && !exhausted_; ++round) {
      keep.assign(prefix.size(), true);
      shrink(prefix, pinned, keep);
      const std::vector<size_t> repairs = repairing_operations(prefix, keep);
      if (exhausted_) break;
      if (repairs.empty()) {
        window.self_contained = true;
        break;
      }
      for (size_t i : repairs)
        pinned[i] = true;
    }
    // A pin was needed against an earlier, artificial window; the final one may not need it.
    for (size_t i = 0; i < prefix.size() && window.self_contained && !exhausted_; ++i) {
      if (!pinned[i] || !keep[i]) continue;
      keep[i] = false;
      if (run(prefix, keep) != Verdict::kNotLinearizable ||
          !repairing_operations(prefix, keep).empty()) {
        keep[i] = true;
      }
    }
    if (keep.empty()) keep.assign(prefix.size(), true);
    for (size_t i = 0; i < prefix.size(); ++i) {
      if (keep[i]) window.operations.push_back(prefix[i]);
    }
    window.minimal = !exhausted_;
    window.cut_ns = cut_ns_;
    return window;
  }

 private:
  // The earliest return time t such that the key's history cut at t (calls and returns up to t,
  // operations running at t unknown) is not linearizable. Linearizability is prefix-closed
  // (Herlihy & Wing 1990), so the predicate is monotone in t and a binary search finds it.
  uint64_t shortest_violating_prefix(const std::vector<size_t>& key_ops) {
    std::vector<uint64_t> cuts;
    for (size_t index : key_ops) {
      const Operation& op = history_[index];
      if (op.outcome == Outcome::kOk) cuts.push_back(*op.return_ns);
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    size_t low = 0;
    size_t high = cuts.size();  // cuts.size() stands for the whole history, known violating
    while (low < high && !exhausted_) {
      const size_t middle = low + (high - low) / 2;
      std::vector<SearchOp> ops = search_ops(history_, key_ops, cuts[middle]);
      if (run_ops(ops) == Verdict::kNotLinearizable) {
        high = middle;
      } else {
        low = middle + 1;  // linearizable or undecided: the cut must be later
      }
    }
    return high < cuts.size() ? cuts[high] : kInfinite;
  }

  // Greedy one-at-a-time removal, latest call first, keeping pinned operations and writes that
  // a kept operation observed. Invariant: `keep` is not linearizable.
  // Reads go first: a window that still holds every write cannot be an artefact of removal
  // (adding a read back never makes a history linearizable), so the reads it keeps are the ones
  // the anomaly needs. Writes go second, latest call first, except pinned ones and those a kept
  // operation observed. Passes repeat until one removes nothing, because a removal can make an
  // earlier kept operation removable; the result is 1-minimal over what may be removed.
  // Invariant: `keep` is not linearizable.
  void shrink(const std::vector<size_t>& prefix, const std::vector<bool>& pinned,
              std::vector<bool>& keep) {
    bool removed = true;
    while (removed && !exhausted_) {
      removed = false;
      for (const bool reads : {true, false}) {
        for (size_t i = prefix.size(); i-- > 0 && !exhausted_;) {
          if (pinned[i] || !keep[i]) continue;
          if (read_only_at_cut(history_[prefix[i]]) != reads) continue;
          if (!reads && observed_by_kept(prefix, keep, i)) continue;
          keep[i] = false;
          if (run(prefix, keep) == Verdict::kNotLinearizable) {
            removed = true;
          } else {
            keep[i] = true;
          }
        }
      }
    }
  }

  // The removed operations that, added back alone, make the window linearizable (or whose
  // check ran out of budget): each could have explained the anomaly the window shows.
  std::vector<size_t> repairing_operations(const std::vector<size_t>& prefix,
                                           std::vector<bool>& keep) {
    std::vector<size_t> repairs;
    for (size_t i = 0; i < prefix.size() && !exhausted_; ++i) {
      if (keep[i]) continue;
      keep[i] = true;
      if (run(prefix, keep) != Verdict::kNotLinearizable) repairs.push_back(i);
      keep[i] = false;
    }
    return repairs;
  }

  // A cas that returned "false" only after the cut was, as the shrinker sees it, still running
  // and may yet write.
  bool read_only_at_cut(const Operation& op) const {
    return is_read_only(op) && op.return_ns && *op.return_ns <= cut_ns_;
  }

  bool observed_by_kept(const std::vector<size_t>& prefix, const std::vector<bool>& keep,
                        size_t writer) const {
    for (size_t j = 0; j < prefix.size(); ++j) {
      if (j == writer || !keep[j]) continue;
      // Judge the reader as it stands in the cut history: one still running at the cut observed
      // nothing yet.
      const Operation& reader = history_[prefix[j]];
      if (reader.return_ns && *reader.return_ns > cut_ns_) continue;
      if (observes(reader, history_[prefix[writer]])) return true;
    }
    return false;
  }

  Verdict run(const std::vector<size_t>& prefix, const std::vector<bool>& keep) {
    std::vector<size_t> subset;
    for (size_t i = 0; i < prefix.size(); ++i) {
      if (keep[i]) subset.push_back(prefix[i]);
    }
    std::vector<SearchOp> ops = search_ops(history_, subset, cut_ns_);
    return run_ops(ops);
  }

  Verdict run_ops(const std::vector<SearchOp>& ops) {
    const uint64_t steps_max = std::min(options_.steps_per_key_max, budget_);
    const SearchOutcome outcome = search(ops, steps_max, options_);
    budget_ -= std::min(budget_, outcome.steps);
    if (outcome.verdict == Verdict::kUndecided) exhausted_ = true;
    return outcome.verdict;
  }

  std::span<const Operation> history_;
  const CheckOptions& options_;
  uint64_t budget_;
  uint64_t cut_ns_ = kInfinite;
  bool exhausted_ = false;
};

std::string display_string(std::string_view text) {
  constexpr size_t kShownBytesMax = 48;
  std::string shown(text.substr(0, kShownBytesMax));
  std::string result =
      nlohmann::json(shown).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > kShownBytesMax) {
    result += "...(" + std::to_string(text.size()) + " bytes)";
  }
  return result;
}

std::string describe(const Operation& op) {
  std::string text(op_kind_name(op.kind));
  switch (op.kind) {
    case OpKind::kGet:
    case OpKind::kDel:
      text += "()";
      break;
    case OpKind::kPut:
    case OpKind::kAppend:
      text += "(" + display_string(op.value) + ")";
      break;
    case OpKind::kCas:
      text += "(" + display_string(op.expected) + " -> " + display_string(op.value) + ")";
      break;
  }
  switch (op.outcome) {
    case Outcome::kOk:
      if (op.output)
        text += " = " + (op.kind == OpKind::kCas ? *op.output : display_string(*op.output));
      break;
    case Outcome::kFailed:
      text += " failed";
      break;
    case Outcome::kUnknown:
      text += " outcome unknown";
      break;
  }
  return text;
}

std::string format_us(uint64_t ns) {
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%.3f", static_cast<double>(ns) / 1000.0);
  return buffer;
}

}  // namespace

std::string_view verdict_name(Verdict verdict) {
  switch (verdict) {
    case Verdict::kLinearizable:
      return "linearizable";
    case Verdict::kNotLinearizable:
      return "not linearizable";
    case Verdict::kUndecided:
      return "undecided";
  }
  return "?";
}

Verdict check_single_key(std::span<const Operation> history, std::span<const size_t> subset,
                         const CheckOptions& options, uint64_t& steps) {
  const std::vector<SearchOp> ops = search_ops(history, subset, kInfinite);
  const SearchOutcome outcome = search(ops, options.steps_per_key_max, options);
  steps += outcome.steps;
  return outcome.verdict;
}

CheckResult check_linearizability(std::span<const Operation> history, const CheckOptions& options) {
  CheckResult result;
  // std::map: keys are reported, and the first violating key chosen, in a deterministic order.
  std::map<std::string_view, std::vector<size_t>> by_key;
  for (size_t i = 0; i < history.size(); ++i)
    by_key[history[i].key].push_back(i);

  for (const auto& [key, indices] : by_key) {
    KeyReport report;
    report.key = std::string(key);
    report.operations = indices.size();
    for (size_t index : indices) {
      report.failed += history[index].outcome == Outcome::kFailed ? 1 : 0;
      report.unknown += history[index].outcome == Outcome::kUnknown ? 1 : 0;
    }
    report.verdict = check_single_key(history, indices, options, report.steps);
    result.steps += report.steps;
    if (report.verdict == Verdict::kNotLinearizable) result.violating_keys.push_back(report.key);
    if (report.verdict == Verdict::kUndecided) result.undecided_keys.push_back(report.key);
    result.keys.push_back(std::move(report));
  }

  // One certainly violating key decides the history whatever the undecided keys would say.
  if (!result.violating_keys.empty()) {
    result.verdict = Verdict::kNotLinearizable;
  } else if (!result.undecided_keys.empty()) {
    result.verdict = Verdict::kUndecided;
  } else {
    result.verdict = Verdict::kLinearizable;
  }

  if (options.find_window && !result.violating_keys.empty()) {
    const std::string& key = result.violating_keys.front();
    WindowFinder finder(history, options);
    result.window = finder.find(key, by_key.at(key));
  }
  return result;
}

std::string format_window(const Window& window, std::span<const Operation> history,
                          std::span<const size_t> line_numbers) {
  std::string text;
  if (window.operations.empty()) return text;
  uint64_t origin_ns = kInfinite;
  for (size_t index : window.operations)
    origin_ns = std::min(origin_ns, history[index].call_ns);
  text += "key " + display_string(window.key) + ": " +
          (window.operations.size() == 1 ? std::string("this operation cannot be linearized")
                                         : "these " + std::to_string(window.operations.size()) +
                                               " operations cannot be linearized");
  if (!window.minimal) text += " (search budget ran out while shrinking: maybe not minimal)";
  if (!window.self_contained) {
    text += " (an operation left out may explain part of it)";
  }
  text += "\ntimes in microseconds after the first call (" + std::to_string(origin_ns) + " ns)";
  if (window.cut_ns != kInfinite && window.cut_ns >= origin_ns) {
    text += "; the violation is complete at " + format_us(window.cut_ns - origin_ns);
  }
  text += "\n";
  for (size_t index : window.operations) {
    const Operation& op = history[index];
    char prefix[128];
    const std::string call = format_us(op.call_ns - origin_ns);
    const std::string returned = op.return_ns ? format_us(*op.return_ns - origin_ns) : "never";
    std::snprintf(prefix, sizeof prefix, "  [%12s, %12s]  client %-6llu ", call.c_str(),
                  returned.c_str(), static_cast<unsigned long long>(op.client));
    text += prefix;
    text += describe(op);
    if (index < line_numbers.size()) text += "  (line " + std::to_string(line_numbers[index]) + ")";
    text += "\n";
  }
  return text;
}

}  // namespace lockstep::check
