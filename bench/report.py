#!/usr/bin/python3
"""Markdown table of the library against its limit, from bench_losses' JSON.

    ./build-bench/bench/bench_losses --benchmark_format=json --benchmark_min_time=0.2 \
        --benchmark_filter='^rate/float/[0-9]+/threads:1/|^(lib|naive|naive_min)/ntxent/grad/float/1024/128/threads:1/' > out.json
    python3 bench/report.py out.json [more.json ...]

The limit of a case is its minimal GEMM work (counter min_GFLOP; NT-Xent/DCL
6 n^2 d multiply-adds with the gradient, 2 n^2 d without; CLIP/InfoNCE/DHEL
3 n^2 d and n^2 d) at the best Eigen GEMM rate of the same scalar and thread
count (the `rate/...` cases) measured in the SAME file, i.e. the same run.
A case from a file without the rate of its scalar and threads gets no limit
("–"): rates are never taken from another run.  Several files may be given
(e.g. one run per loss, each with its own rate cases); a case found in more
than one file is taken from the last.

A one-thread time whose real time exceeds its CPU time by more than 10% is
marked ⚠: another process shared the core during the measurement.

Times are real time in ms: the median aggregate when the run had
repetitions, else the median of the iteration entries.  A library row marked
† streamed (recomputed some or all of its similarity tiles in the gradient
pass: past the memory budget, up to twice it, the engine keeps as many
tiles as fit); the limit of a call that recomputes every tile is
4/3 of the minimal one and is listed under the table.

Targets (issue "the engine to the machine's limit"), flagged ✓ / ✗:
  * NT-Xent, DCL, DHEL value+gradient: <= 1.35x the limit at n = 256,
    else <= 1.2x at d = 128 and <= 1.1x at d >= 256;
  * CLIP, InfoNCE value+gradient: <= 1.25x the limit at n >= 1024 and d = 128,
    and never slower than naive_min (the bare materialised code) at any size;
  * every preset value-only: <= 1.15x the limit.
SigLIP, VRNS and the NT-Xent+VRNS sum have no target ("–").
"""
import json
import re
import statistics
import sys

CASE = re.compile(r"^(lib|naive|naive_min)/(\w+)/(grad|value)/(float|double)/(\d+)/(\d+)/threads:(\d+)")
RATE = re.compile(r"^rate/(float|double)/(\d+)/threads:(\d+)")
UNIT_MS = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
ORDER = ["infonce", "clip", "ntxent", "dcl", "dhel", "siglip", "vrns", "ntxent_vrns"]


def entries(doc):
    """name -> list of benchmark entries (median aggregates if any, else iterations)."""
    iters, medians = {}, {}
    for b in doc.get("benchmarks", []):
        name = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians.setdefault(name, []).append(b)
        elif "error_occurred" not in b or not b["error_occurred"]:
            iters.setdefault(name, []).append(b)
    return {name: medians.get(name, iters.get(name)) for name in set(iters) | set(medians)}


def ms(runs):
    return statistics.median(b["real_time"] * UNIT_MS[b["time_unit"]] for b in runs)


def counter(runs, key):
    vals = [b[key] for b in runs if key in b]
    return statistics.median(vals) if vals else None


def target(loss, mode, n, d, ratio, lib, nmin):
    """(text, ok) of the case's target, or ("–", None)."""
    if ratio is None:
        return "–", None
    if mode == "value" and loss in ORDER[:5]:
        return flag(f"≤1.15×", ratio <= 1.15)
    if loss in ("ntxent", "dcl", "dhel"):
        bound = 1.35 if n == 256 else (1.2 if d == 128 else 1.1)
        return flag(f"≤{bound:.2f}×", ratio <= bound)
    if loss in ("clip", "infonce"):
        parts = []
        ok = True
        if n >= 1024 and d == 128:
            parts.append(flag("≤1.25×", ratio <= 1.25)[0])
            ok = ok and ratio <= 1.25
        if nmin is not None:
            parts.append(flag("≤ naive_min", lib <= nmin)[0])
            ok = ok and lib <= nmin
        return (", ".join(parts), ok) if parts else ("–", None)
    return "–", None


def flag(text, ok):
    return f"{text} {'✓' if ok else '✗'}", ok


def fmt(x):
    if x is None:
        return "–"
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def contended(runs, threads):
    """A one-thread measurement whose real time exceeds its CPU time by > 10%: the core was shared."""
    if threads != 1:
        return False
    real = sum(b["real_time"] for b in runs)
    cpu = sum(b["cpu_time"] for b in runs)
    return cpu > 0 and real > 1.1 * cpu


