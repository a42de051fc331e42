#!/usr/bin/env bash
# The project's test command: builds the tests with -Werror and runs them,
# optimised, then a quick subset optimised with clang (ctest label "smoke")
# and the same subset cross-compiled for AArch64 and run under qemu-user,
# then the tests again under AddressSanitizer + UndefinedBehaviorSanitizer
# (without the libtorch adapter's test: tests/CMakeLists.txt leaves it out of
# sanitizer builds, since libtorch itself is not instrumented; and without the
# examples, which the optimised pass builds and runs: they call the library
# through the same entry points the tests cover, and compiling them with the
# sanitizers took 10 of the pass's 27 minutes on a 2-core machine).
# CXX selects the compiler of the full passes (CXX=clang++ bash tests/run.sh);
# the clang subset is left out when that compiler is already clang.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# CMake keeps the compiler of a build directory, so each compiler gets its own.
suffix=""
if [[ -n "${CXX:-}" ]]; then
  suffix="-$(basename "$CXX")"
fi
timed() {
  local what=$1 start=$SECONDS; shift
  "$@"
  echo "tests/run.sh: $what took $((SECONDS - start)) s"
}
run() {
  local dir=$1; shift
  cmake -S . -B "$dir" -DCONTRASTIVE_WERROR=ON "$@"
  cmake --build "$dir" -j"$jobs"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs"
}
smoke() {
  local dir=$1; shift
  cmake -S . -B "$dir" -DCONTRASTIVE_WERROR=ON "$@"
  cmake --build "$dir" -j"$jobs" --target contrastive_smoke
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" -L smoke
}
# The optimised and sanitizer passes link the engine's instances compiled
# once (contrastive::precompiled); the README's programs, the examples, the
# consumers and the clang subset still compile the header-only library.
timed "the optimised build and tests" run "build-release$suffix" -DCMAKE_BUILD_TYPE=Release -DCONTRASTIVE_PRECOMPILED=ON
if [[ "$(basename "${CXX:-c++}")" != clang++* ]]; then
  if ! command -v clang++ >/dev/null; then
    echo "tests/run.sh: clang++ not found (Debian: apt-get install clang libomp-dev)" >&2
    exit 1
  fi
  CXX=clang++ timed "the clang subset" smoke build-clang -DCMAKE_BUILD_TYPE=Release
fi
# The same subset for AArch64 (NEON): cross-compiled with Debian's
# aarch64-linux-gnu-g++ and run under qemu-user (CMake runs each test through
# the emulator), so that what differs off x86 (exp_normal's integer-packet
# shift, no MXCSR) compiles warning-free and passes.  The consumer tests run
# host programs and are left out.
aarch64() {
  local dir=build-aarch64 tool
  for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
    if ! command -v "$tool" >/dev/null; then
      echo "tests/run.sh: $tool not found (Debian: apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
      exit 1
    fi
  done
  cmake -S . -B "$dir" -DCONTRASTIVE_WERROR=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_SYSTEM_NAME=Linux \
    -DCMAKE_SYSTEM_PROCESSOR=aarch64 -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ \
    "-DCMAKE_CROSSCOMPILING_EMULATOR=qemu-aarch64;-L;/usr/aarch64-linux-gnu" \
    -DCONTRASTIVE_MPI=OFF -DCONTRASTIVE_TORCH=OFF -DCONTRASTIVE_BUILD_EXAMPLES=OFF
  cmake --build "$dir" -j"$jobs" --target contrastive_smoke
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" -L smoke -E '^consumer-'
}
timed "the AArch64 subset under qemu" aarch64
# ThreadSanitizer over the concurrency tests (clang with LLVM's OpenMP, whose
# Archer tool tells TSan about OpenMP's synchronisation), and libFuzzer with
# ASan + UBSan over every loss for a bounded time, starting from the
# committed corpus (copied: libFuzzer adds what it finds to its first corpus).
tsan() {
  local dir=build-tsan archer
  archer=$(clang++ -print-resource-dir)/../../libarcher.so
  [[ -f "$archer" ]] || archer=$(find /usr/lib/llvm-*/lib -name libarcher.so | head -n 1)
  CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONTRASTIVE_WERROR=ON -DCONTRASTIVE_TSAN=ON \
    -DCONTRASTIVE_BUILD_EXAMPLES=OFF
  cmake --build "$dir" -j"$jobs" --target test_concurrency
  OMP_TOOL_LIBRARIES="$archer" TSAN_OPTIONS="halt_on_error=1 ignore_noninstrumented_modules=1" \
    "$dir/tests/test_concurrency"
}
fuzz() {
  local dir=build-fuzz corpus
  CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONTRASTIVE_WERROR=ON -DCONTRASTIVE_FUZZ=ON \
    -DCONTRASTIVE_BUILD_EXAMPLES=OFF
  cmake --build "$dir" -j"$jobs" --target fuzz_losses
  corpus=$(mktemp -d)
  cp tests/fuzz/corpus/* "$corpus"
  "$dir/tests/fuzz_losses" -max_total_time="${CONTRASTIVE_FUZZ_SECONDS:-120}" -rss_limit_mb=4096 -timeout=30 \
    -print_final_stats=1 "$corpus"
  rm -rf "$corpus"
}
timed "the ThreadSanitizer concurrency tests" tsan
timed "fuzzing every loss" fuzz
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  timed "the sanitizer build and tests" run "build-sanitize$suffix" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONTRASTIVE_SANITIZE=ON \
  -DCONTRASTIVE_PRECOMPILED=ON -DCONTRASTIVE_BUILD_EXAMPLES=OFF
