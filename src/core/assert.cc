#include "core/assert.h"

#include <cstdio>
#include <cstdlib>

namespace lockstep {

void assertion_failed(const char* condition, const char* file, int line, const char* message) {
  std::fprintf(stderr, "lockstep: invariant violated at %s:%d: %s (%s)\n", file, line, message,
               condition);
  std::fflush(stderr);
  std::abort();
}

}  // namespace lockstep
