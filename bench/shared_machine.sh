#!/usr/bin/env bash
# The engine's threads on a machine shared with other busy processes (not
# part of CI).  Compiles bench/before_after.cpp against the work tree's
# headers, then runs a few cases on 2 threads with OpenMP's default wait
# policy and with OMP_WAIT_POLICY=passive, and on 1 thread, first with
# <hogs> busy-loop processes running, then on an idle machine; each
# configuration `rounds` times.  Prints one line per run: the load, the
# configuration, the case and the median call time in ms.
#
#   bash bench/shared_machine.sh [hogs=2] [rounds=3]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
hogs="${1:-2}"
rounds="${2:-3}"
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
eigen="$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)"
g++ -std=c++17 -O3 -DNDEBUG -march=native -fopenmp $eigen -I"$root/include" "$root/bench/before_after.cpp" -o "$tmp/ba"
cases="clip/value/float/256/128 ntxent/grad/float/256/128 ntxent/grad/float/1024/128 clip/grad/float/4096/128"
run() {  # run <load label>
  for r in $(seq "$rounds"); do
    for c in $cases; do
      echo "$1 2-threads-default $(OMP_NUM_THREADS=2 "$tmp/ba" 2 0.5 "$c" | cut -d' ' -f1,2)"
      echo "$1 2-threads-passive $(OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 "$tmp/ba" 2 0.5 "$c" | cut -d' ' -f1,2)"
      echo "$1 1-thread $(OMP_NUM_THREADS=1 "$tmp/ba" 1 0.5 "$c" | cut -d' ' -f1,2)"
    done
  done
}
for h in $(seq "$hogs"); do
  sh -c 'while :; do :; done' &
  pids+=($!)
done
sleep 0.3
run "busy-$hogs"
for p in "${pids[@]}"; do kill "$p"; done
pids=()
sleep 0.5
run idle
