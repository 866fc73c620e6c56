// Invariant assertions that stay on in every build. An assertion that fires is a found bug: the
// process stops with the condition, the place and a message, so the simulator can replay the seed.
#pragma once

namespace lockstep {

[[noreturn]] void assertion_failed(const char* condition, const char* file, int line,
                                   const char* message);

}  // namespace lockstep

#define LOCKSTEP_ASSERT(condition, message)                                    \
  do {                                                                         \
    if (!(condition)) [[unlikely]] {                                           \
      ::lockstep::assertion_failed(#condition, __FILE__, __LINE__, (message)); \
    }                                                                          \
  } while (false)
