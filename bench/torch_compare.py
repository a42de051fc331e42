#!/usr/bin/python3
"""The library against PyTorch written plainly and against the peers' own loss
classes: float32, forward + backward, same inputs, same thread count, with the
peak memory of each.  Not part of CI.

    /usr/bin/python3 bench/torch_compare.py --bench build-bench/bench/bench_losses \\
        --peers /tmp/peers --threads 1 --cases ntxent:1024:128 clip:1024:128:2 \\
        [--blas openblas=/tmp/openblas/usr/lib/x86_64-linux-gnu/openblas-openmp] [--json out.json]

A case is loss:n:d[:threads] (threads default: --threads, which may list
several), loss in ntxent, dcl, dhel, clip, infonce, siglip; tau = 0.2 as in
bench_losses (SigLIP: logit scale 10, bias -10, the library's defaults).

What runs, per case and thread count T:
  * library: bench_losses as a subprocess with OMP_NUM_THREADS=T, filter
    ^lib/<loss>/grad/float/<n>/<d>/threads:<T>/ (EngineOptions::num_threads
    = T), JSON output; its loss value, its time, Workspace::bytes() (ws_MB)
    and the rise of the process's peak RSS during the case (peak_delta_MiB:
    the binary runs only this case, after building the inputs and outputs).
  * plain torch: the loss written the plain way, F.normalize, one matmul,
    fill_diagonal_(-inf) where the self-similarities must go,
    F.cross_entropy / logsumexp, autograd:
      ntxent   2n x 2n logits of [u; v], diagonal -inf, cross entropy with
               labels = partner index
      dcl      the same logits, diagonal and positives -inf, mean of
               logsumexp - positive logit
      dhel     u u^T and v v^T, diagonals -inf, logsumexp - positive logit
      clip     u v^T, (CE(logits, arange) + CE(logits^T, arange)) / 2
      infonce  u v^T, CE(logits, arange)
      siglip   -logsigmoid(labels * (10 u v^T - 10)).sum() / n, labels 2I - 1
  * the peers' own classes (code fetched from GitHub, never part of this
    repository; see "Peers" below):
      ntxent   lightly NTXentLoss(temperature=0.2);
               pytorch-metric-learning SelfSupervisedLoss(NTXentLoss(temperature=0.2))
      dcl      lightly DCLLoss(temperature=0.2); lightly DCLWLoss(temperature=0.2,
               sigma=0.5) -- a different loss (von Mises-Fisher weighted
               positives), timed for reference only
      clip     open_clip ClipLoss() on F.normalize(z), logit_scale = 1/tau
      infonce  info-nce-pytorch InfoNCE(temperature=0.2)
      siglip   open_clip SigLipLoss() on F.normalize(z), scale 10, bias -10
    (dhel has no peer.)

A case whose one-thread times show a shared core (CPU time < 0.9 x wall
time, library or torch) is run again, library and torch, up to --retries
times; what remains is marked with a warning sign in the table.

Timing: all torch implementations of a case run in ONE child process
(torch.set_num_threads(T), OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = T): one
warm-up step each, then 3 interleaved rounds of at least --min-time/3 seconds
per implementation; the median step time is reported.  The child also times
torch's own 1024^3 sgemm, so the table says what GEMM rate torch had.

Memory: torch's CPU allocator has no peak statistics in torch 1.13
(torch.cuda.max_memory_allocated is CUDA only), so every implementation runs
once more in a FRESH child: peak RSS (resource.getrusage(RUSAGE_SELF).ru_maxrss)
after one forward + backward minus the peak after the imports, the inputs and
the loss object.  Both children set RLIMIT_AS to --mem-limit-gb (default 12)
before importing torch, so an implementation that asks for too much (e.g.
pytorch-metric-learning's NT-Xent, which forms a (#positive pairs) x
(#negative pairs) mask: 2048 x 4.2M floats = 34 GB at n = 1024) fails with
an allocation error, reported as "failed: <reason>", instead of taking the
machine down; a child that dies or exceeds --timeout is reported the same way.

BLAS: Debian's python3-torch 1.13 is built with BLAS_INFO=generic and links
libblas.so.3, which on a plain Debian 12 is the reference (netlib) BLAS: its
sgemm runs at ~5 GFLOP/s here, 30x below Eigen's, and that alone made the
old "35-63x faster than PyTorch" figures.  --blas LABEL=DIR runs every torch
child once more with LD_LIBRARY_PATH=DIR; with DIR holding an optimised
libblas.so.3 torch's matmul uses it.  OpenBLAS without installing anything:

    apt-get download libopenblas0-openmp && dpkg -x libopenblas0-openmp_*.deb /tmp/openblas
    --blas openblas=/tmp/openblas/usr/lib/x86_64-linux-gnu/openblas-openmp

Peers (--peers DIR or $CONTRASTIVE_PEERS): sources checked out from their
GitHub repositories into DIR with the repositories' own layout, e.g. from
bare clones:

    git --git-dir=<lightly>/repo archive HEAD lightly/loss/ntx_ent_loss.py lightly/loss/dcl_loss.py \\
        lightly/utils/dist.py lightly/models/modules/memory_bank.py | tar -x -C DIR
    git --git-dir=<pytorch-metric-learning>/repo archive HEAD src/pytorch_metric_learning | tar -x -C DIR
    git --git-dir=<info-nce-pytorch>/repo archive HEAD info_nce | tar -x -C DIR
    git --git-dir=<open_clip>/repo archive HEAD src/open_clip/loss.py | tar -x -C DIR

How they are imported (only Debian packages exist here: torch 1.13, numpy,
scipy; no torchvision, no tqdm):
  * lightly: the package's __init__ files import torchvision and every
    model, so none of them is executed.  Empty package modules `lightly`,
    `lightly.loss`, `lightly.utils`, `lightly.models`,
    `lightly.models.modules` are put in sys.modules; `lightly.utils.dist`,
    `lightly.models.modules.memory_bank`, `lightly.loss.ntx_ent_loss` and
    `lightly.loss.dcl_loss` are loaded from their files
    (importlib.util.spec_from_file_location).  `lightly.models.utils`
    (imports torchvision) is an empty stub module: memory_bank only calls
    it when gathering across processes, which never happens here.
  * pytorch-metric-learning: DIR/src on sys.path, imported normally, with a
    stub `tqdm` module (tqdm.tqdm = None): utils/common_functions.py imports
    it for its download progress bar only.
  * info-nce-pytorch: DIR on sys.path, `import info_nce`, no stubs.
  * open_clip: only src/open_clip/loss.py is loaded from its file (the
    package's __init__ imports the models, timm, huggingface).  Its
    module-level `@torch.compiler.disable` (on a function ClipLoss and
    SigLipLoss do not use) needs torch >= 2.1: if torch has no `compiler`,
    `torch.compiler` is set to a namespace whose disable() returns its
    argument.  torch.distributed is present, so its imports succeed.
"""
import argparse
import functools
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types

