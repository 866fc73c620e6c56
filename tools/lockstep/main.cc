// The `lockstep` command-line tool: every subcommand registers itself (see command.h).
#include <algorithm>
#include <cstdio>

#include "command.h"

namespace lockstep::tool {

std::vector<Command>& command_registry() {
  static std::vector<Command> commands;
  return commands;
}

}  // namespace lockstep::tool

int main(int argc, char** argv) {
  using namespace lockstep::tool;
  CLI::App app{"lockstep: state machine replication (failstop and byzantine)"};
  app.require_subcommand(1);
  auto& commands = command_registry();
  std::sort(commands.begin(), commands.end(),
            [](const Command& a, const Command& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, std::function<int()>>> runners;
  for (auto& command : commands) {
    CLI::App* sub = app.add_subcommand(command.name, command.description);
    runners.emplace_back(sub, command.setup(*sub));
  }
  CLI11_PARSE(app, argc, argv);
  for (auto& [sub, run] : runners) {
    if (sub->parsed()) return run();
  }
  return 2;
}
