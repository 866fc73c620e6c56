// Subcommands of the `lockstep` tool. Each lives in its own cmd_*.cc file and registers itself
// with a static LOCKSTEP_COMMAND(...) so main.cc never changes when a command is added.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace lockstep::tool {

// `setup` declares the subcommand's options on `app` and returns what runs when it is chosen;
// the returned function's result is the process exit code.
struct Command {
  std::string name;
  std::string description;
  std::function<std::function<int()>(CLI::App& app)> setup;
};

std::vector<Command>& command_registry();

struct CommandRegistrar {
  explicit CommandRegistrar(Command command) { command_registry().push_back(std::move(command)); }
};

}  // namespace lockstep::tool

#define LOCKSTEP_CONCAT_INNER(a, b) a##b
#define LOCKSTEP_CONCAT(a, b) LOCKSTEP_CONCAT_INNER(a, b)
#define LOCKSTEP_COMMAND(name, description, setup)                 \
  static const ::lockstep::tool::CommandRegistrar LOCKSTEP_CONCAT( \
      lockstep_command_, __LINE__)(::lockstep::tool::Command{name, description, setup})
