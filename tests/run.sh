#!/usr/bin/env bash
# The project's test command: builds the tests with -Werror and runs them
# twice, optimised and under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
run() {
  local dir=$1; shift
  cmake -S . -B "$dir" -DCONTRASTIVE_WERROR=ON "$@"
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs"
}
run build-release -DCMAKE_BUILD_TYPE=Release
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONTRASTIVE_SANITIZE=ON
