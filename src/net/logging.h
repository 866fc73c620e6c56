// Process-wide logging setup for the runtime: spdlog to stderr (stdout stays free for command
// output such as `lockstep kv get`), with the process's role in every line.
#pragma once

#include <string>

namespace lockstep::net {

// Installs a stderr logger as spdlog's default. `level` is an spdlog level name ("info",
// "debug", ...); the LOCKSTEP_LOG environment variable overrides it.
void init_logging(const std::string& process_name, const std::string& level = "info");

}  // namespace lockstep::net
