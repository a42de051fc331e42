#!/usr/bin/env bash
# Compile time of one translation unit per case (g++ -O2, user CPU seconds,
# the median of 3): an Eigen-only program (one GEMM and an exp, the floor),
# the umbrella header alone, each loss header with one value_and_grad call,
# and the README's quickstart header-only and with contrastive::precompiled
# (CONTRASTIVE_PRECOMPILED; the one-off cost of src/precompiled.cpp is
# printed too).  Usage: bash bench/compile_time.sh [c++ compiler]
set -euo pipefail
cd "$(dirname "$0")/.."
cxx=${1:-g++}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags=(-O2 -std=c++17 -fopenmp -Iinclude -isystem /usr/include/eigen3 -c -o /dev/null)
median() {  # user seconds of 3 compiles of "$@"
  local t=()
  for _ in 1 2 3; do
    t+=("$( { /usr/bin/time -f %U "$cxx" "${flags[@]}" "$@" >/dev/null 2>/dev/null; } 2>&1 | tail -n 1)")
  done
  printf '%s\n' "${t[@]}" | sort -n | sed -n 2p
}
cat > "$tmp/eigen_only.cpp" <<'CPP'
#include <Eigen/Core>
#include <cstdio>
int main() {
  Eigen::MatrixXd a = Eigen::MatrixXd::Random(64, 32), b = a;
  Eigen::MatrixXd c = a * b.transpose(), g = c * a;
  std::printf("%g\n", g.sum() + (c.array() / 0.5).exp().sum());
}
CPP
printf '#include <contrastive/contrastive.hpp>\nint main() { return 0; }\n' > "$tmp/umbrella.cpp"
sed -n '/<!-- quickstart -->/,/^```$/p' README.md | sed '1,2d;$d' > "$tmp/quickstart.cpp"
loss_case() {  # name header construction
  cat > "$tmp/$1.cpp" <<CPP
#include <contrastive/$2>
#include <cstdio>
int main() {
  const Eigen::MatrixXd za = Eigen::MatrixXd::Random(64, 32), zb = za;
  std::printf("%g\n", $3.value_and_grad(za, zb).value);
}
CPP
}
loss_case infonce_family infonce_family.hpp 'contrastive::NTXent<double>(0.5)'
loss_case supcon supcon.hpp 'contrastive::SupCon<double>(0.1)'
loss_case siglip siglip.hpp 'contrastive::SigLIP<double>()'
loss_case combined combined.hpp 'contrastive::WithVRNS<double>(contrastive::NTXent<double>(0.5), {100}, 30.0)'
loss_case debiased debiased.hpp 'contrastive::Debiased<double>()'
printf '| translation unit | user s | / Eigen-only |\n|---|---|---|\n'
base=$(median "$tmp/eigen_only.cpp")
row() { printf '| %s | %s | %.2f |\n' "$1" "$2" "$(echo "$2 / $base" | bc -l)"; }
row "Eigen only (GEMM + exp)" "$base"
row "contrastive.hpp, nothing called" "$(median "$tmp/umbrella.cpp")"
for c in infonce_family supcon siglip combined debiased; do row "$c.hpp + one call" "$(median "$tmp/$c.cpp")"; done
row "README quickstart, header-only" "$(median "$tmp/quickstart.cpp")"
row "README quickstart, CONTRASTIVE_PRECOMPILED" "$(median -DCONTRASTIVE_PRECOMPILED "$tmp/quickstart.cpp")"
printf '\nsrc/precompiled.cpp (once per build): %s s\n' "$( { /usr/bin/time -f %U "$cxx" "${flags[@]}" src/precompiled.cpp >/dev/null 2>/dev/null; } 2>&1 | tail -n 1)"
