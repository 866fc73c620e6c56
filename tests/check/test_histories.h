// Builders for hand-written histories and a generator of random linearizable ones, shared by the
// check tests. Times are nanoseconds; hand-written histories use small round numbers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "check/history.h"

namespace lockstep::check {

// Lets GoogleTest print operations as their JSON line rather than as bytes.
inline void PrintTo(const Operation& op, std::ostream* out) {
  *out << format_operation(op);
}

}  // namespace lockstep::check

namespace lockstep::check::testing {

inline Operation make_op(uint64_t client, OpKind kind, std::string key, uint64_t call_ns,
                         uint64_t return_ns) {
  Operation op;
  op.client = client;
  op.kind = kind;
  op.key = std::move(key);
  op.call_ns = call_ns;
  op.return_ns = return_ns;
  op.outcome = Outcome::kOk;
  return op;
}

inline Operation get(uint64_t client, std::string key, std::string output, uint64_t call_ns,
                     uint64_t return_ns) {
  Operation op = make_op(client, OpKind::kGet, std::move(key), call_ns, return_ns);
  op.output = std::move(output);
  return op;
}

inline Operation put(uint64_t client, std::string key, std::string value, uint64_t call_ns,
                     uint64_t return_ns) {
  Operation op = make_op(client, OpKind::kPut, std::move(key), call_ns, return_ns);
  op.value = std::move(value);
  return op;
}

inline Operation append(uint64_t client, std::string key, std::string value, uint64_t call_ns,
                        uint64_t return_ns) {
  Operation op = make_op(client, OpKind::kAppend, std::move(key), call_ns, return_ns);
  op.value = std::move(value);
  return op;
}

inline Operation cas(uint64_t client, std::string key, std::string expected, std::string value,
                     bool succeeded, uint64_t call_ns, uint64_t return_ns) {
  Operation op = make_op(client, OpKind::kCas, std::move(key), call_ns, return_ns);
  op.expected = std::move(expected);
  op.value = std::move(value);
  op.output = succeeded ? "true" : "false";
  return op;
}

inline Operation del(uint64_t client, std::string key, uint64_t call_ns, uint64_t return_ns) {
  return make_op(client, OpKind::kDel, std::move(key), call_ns, return_ns);
}

// ok:null, return:null: the client never learned what happened.
inline Operation unknown(Operation op) {
  op.outcome = Outcome::kUnknown;
  op.return_ns.reset();
  op.output.reset();
  return op;
}

// ok:false: certainly had no effect.
inline Operation failed(Operation op) {
  op.outcome = Outcome::kFailed;
  op.output.reset();
  return op;
}

struct GeneratorOptions {
  uint64_t seed = 1;
  size_t operations = 200;
  size_t clients = 8;
  size_t keys = 3;
  double unknown_fraction = 0.05;  // half of these take effect, half never do
  double failed_fraction = 0.03;
  uint64_t latency_ns_max = 1000;  // from call to linearization point, and from it to return
  uint64_t think_ns_max = 300;     // between a client's return and its next call
  // The operation mix, in percent (cumulative thresholds); del takes what is left.
  uint64_t get_percent = 40;
  uint64_t put_percent = 25;
  uint64_t append_percent = 15;
  uint64_t cas_percent = 15;
};

// A history that is linearizable by construction: every operation gets a linearization point
// inside its interval, the points are replayed in order on a map of registers, and each output
// is what the register gave at that point. Values are unique per write.
inline std::vector<Operation> generate_linearizable(const GeneratorOptions& options) {
  std::mt19937_64 random(options.seed);
  auto uniform = [&](uint64_t max) {
    return std::uniform_int_distribution<uint64_t>(0, max)(random);
  };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(random) < p; };

  struct Planned {
    Operation op;
    uint64_t point_ns;
    bool takes_effect;
  };
  std::vector<Planned> planned;
  std::vector<uint64_t> cursor(options.clients);
  for (auto& c : cursor)
    c = uniform(options.latency_ns_max);
  for (size_t i = 0; i < options.operations; ++i) {
    const size_t client = i % options.clients;
    Operation op;
    op.client = client;
    op.key = "k" + std::to_string(uniform(options.keys - 1));
    const uint64_t pick = uniform(99);
    const uint64_t get_below = options.get_percent;
    const uint64_t put_below = get_below + options.put_percent;
    const uint64_t append_below = put_below + options.append_percent;
    const uint64_t cas_below = append_below + options.cas_percent;
    op.kind = pick < get_below      ? OpKind::kGet
              : pick < put_below    ? OpKind::kPut
              : pick < append_below ? OpKind::kAppend
              : pick < cas_below    ? OpKind::kCas
                                    : OpKind::kDel;
    if (op.kind != OpKind::kGet && op.kind != OpKind::kDel) {
      op.value = "c" + std::to_string(client) + "-" + std::to_string(i);
    }
    op.call_ns = cursor[client] + uniform(options.think_ns_max);
    const uint64_t point_ns = op.call_ns + uniform(options.latency_ns_max);
    op.return_ns = point_ns + uniform(options.latency_ns_max);
    cursor[client] = *op.return_ns + 1;
    bool takes_effect = true;
    if (chance(options.failed_fraction)) {
      op.outcome = Outcome::kFailed;
      takes_effect = false;
    } else if (chance(options.unknown_fraction)) {
      op.outcome = Outcome::kUnknown;
      op.return_ns.reset();
      takes_effect = chance(0.5);
    } else {
      op.outcome = Outcome::kOk;
    }
    planned.push_back({std::move(op), point_ns, takes_effect});
  }
  std::stable_sort(planned.begin(), planned.end(),
                   [](const Planned& a, const Planned& b) { return a.point_ns < b.point_ns; });

  std::map<std::string, std::optional<std::string>> registers;
  std::vector<Operation> history;
  for (Planned& p : planned) {
    Operation& op = p.op;
    std::optional<std::string>& reg = registers[op.key];
    if (op.kind == OpKind::kCas) {
      // Half the time expect the current value, so that both cas outcomes occur.
      op.expected = (reg && chance(0.5)) ? *reg : "c-none";
    }
    if (p.takes_effect) {
      std::optional<std::string> output;
      switch (op.kind) {
        case OpKind::kGet:
          output = reg.value_or("");
          break;
        case OpKind::kPut:
          reg = op.value;
          break;
        case OpKind::kAppend:
          reg = reg.value_or("") + op.value;
          break;
        case OpKind::kDel:
          reg.reset();
          break;
        case OpKind::kCas: {
          const bool matches = reg && *reg == op.expected;
          if (matches) reg = op.value;
          output = matches ? "true" : "false";
          break;
        }
      }
      if (op.outcome == Outcome::kOk) op.output = output;
    }
    history.push_back(std::move(op));
  }
  // Shuffle: the format allows any order, and the checker must not depend on it.
  std::shuffle(history.begin(), history.end(), random);
  return history;
}

}  // namespace lockstep::check::testing
