#!/usr/bin/env bash
# The protocol cores and the replicated state must be deterministic: no clocks, threads, sockets,
# randomness or unordered iteration. This check keeps them that way (STYLE habit 14).
set -euo pipefail
cd "$(dirname "$0")/.."
pure_dirs="src/core src/protocol src/replica src/statemachine src/apps src/client/core"
banned='#include <(chrono|thread|mutex|random|ctime|sys/socket.h|unistd.h|netinet/[a-z.]+|arpa/[a-z.]+|unordered_map|unordered_set|future|atomic)>|std::rand|time\(nullptr\)|steady_clock|system_clock'
if grep -rnE "$banned" $pure_dirs --include='*.h' --include='*.cc'; then
  echo "check-purity: the lines above bring clocks, threads, I/O, randomness or unordered containers into a deterministic layer"
  exit 1
fi
echo "check-purity: ok"
