#!/usr/bin/env bash
# Before/after timing of two versions of the headers in one run (not part of CI).
#
#   bash bench/before_after.sh <before-rev> [after-rev=work tree] [threads=1] [rounds=6]
#
# Extracts <before-rev>'s include/ (and <after-rev>'s, or uses the work
# tree's) into a temporary directory, compiles bench/before_after.cpp against
# each (g++ -O3 -march=native -fopenmp, as the benchmarks), runs the two
# programs in alternation `rounds` times (before, after, before, ...), so
# that a machine whose speed drifts during the run affects both alike, and
# prints per case the minimum over rounds of each program's median time and
# their ratio, and checks the two versions' loss values agree to 1e-4
# relative.
# With CASES="<substring> ..." each round runs each named case in a process
# of its own (a training program's first calls: nothing before them has
# raised glibc's mmap threshold), e.g.
#   CASES="ntxent/grad/float/1024/256 ntxent/grad/double/1024/128" bash bench/before_after.sh HEAD~1
# The issue-14 table in bench/README.md: bash bench/before_after.sh 239106d^ HEAD 1 6
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
before="${1:?usage: before_after.sh <before-rev> [after-rev] [threads] [rounds]}"
after="${2:-}"
threads="${3:-1}"
rounds="${4:-6}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
eigen="$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)"
build() {  # build <label> <rev or empty>
  local inc="$root/include"
  if [ -n "$2" ]; then
    mkdir -p "$tmp/$1"
    git -C "$root" archive "$2" include | tar -x -C "$tmp/$1"
    inc="$tmp/$1/include"
  fi
  g++ -std=c++17 -O3 -DNDEBUG -march=native -fopenmp $eigen -I"$inc" "$root/bench/before_after.cpp" -o "$tmp/$1.bin"
}
build before "$before" &
build after "$after"
wait
for r in $(seq "$rounds"); do
  if [ -z "${CASES:-}" ]; then
    OMP_NUM_THREADS="$threads" "$tmp/before.bin" "$threads" > "$tmp/before.$r"
    OMP_NUM_THREADS="$threads" "$tmp/after.bin" "$threads" > "$tmp/after.$r"
  else
    : > "$tmp/before.$r"
    : > "$tmp/after.$r"
    for c in $CASES; do
      OMP_NUM_THREADS="$threads" "$tmp/before.bin" "$threads" 0.1 "$c" >> "$tmp/before.$r"
      OMP_NUM_THREADS="$threads" "$tmp/after.bin" "$threads" 0.1 "$c" >> "$tmp/after.$r"
    done
  fi
done
python3 - "$tmp" "$rounds" "$before" "${after:-work tree}" <<'PY'
import sys
tmp, rounds, b_rev, a_rev = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def read(label):
    t, v = {}, {}
    for r in range(1, rounds + 1):
        for line in open(f"{tmp}/{label}.{r}"):
            case, ms, val = line.split()
            t.setdefault(case, []).append(float(ms))
            v[case] = float(val)
    return t, v
bt, bv = read("before")
at, av = read("after")
print(f"| case | before ({b_rev}) ms | after ({a_rev}) ms | after / before |")
print("|---|---:|---:|---:|")
bad = []
for case in bt:
    b, a = min(bt[case]), min(at[case])
    print(f"| {case} | {b:.3f} | {a:.3f} | {a / b:.2f} |")
    if abs(av[case] - bv[case]) > 1e-4 * max(1.0, abs(bv[case])):
        bad.append(f"{case}: {bv[case]} vs {av[case]}")
print(f"\n(minimum over {rounds} alternating rounds of each program's median)")
if bad:
    print("loss values differ: " + "; ".join(bad))
    sys.exit(1)
PY