TAU = 0.2
SIGLIP_SCALE, SIGLIP_BIAS = 10.0, -10.0

# loss -> [(implementation id, label)]; "plain" first.
IMPLS = {
    "ntxent": [("plain", "plain torch"), ("lightly", "lightly NTXentLoss"),
               ("pml", "pytorch-metric-learning SelfSupervisedLoss(NTXentLoss)")],
    "dcl": [("plain", "plain torch"), ("lightly", "lightly DCLLoss"), ("lightly_w", "lightly DCLWLoss (other loss)")],
    "dhel": [("plain", "plain torch")],
    "clip": [("plain", "plain torch"), ("open_clip", "open_clip ClipLoss")],
    "infonce": [("plain", "plain torch"), ("info_nce", "info-nce-pytorch InfoNCE")],
    "siglip": [("plain", "plain torch"), ("open_clip", "open_clip SigLipLoss")],
}
LABELS = {(loss, i): label for loss, impls in IMPLS.items() for i, label in impls}


# ---- child side: torch, peers, losses ------------------------------------------------


def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def package(name):
    mod = types.ModuleType(name)
    mod.__path__ = []
    sys.modules[name] = mod
    return mod


@functools.lru_cache(maxsize=None)
def import_lightly(peers):
    root = os.path.join(peers, "lightly")
    for name in ("lightly", "lightly.loss", "lightly.utils", "lightly.models", "lightly.models.modules"):
        package(name)
    sys.modules["lightly.models.utils"] = types.ModuleType("lightly.models.utils")  # torchvision-free stub
    sys.modules["lightly.models"].utils = sys.modules["lightly.models.utils"]
    sys.modules["lightly.utils"].dist = load_file("lightly.utils.dist", os.path.join(root, "utils", "dist.py"))
    load_file("lightly.models.modules.memory_bank", os.path.join(root, "models", "modules", "memory_bank.py"))
    ntx = load_file("lightly.loss.ntx_ent_loss", os.path.join(root, "loss", "ntx_ent_loss.py"))
    dcl = load_file("lightly.loss.dcl_loss", os.path.join(root, "loss", "dcl_loss.py"))
    return ntx, dcl