def load(paths):
    """Rates per file and the cases of all files, each with the rate of its own file."""
    rate_rows, cases, notes = [], {}, []
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        ctx = doc.get("context", {})
        notes.append(f"{path}: {ctx.get('date', '?')}, {ctx.get('num_cpus', '?')} CPUs, "
                     f"load at start {', '.join(f'{x:.2f}' for x in ctx.get('load_avg', []))}")
        runs = entries(doc)
        rates = {}
        for name, rs in runs.items():
            m = RATE.match(name)
            if m:
                scalar, size, threads = m.group(1), int(m.group(2)), int(m.group(3))
                g = max(b["GFLOPs"] for b in rs)
                rate_rows.append((path, scalar, threads, size, g, contended(rs, threads)))
                rates[(scalar, threads)] = max(rates.get((scalar, threads), 0.0), g)
        for name, rs in runs.items():
            m = CASE.match(name)
            if m:
                what, loss, mode, scalar, n, d, threads = m.groups()
                key = (loss, mode, scalar, int(threads), int(n), int(d))
                c = cases.setdefault(key, {"rate": None, "file": path})
                if c["file"] != path:  # a later file replaces the case
                    c.clear()
                    c.update(rate=None, file=path)
                c[what] = rs
                c["rate"] = rates.get((scalar, int(threads)))
    return rate_rows, cases, notes


def report(paths):
    rate_rows, cases, notes = load(paths)
    for note in notes:
        print(f"* {note}")
    print()
    if rate_rows:
        best = {}
        for path, scalar, threads, size, g, _ in rate_rows:
            best[(path, scalar, threads)] = max(best.get((path, scalar, threads), 0.0), g)
        print("| file | GEMM | threads | m = n = k | GFLOP/s |")
        print("|---|---|---|---|---|")
        for path, scalar, threads, size, g, busy in sorted(rate_rows):
            mark = (" (best)" if g == best[(path, scalar, threads)] else "") + (" ⚠" if busy else "")
            print(f"| {path} | {'sgemm' if scalar == 'float' else 'dgemm'} | {threads} | {size} | {g:.1f}{mark} |")
        print()
    print("| loss | pass | scalar | threads | n | d | library ms | limit ms | library/limit | naive ms | "
          "naive-minimal ms | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    streamed_notes, passed, failed, shared = [], 0, 0, 0

    def order(k):
        loss, mode, scalar, threads, n, d = k
        return (ORDER.index(loss) if loss in ORDER else len(ORDER), loss, mode != "grad", scalar != "float", threads, n, d)

    def cell(c, what, threads):
        nonlocal shared
        if what not in c:
            return None, "–"
        t = ms(c[what])
        if contended(c[what], threads):
            shared += 1
            return t, fmt(t) + " ⚠"
        return t, fmt(t)

    for key in sorted(cases, key=order):
        loss, mode, scalar, threads, n, d = key
        c = cases[key]
        lib, lib_s = cell(c, "lib", threads)
        _, naive_s = cell(c, "naive", threads)
        nmin, nmin_s = cell(c, "naive_min", threads)
        some = next(c[w] for w in ("lib", "naive", "naive_min") if w in c)
        work = counter(some, "min_GFLOP")
        rate = c["rate"]
        limit = 1e3 * work / rate if (work is not None and rate) else None
        ratio = lib / limit if (lib is not None and limit) else None
        streamed = "lib" in c and (counter(c["lib"], "streamed") or 0) > 0
        text, ok = target(loss, mode, n, d, ratio, lib, nmin) if lib is not None else ("–", None)
        if ok is True:
            passed += 1
        elif ok is False:
            failed += 1
        if streamed:
            lib_s += " †"
            if limit:
                streamed_notes.append(f"{loss} {mode} {scalar} T={threads} n={n} d={d}: recomputing limit "
                                      f"{fmt(limit * 4 / 3)} ms, library / that = {lib / (limit * 4 / 3):.2f}")
        print(f"| {loss} | {mode} | {scalar} | {threads} | {n} | {d} | {lib_s} | {fmt(limit)} | "
              f"{'–' if ratio is None else f'{ratio:.2f}'} | {naive_s} | {nmin_s} | {text} |")
    print()
    if streamed_notes:
        print("† streamed (some or all tiles recomputed in the gradient pass; the limit if all are):")
        for s in streamed_notes:
            print(f"* {s}")
        print()
    if shared:
        print(f"⚠ {shared} one-thread measurement(s) had real time > 1.1x CPU time: the core was shared with "
              "another process; rerun them.\n")
    print(f"Targets met: {passed}, missed: {failed}.")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    report(sys.argv[1:])


if __name__ == "__main__":
    main()
