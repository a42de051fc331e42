#!/usr/bin/python3
"""Turns bench_losses console output into a markdown table of ratios.

    ./build-bench/bench/bench_losses --benchmark_filter=... > out.txt
    python3 bench/table.py out.txt
"""
import re
import sys

rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(lib|gemm|naive)/(\w+)/(grad|value)/(float|double)/(\d+)/(\d+)/real_time\s+([\d.]+) (ms|us|s)", line)
    if not m:
        continue
    what, loss, mode, scalar, n, d, t, unit = m.groups()
    t = float(t) * {"ms": 1.0, "us": 1e-3, "s": 1e3}[unit]
    rows.setdefault((loss, mode, scalar, int(n), int(d)), {})[what] = t

print("| loss | pass | scalar | n | d | library ms | GEMM ref ms | library / GEMM | naive ms | naive / library |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
    r = rows[key]
    if "lib" not in r or "gemm" not in r:
        continue
    naive = f"{r['naive']:.1f} | {r['naive'] / r['lib']:.1f}" if "naive" in r else "– | –"
    print(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {r['lib']:.2f} | {r['gemm']:.2f} | "
          f"{r['lib'] / r['gemm']:.2f} | {naive} |")