def import_pml(peers):
    if "tqdm" not in sys.modules:
        stub = types.ModuleType("tqdm")
        stub.tqdm = None  # only used by a download helper
        sys.modules["tqdm"] = stub
    sys.path.insert(0, os.path.join(peers, "src"))
    import pytorch_metric_learning.losses as losses
    return losses


@functools.lru_cache(maxsize=None)
def import_open_clip_loss(peers):
    import torch
    if not hasattr(torch, "compiler"):
        torch.compiler = types.SimpleNamespace(disable=lambda f=None, *a, **k: f)
    return load_file("open_clip_loss", os.path.join(peers, "src", "open_clip", "loss.py"))


def import_info_nce(peers):
    sys.path.insert(0, peers)
    import info_nce
    return info_nce


def make_impl(loss, impl, peers):
    """A function (za, zb) -> scalar loss tensor."""
    import torch
    import torch.nn.functional as F

    if impl == "plain":
        return PLAIN[loss]
    if loss == "ntxent" and impl == "lightly":
        return import_lightly(peers)[0].NTXentLoss(temperature=TAU)
    if loss == "ntxent" and impl == "pml":
        L = import_pml(peers)
        return L.SelfSupervisedLoss(L.NTXentLoss(temperature=TAU))
    if loss == "dcl" and impl == "lightly":
        return import_lightly(peers)[1].DCLLoss(temperature=TAU)
    if loss == "dcl" and impl == "lightly_w":
        return import_lightly(peers)[1].DCLWLoss(temperature=TAU, sigma=0.5)
    if loss == "infonce" and impl == "info_nce":
        return import_info_nce(peers).InfoNCE(temperature=TAU)
    if loss == "clip" and impl == "open_clip":
        f = import_open_clip_loss(peers).ClipLoss()
        scale = torch.tensor(1.0 / TAU)
        return lambda a, b: f(F.normalize(a, dim=1), F.normalize(b, dim=1), scale)
    if loss == "siglip" and impl == "open_clip":
        f = import_open_clip_loss(peers).SigLipLoss()
        scale, bias = torch.tensor(SIGLIP_SCALE), torch.tensor(SIGLIP_BIAS)
        return lambda a, b: f(F.normalize(a, dim=1), F.normalize(b, dim=1), scale, bias)
    raise ValueError(f"no implementation {impl} of {loss}")


def plain_ntxent(za, zb):
    import torch
    import torch.nn.functional as F
    n = za.shape[0]
    w = torch.cat([F.normalize(za, dim=1), F.normalize(zb, dim=1)])
    logits = w @ w.T / TAU
    logits.fill_diagonal_(float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, labels)


