#include "net/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

namespace lockstep::net {

void init_logging(const std::string& process_name, const std::string& level) {
  auto logger = spdlog::stderr_logger_st(process_name);
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e [%n] %^%l%$: %v");
  const char* from_environment = std::getenv("LOCKSTEP_LOG");
  spdlog::set_level(spdlog::level::from_str(from_environment ? from_environment : level));
}

}  // namespace lockstep::net
