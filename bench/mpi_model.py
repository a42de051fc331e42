#!/usr/bin/env python3
"""A paper model of NT-Xent / CLIP value+gradient across P processes.

Time per step = compute + communication:
  compute  = minimal GEMM flops of the loss / P / (per-core rate measured by
             bench/mpi_scaling at P = 1, one thread);
             NT-Xent 12 n^2 d flops, CLIP 6 n^2 d (value + gradient);
  comm     = bytes a ring algorithm receives per process / bandwidth
             + latency * (P - 1) ring steps * collectives per call;
             bytes from README "Across processes" (float, K = 2 statistics,
             fixed shifts): all-gather of rows, norms and clamp flags
             2n(d+1)S + 2n, all-reduce of statistics 2nKS (a ring all-reduce
             moves twice its size), reduce-scatter of dW 2ndS, call records
             568 bytes per process; a ring gather / reduce-scatter receives
             (P-1)/P of its payload.
Memory per process = Workspace::bytes() as engine.hpp counts it (README "The
engine", Memory), with the tile plan the engine makes across processes
(tile edge min(256, max(32, ceil(n/2P) rounded up to 8)); tiles
materialised when this process's share fits memory_budget_bytes, 256 MiB).

It is a model: no overlap of compute and communication (the library has
none), perfect load balance, the per-core rate of a 256-row tile at every
size (small tiles at P = 512, n = 32k are 32 rows: slower in practice),
O(n d) work (normalisation, backprop) ignored, the caller's own inputs and
gradients (4 n_p d S) not counted.

    python3 bench/mpi_model.py                   # the tables of bench/README.md
    python3 bench/mpi_model.py --check           # memory of the measured configs
"""
import argparse
import math

S = 4  # float
K = 2  # statistics of the InfoNCE family
SIZEOF_TILE, SIZEOF_PAIRSUMS = 72, 24  # printed by mpi_scaling
RECORD = 568  # bytes of the call record (measured: 1136 bytes gathered on 2 processes)
COLLECTIVES = 13  # per value+gradient call, counted by mpi_scaling