def plain_dcl(za, zb):
    import torch
    import torch.nn.functional as F
    n = za.shape[0]
    u, v = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    w = torch.cat([u, v])
    pos = (u * v).sum(1) / TAU
    logits = w @ w.T / TAU
    logits.fill_diagonal_(float("-inf"))
    i = torch.arange(n)
    logits[i, i + n] = float("-inf")
    logits[i + n, i] = float("-inf")
    return (torch.logsumexp(logits, 1) - pos.repeat(2)).mean()


def plain_dhel(za, zb):
    import torch
    import torch.nn.functional as F
    u, v = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    pos = (u * v).sum(1) / TAU
    lu = u @ u.T / TAU
    lv = v @ v.T / TAU
    lu.fill_diagonal_(float("-inf"))
    lv.fill_diagonal_(float("-inf"))
    return 0.5 * (torch.logsumexp(lu, 1).mean() + torch.logsumexp(lv, 1).mean()) - pos.mean()


def plain_clip(za, zb):
    import torch
    import torch.nn.functional as F
    u, v = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    logits = u @ v.T / TAU
    labels = torch.arange(za.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def plain_infonce(za, zb):
    import torch
    import torch.nn.functional as F
    u, v = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    return F.cross_entropy(u @ v.T / TAU, torch.arange(za.shape[0]))


def plain_siglip(za, zb):
    import torch
    import torch.nn.functional as F
    n = za.shape[0]
    u, v = F.normalize(za, dim=1), F.normalize(zb, dim=1)
    logits = SIGLIP_SCALE * u @ v.T + SIGLIP_BIAS
    labels = 2 * torch.eye(n) - 1
    return -F.logsigmoid(labels * logits).sum() / n


PLAIN = {"ntxent": plain_ntxent, "dcl": plain_dcl, "dhel": plain_dhel, "clip": plain_clip,
         "infonce": plain_infonce, "siglip": plain_siglip}


def inputs(n, d, view):
    """Same formula as bench/inputs.hpp's deterministic_input."""
    import torch
    k = torch.arange(n * d, dtype=torch.float64).reshape(n, d)
    i = torch.arange(n, dtype=torch.float64).reshape(n, 1)
    return (torch.sin(0.37 * k + 1.1 * view) * (1.0 + torch.remainder(i, 7))).float()


def reason(e):
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:220] if msg else ''}"


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def blas_path():
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if path.startswith("/") and ("libblas" in path or "openblas" in path):
                    return path
    except OSError:
        pass
    return "?"


def child(args):
    limit = int(args.mem_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch
    torch.set_num_threads(args.threads[0])
    loss, n, d = args.case.split(":")
    n, d = int(n), int(d)
    out = {"impls": {}}
    fns = {}
    for impl in args.impls.split(","):
        try:
            fns[impl] = make_impl(loss, impl, args.peers)
        except Exception as e:  # noqa: BLE001 -- a peer that cannot load is reported, not fatal
            out["impls"][impl] = {"failed": "import: " + reason(e)}
    za = inputs(n, d, 0).requires_grad_(True)
    zb = inputs(n, d, 1).requires_grad_(True)

    def step(fn):
        za.grad = None
        zb.grad = None
        value = fn(za, zb)
        value.backward()
        return float(value.detach())

    if args.child == "mem":
        gc.collect()
        base = peak_mib()
        for impl, fn in fns.items():  # one implementation per child
            try:
                step(fn)
                out["impls"][impl] = {"peak_mib": peak_mib() - base}
            except (Exception, MemoryError) as e:  # noqa: BLE001
                out["impls"][impl] = {"failed": reason(e)}
        print(json.dumps(out))
        return
    # torch's own GEMM rate (1024^3 sgemm), so the reader sees which BLAS ran.
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * 1024**3 / (time.perf_counter() - t0) * 1e-9)
    out["torch_sgemm_gflops"] = best
    out["blas"] = blas_path()
    del a, b
    values, times, cpu = {}, {}, {}
    for impl, fn in fns.items():
        try:
            values[impl] = step(fn)  # warm-up
            times[impl] = []
            cpu[impl] = 0.0
        except (Exception, MemoryError) as e:  # noqa: BLE001
            out["impls"][impl] = {"failed": reason(e)}
        gc.collect()
    rounds = 3
    for _ in range(rounds):
        for impl in list(times):
            start = time.perf_counter()
            try:
                while True:
                    t0, c0 = time.perf_counter(), time.process_time()
                    step(fns[impl])
                    t1 = time.perf_counter()
                    cpu[impl] += time.process_time() - c0
                    times[impl].append(t1 - t0)
                    if t1 - start >= args.min_time / rounds:
                        break
            except (Exception, MemoryError) as e:  # noqa: BLE001
                out["impls"][impl] = {"failed": reason(e)}
                del times[impl]
    for impl, ts in times.items():
        out["impls"][impl] = {"ms": 1e3 * statistics.median(ts), "steps": len(ts), "value": values[impl],
                              "cpu_over_real": cpu[impl] / sum(ts)}
    print(json.dumps(out))


