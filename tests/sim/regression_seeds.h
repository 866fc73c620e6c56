// Reading tests/sim/regression_seeds.txt, shared by the regression test and the seed-range test
// (which leaves seeds with an open bug to the regression test).
//
// File format, one seed per line: the seed, then optional flags as `lockstep sim` takes them
// (--mode failstop|byzantine, --t T, --clients C, --ops N, --faults-min F, --clocks
// bounded|beyond, --durable yes|no, --reconfiguration yes|no, --byzantine-replicas B,
// --byzantine-clients C, --restarts yes|no), then `#` and what the seed found.
// Blank lines and lines starting with `#` are comments.
//
// A seed whose bug is found but not fixed yet carries `--open`: it is run and its state printed,
// but not asserted, so that a known bug is on record without turning every build red. Whoever
// fixes the bug removes `--open`, and from then on the seed must pass.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sim/runner.h"
#include "sim/simulator.h"

namespace lockstep::sim {

inline std::string regression_seeds_path() {
  return std::string(LOCKSTEP_SOURCE_DIR) + "/tests/sim/regression_seeds.txt";
}

struct RegressionSeed {
  SimOptions options;
  std::string finding;
  size_t line = 0;
  bool open = false;
};

inline std::vector<RegressionSeed> read_regression_seeds(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.is_open()) << "cannot open " << path;
  std::vector<RegressionSeed> seeds;
  std::string text;
  for (size_t line = 1; std::getline(in, text); ++line) {
    const size_t hash = text.find('#');
    const std::string body = text.substr(0, hash);
    std::istringstream words(body);
    std::string word;
    if (!(words >> word)) continue;  // blank or comment-only
    RegressionSeed seed;
    seed.line = line;
    auto number = parse_seed_range(word);
    if (!number || number->count() != 1) {
      ADD_FAILURE() << path << ":" << line << ": not a seed: " << word;
      continue;
    }
    seed.options.seed = number->first;
    if (hash == std::string::npos || text.find_first_not_of(" #", hash) == std::string::npos) {
      ADD_FAILURE() << path << ":" << line << ": say what the seed found after a '#'";
    } else {
      seed.finding = text.substr(text.find_first_not_of(" #", hash));
    }
    for (std::string flag; words >> flag;) {
      if (flag == "--open") {
        seed.open = true;
        continue;
      }
      std::string value;
      if (!(words >> value)) {
        ADD_FAILURE() << path << ":" << line << ": " << flag << " needs a value";
        break;
      }
      if (flag == "--mode" && (value == "failstop" || value == "byzantine")) {
        seed.options.mode = value == "byzantine" ? Mode::kByzantine : Mode::kFailstop;
      } else if (flag == "--byzantine-replicas") {
        seed.options.byzantine_replicas = static_cast<uint32_t>(std::stoul(value));
      } else if (flag == "--byzantine-clients") {
        seed.options.byzantine_clients = static_cast<uint32_t>(std::stoul(value));
      } else if (flag == "--t") {
        seed.options.t = static_cast<uint32_t>(std::stoul(value));
      } else if (flag == "--clients") {
        seed.options.clients = static_cast<uint32_t>(std::stoul(value));
      } else if (flag == "--ops") {
        seed.options.ops = static_cast<uint32_t>(std::stoul(value));
      } else if (flag == "--faults-min") {
        seed.options.faults_min = static_cast<uint32_t>(std::stoul(value));
      } else if (flag == "--restarts" && (value == "yes" || value == "no")) {
        seed.options.restarts = value == "yes";
      } else if (flag == "--durable" && (value == "yes" || value == "no")) {
        seed.options.durable = value == "yes";
      } else if (flag == "--reconfiguration" && (value == "yes" || value == "no")) {
        seed.options.reconfiguration = value == "yes";
      } else if (flag == "--clocks" && (value == "bounded" || value == "beyond")) {
        seed.options.clock_beyond_bounds = value == "beyond";
      } else {
        ADD_FAILURE() << path << ":" << line << ": unknown flag " << flag << " " << value;
      }
    }
    seeds.push_back(std::move(seed));
  }
  return seeds;
}

}  // namespace lockstep::sim