def plan(loss, n, P, tile=256, budget=256 << 20):
    if P > 1:
        want = (n + 2 * P - 1) // (2 * P)
        chunk = min(tile, n, max(32, (want + 7) // 8 * 8))
    else:
        chunk = min(tile, n)
    B = (n + chunk - 1) // chunk
    tiles = 2 * (B * (B + 1) // 2) + B * B if loss == "ntxent" else B * B
    owned = (tiles + P - 1) // P
    materialised = owned * chunk * chunk * S <= budget
    return chunk, B, tiles, owned, materialised


def memory(loss, n, d, P, threads=1):
    """Workspace bytes on one process (the first, which owns the most tiles)."""
    chunk, B, tiles, owned, materialised = plan(loss, n, P)
    np_ = (n + P - 1) // P
    m = S * 2 * (2 * n * d)  # W and dW of the global batch
    m += S * 2 * n * (1 + K + 1 + 4) + 2 * n  # norms, statistics, shift, per-row results; clamp flags
    if P > 1:
        m += S * (3 * np_ * d + 2 * np_) + 2 * np_  # own rows before the gather, own dW after the scatter
    touch = 2 * tiles - (2 * B if loss == "ntxent" else 0)
    rounds = 2 * B + 1 if loss == "ntxent" else B
    m += tiles * (SIZEOF_TILE + SIZEOF_PAIRSUMS) + 8 * touch + 8 * (rounds + 1 + 2 * B + 1)
    if materialised:
        m += owned * chunk * chunk * S + 2 * tiles * chunk * K * S + threads * 4 * chunk * S
    else:
        m += threads * S * (chunk * chunk + (4 + 2 * K) * chunk)
    return m, materialised, chunk, tiles


def ring_bytes(n, d, P):
    f = (P - 1) / P
    gather = f * (2 * n * (d + 1) * S + 2 * n)
    reduce = 2 * f * (2 * n * K * S + 64) + 2 * f * 32  # (+ the pair sums and failure flags of both passes, the 4 doubles before the exchange)
    scatter = f * 2 * n * d * S
    return (P - 1) * RECORD + gather + reduce + scatter


def payload_bytes(n, d, P):
    return 32 + RECORD * P + 2 * n * (d + 1) * S + 2 * n + 2 * n * K * S + 64 + 2 * n * d * S


def flops(loss, n, d):
    return (12.0 if loss == "ntxent" else 6.0) * n * n * d


def openclip_logits(n, P):
    """OpenCLIP ClipLoss(local_loss=True, gather_with_grad): this process's
    n_p queries against all n keys, both directions, float32."""
    return 2 * (n // P) * n * 4


def fmt_time(s):
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.2f} ms"


def fmt_bytes(b):
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= k:
            return f"{b / k:.3g} {unit}"
    return f"{b:.0f} B"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate-ntxent", type=float, default=None, help="GFLOP/s per core, NT-Xent v+g (measured)")
    ap.add_argument("--rate-clip", type=float, default=None, help="GFLOP/s per core, CLIP v+g (measured)")
    ap.add_argument("--accelerator", type=float, default=100e3, help="an assumed GFLOP/s per process for a second column")
    ap.add_argument("--latency", type=float, default=5e-6, help="seconds per ring step (assumed)")
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--check", action="store_true", help="memory of the configurations mpi_scaling measures")
    a = ap.parse_args()
    rates = {"ntxent": a.rate_ntxent or RATES["ntxent"], "clip": a.rate_clip or RATES["clip"]}

    if a.check:
        print("| loss | P | n | d | model ws MB | materialised | tile |")
        print("|---|---|---|---|---|---|---|")
        for loss in ("ntxent", "clip"):
            for P in (1, 2, 3, 4):
                for n, d in ((1024 * P, 128), (4096, 128), (2048, 512)):
                    m, mat, chunk, _ = memory(loss, n, d, P)
                    print(f"| {loss} | {P} | {n} | {d} | {m / 1e6:.2f} | {mat} | {chunk} |")
        return

    d = a.d
    bws = ((12.5e9, "100 Gb/s"), (25e9, "25 GB/s"))
    print(f"Rates (GFLOP/s per core, measured at P = 1): NT-Xent {rates['ntxent']}, CLIP {rates['clip']}; "
          f"ring latency {a.latency * 1e6:g} us per step, {COLLECTIVES} collectives per call; d = {d}, float.\n")
    print("| loss | n | P | compute (measured core rate) | comm @100 Gb/s | comm @25 GB/s | "
          f"compute @{a.accelerator / 1e3:g} TFLOP/s (assumed) | bytes/process (ring) | memory/process | "
          "tiles (edge) | OpenCLIP local_loss logits/process |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for loss in ("ntxent", "clip"):
        for n in (32768, 1 << 20):
            for P in (8, 64, 512):
                f = flops(loss, n, d) / P
                rb = ring_bytes(n, d, P)
                lat = a.latency * (P - 1) * COLLECTIVES
                comm = [rb / bw + lat for bw, _ in bws]
                m, mat, chunk, tiles = memory(loss, n, d, P)
                print(f"| {'NT-Xent' if loss == 'ntxent' else 'CLIP'} | {n} | {P} | {fmt_time(f / (rates[loss] * 1e9))} | "
                      f"{fmt_time(comm[0])} | {fmt_time(comm[1])} | {fmt_time(f / (a.accelerator * 1e9))} | "
                      f"{fmt_bytes(rb)} | {fmt_bytes(m)}{'' if not mat else ' (materialised)'} | "
                      f"{tiles:,} ({chunk}) | {fmt_bytes(openclip_logits(n, P))} |")
    # Beside Inf-CL's reported figure: CLIP at 256k pairs on 8 processes,
    # d = 768 (ViT-L/14's embedding), float32 here.
    n, P, d2 = 256 * 1024, 8, 768
    m, mat, chunk, tiles = memory("clip", n, d2, P)
    print(f"\nCLIP, n = {n}, P = {P}, d = {d2}: memory/process {fmt_bytes(m)} "
          f"(W and dW {fmt_bytes(4 * n * d2 * S)}, tile records {fmt_bytes(tiles * (SIZEOF_TILE + SIZEOF_PAIRSUMS + 16))}); "
          f"OpenCLIP local_loss logits {fmt_bytes(openclip_logits(n, P))}; bytes/process (ring) {fmt_bytes(ring_bytes(n, d2, P))}")


# Per-core GFLOP/s of value + gradient at P = 1 (one thread), d = 512, n = 2048
# pairs, from the run of mpi_scaling in bench/README.md (2-core VM, AVX2+FMA).
RATES = {"ntxent": 73.9, "clip": 70.4}

if __name__ == "__main__":
    main()