# ---- parent side ---------------------------------------------------------------------


def run_child(args, mode, case, threads, impls, blas_dir):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    if blas_dir:
        env["LD_LIBRARY_PATH"] = blas_dir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--case", case, "--threads", str(threads),
           "--impls", ",".join(impls), "--peers", args.peers, "--min-time", str(args.min_time),
           "--mem-limit-gb", str(args.mem_limit_gb)]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"impls": {i: {"failed": f"timeout after {args.timeout} s"} for i in impls}}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        why = f"child exit {p.returncode}: " + (p.stderr.strip().splitlines() or ["?"])[-1][:160]
        return {"impls": {i: {"failed": why} for i in impls}}
    return json.loads(lines[-1])


def run_library(args, loss, n, d, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [args.bench, f"--benchmark_filter=^lib/{loss}/grad/float/{n}/{d}/threads:{threads}/",
           "--benchmark_format=json", f"--benchmark_min_time={args.min_time}"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    b = json.loads(p.stdout)["benchmarks"][0]
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b["time_unit"]]
    return {"ms": b["real_time"] * scale, "value": b.get("loss"), "peak_mib": b.get("peak_delta_MiB"),
            "ws_mb": b.get("ws_MB"), "streamed": b.get("streamed"), "cpu_over_real": b["cpu_time"] / b["real_time"]}


def run_case(args, blases, loss, n, d, threads):
    """The library and every torch implementation of one case, back to back."""
    case = f"{loss}:{n}:{d}"
    impls = [i for i, _ in IMPLS[loss]]
    header = {}
    lib = run_library(args, loss, n, d, threads)
    rows = [dict(case=case, threads=threads, blas="–", impl="library", **lib)]
    for label, bdir in blases:
        t = run_child(args, "time", case, threads, impls, bdir)
        if "torch_sgemm_gflops" in t:
            header.setdefault((label, threads, t["blas"]), []).append(t["torch_sgemm_gflops"])
        for impl in impls:
            r = dict(t["impls"].get(impl, {"failed": "not run"}))
            if not args.no_memory and "failed" not in r:
                m = run_child(args, "mem", case, threads, [impl], bdir)["impls"][impl]
                if "peak_mib" in m:
                    r["peak_mib"] = m["peak_mib"]
                else:
                    r["mem_failed"] = m.get("failed")
            rows.append(dict(case=case, threads=threads, blas=label, impl=impl, **r))
    for r in rows:
        r["label"] = "library" if r["impl"] == "library" else LABELS[(loss, r["impl"])]
        print(json.dumps(r), file=sys.stderr, flush=True)
    return rows, header


def fmt_ms(x):
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def fmt_mb(x):
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", default="build-bench/bench/bench_losses")
    ap.add_argument("--peers", default=os.environ.get("CONTRASTIVE_PEERS", ""))
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--cases", nargs="+", default=["ntxent:1024:128", "clip:1024:128"])
    ap.add_argument("--blas", action="append", default=[], metavar="LABEL=DIR",
                    help="also run torch with LD_LIBRARY_PATH=DIR (an optimised libblas.so.3)")
    ap.add_argument("--no-system-blas", action="store_true", help="skip torch with the system's libblas")
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--mem-limit-gb", type=float, default=12.0)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--retries", type=int, default=2,
                    help="run a case again (after 60 s) when a one-thread time shows a shared core")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--child", choices=["time", "mem"], help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--impls", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    blases = ([] if args.no_system_blas else [("system", None)]) + [tuple(b.split("=", 1)) for b in args.blas]
    runs = []
    for spec in args.cases:
        parts = spec.split(":")
        loss, n, d = parts[0], int(parts[1]), int(parts[2])
        for threads in ([int(parts[3])] if len(parts) > 3 else args.threads):
            runs.append((loss, n, d, threads))
    results, header = [], {}
    for loss, n, d, threads in runs:
        for attempt in range(args.retries + 1):
            rows, head = run_case(args, blases, loss, n, d, threads)
            busy = [r for r in rows if threads == 1 and r.get("cpu_over_real", 1.0) < 0.9]
            if not busy or attempt == args.retries:
                break
            print(f"{loss}:{n}:{d} T={threads}: {len(busy)} time(s) with a shared core, again in 60 s",
                  file=sys.stderr, flush=True)
            time.sleep(60)
        for key, g in head.items():
            header.setdefault(key, []).extend(g)
        results.extend(rows)
    lines = [f"torch [{label}], {threads} thread(s): sgemm 1024^3 at {min(g):.1f}-{max(g):.1f} GFLOP/s "
             f"over the cases' children, BLAS {path}" for (label, threads, path), g in sorted(header.items())]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": lines, "rows": results}, f, indent=1)
    print_table(results, lines)


