#!/usr/bin/python3
"""Times PyTorch eager autograd against the library, same inputs, float32.

For each (preset, n, d) it times forward + backward of the loss written in
PyTorch the way the peer libraries compute it (materialised logits,
cross entropy / logsumexp, autograd), with torch.set_num_threads(THREADS), and
runs the library's benchmark binary (`lib/<preset>/grad/float/n/d`) with
OMP_NUM_THREADS=THREADS; it prints both times and their ratio.  Not part of CI.

    /usr/bin/python3 bench/torch_compare.py --bench build-bench/bench/bench_losses \
        --threads 2 --cases ntxent:256:128 ntxent:4096:256
"""
import argparse
import json
import math
import os
import subprocess
import time

import torch
import torch.nn.functional as F


def inputs(n, d, view):
    # Same formula as bench_common.hpp's deterministic_input.
    k = torch.arange(n * d, dtype=torch.float64).reshape(n, d)
    i = torch.arange(n, dtype=torch.float64).reshape(n, 1)
    return (torch.sin(0.37 * k + 1.1 * view) * (1.0 + torch.remainder(i, 7))).float()


def ntxent(za, zb, tau, decoupled=False, cross=True):
    n = za.shape[0]
    w = torch.cat([F.normalize(za, dim=1), F.normalize(zb, dim=1)], 0)
    logits = w @ w.T / tau
    idx = torch.arange(2 * n)
    pos = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    mask = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    mask[idx, idx] = True
    if decoupled:
        mask[idx, pos] = True
    if not cross:
        mask[:n, n:] = True
        mask[n:, :n] = True
        mask[idx, pos] = True
    pos_logit = logits[idx, pos]
    return (torch.logsumexp(logits.masked_fill(mask, float("-inf")), 1) - pos_logit).mean()


def clip(za, zb, tau, symmetric=True):
    u, v = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    logits = u @ v.T / tau
    labels = torch.arange(za.shape[0])
    if not symmetric:
        return F.cross_entropy(logits, labels)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


LOSSES = {
    "ntxent": lambda a, b: ntxent(a, b, 0.2),
    "dcl": lambda a, b: ntxent(a, b, 0.2, decoupled=True),
    "dhel": lambda a, b: ntxent(a, b, 0.2, decoupled=True, cross=False),
    "clip": lambda a, b: clip(a, b, 0.2),
    "infonce": lambda a, b: clip(a, b, 0.2, symmetric=False),
}


def time_torch(loss, n, d, min_time=1.0):
    za = inputs(n, d, 0).requires_grad_(True)
    zb = inputs(n, d, 1).requires_grad_(True)

    def step():
        za.grad = None
        zb.grad = None
        LOSSES[loss](za, zb).backward()

    step()  # warm-up
    reps, start = 0, time.perf_counter()
    while True:
        step()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and reps >= 3:
            return elapsed / reps


def time_library(binary, loss, n, d, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(
        [binary, f"--benchmark_filter=^lib/{loss}/grad/float/{n}/{d}/", "--benchmark_format=json",
         "--benchmark_min_time=1"],
        env=env, check=True, capture_output=True, text=True).stdout
    bench = json.loads(out)["benchmarks"][0]
    scale = {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[bench["time_unit"]]
    return bench["real_time"] * scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="build-bench/bench/bench_losses")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=["ntxent:256:128", "ntxent:1024:128", "ntxent:4096:256"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, float32, value + gradient")
    print(f"{'case':>22} {'torch ms':>10} {'library ms':>11} {'torch/library':>14}")
    for case in args.cases:
        loss, n, d = case.split(":")
        n, d = int(n), int(d)
        t = time_torch(loss, n, d)
        lib = time_library(args.bench, loss, n, d, args.threads)
        print(f"{case:>22} {1e3 * t:10.2f} {1e3 * lib:11.2f} {t / lib:14.1f}")


if __name__ == "__main__":
    main()