def print_table(results, header):
    for h in header:
        print(f"* {h}")
    print()
    print("| case | threads | torch BLAS | implementation | ms | ÷ library | peak MB | value |")
    print("|---|---|---|---|---|---|---|---|")
    lib_ms = {}
    for r in results:
        key = (r["case"], r["threads"])
        if r["impl"] == "library":
            lib_ms[key] = r["ms"]
        if "failed" in r:
            print(f"| {r['case']} | {r['threads']} | {r['blas']} | {r['label']} | failed: {r['failed']} | – | – | – |")
            continue
        ratio = r["ms"] / lib_ms[key] if key in lib_ms else None
        if r["impl"] == "library":
            mem = f"{fmt_mb(r['peak_mib'])} (workspace {fmt_mb(r['ws_mb'])})" if r.get("peak_mib") is not None else "–"
        elif "peak_mib" in r:
            mem = fmt_mb(r["peak_mib"])
        else:
            mem = f"failed: {r['mem_failed']}" if r.get("mem_failed") else "–"
        value = f"{r['value']:.6g}" if r.get("value") is not None else "–"
        # one thread: CPU time well below wall time means the core was shared
        busy = " ⚠" if r["threads"] == 1 and r.get("cpu_over_real", 1.0) < 0.9 else ""
        print(f"| {r['case']} | {r['threads']} | {r['blas']} | {r['label']} | {fmt_ms(r['ms'])}{busy} | "
              f"{'–' if ratio is None else f'{ratio:.2f}'} | {mem} | {value} |")
    print()
    print("peak MB: rise of the process's peak RSS (MiB) during one forward + backward, torch in a fresh process "
          "per implementation; library: during the timed calls of bench_losses running only that case, and its "
          "Workspace::bytes() (an RSS rise below the process's earlier peak does not show).  ⚠: one-thread time "
          "with CPU time < 0.9 x wall time (the core was shared).")


if __name__ == "__main__":
    main()
