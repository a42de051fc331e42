#!/usr/bin/python3
"""Reference values and gradients for InfoNCE with explicit negative keys, by PyTorch autograd.

Written the way info-nce-pytorch's InfoNCE(negative_mode=...) computes the loss:
normalise every row, logits = [q.p+ | q.N^T] (mode "unpaired", shared keys) or
[q.p+ | per-query keys] (mode "paired"), cross entropy with target 0, divided by
the temperature.  Per-anchor weights: the weighted sum of reduction='none' losses.
float64 throughout.  Run with Debian's python3-torch:

    /usr/bin/python3 tests/data/make_reference_negatives.py > tests/data/negatives_reference.txt

Format: "case NAME MODE REDUCTION" then lines "NAME ROWS COLS v v v ..." (row-major).
CI never runs this; it reads the committed output.

The cases after "shared_large" (lines tau_plus and beta) are the debiased and
hard-negative forms for explicit keys (tests/data/REFERENCE_LOSSES.md §1-2
with N the query's number of negative keys; no peer computes them, so the
formula is written out here, as DCL's main.py and HCL's image/main.py write
theirs): per query, with x = logits / tau,

    R  = sum_j e^{x_j}                                   (beta = 0)
       = N * sum_j e^{beta x_j} e^{x_j} / sum_j e^{beta x_j}   (beta > 0; HCL's imp / imp.mean())
    Ng = clamp((R - tau_plus N e^{x_pos}) / (1 - tau_plus), min = N e^{-1/tau})
    l  = -log(e^{x_pos} / (e^{x_pos} + Ng))

nothing detached, tau a tensor (so the floor has its dL/dtau).  A comment line
lists the clamped queries; every query is at least 1e-3 (relative) away
from the clamp's switch.
"""
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def loss(q, p, neg, tau, mode, reduction, weights):
    q, p, neg = (F.normalize(t, dim=-1, eps=1e-12) for t in (q, p, neg))
    pos = (q * p).sum(dim=1, keepdim=True)
    if mode == "shared":
        negl = q @ neg.transpose(0, 1)
    else:
        k = neg.shape[0] // q.shape[0]
        negl = (q.unsqueeze(1) @ neg.reshape(q.shape[0], k, -1).transpose(-2, -1)).squeeze(1)
    logits = torch.cat([pos, negl], dim=1) / tau
    target = torch.zeros(q.shape[0], dtype=torch.long)
    per = F.cross_entropy(logits, target, reduction="none")
    if weights is not None:
        w = torch.tensor(weights)
        total = (w * per).mean() if reduction == "mean" else (w * per).sum()
    elif reduction == "none":
        total = per.sum()
    else:
        total = F.cross_entropy(logits, target, reduction=reduction)
    return total, per


def debiased_loss(q, p, neg, tau, mode, reduction, weights, tau_plus, beta):
    q, p, neg = (F.normalize(t, dim=-1, eps=1e-12) for t in (q, p, neg))
    pos = torch.exp((q * p).sum(dim=1) / tau)
    if mode == "shared":
        negl = q @ neg.transpose(0, 1)
    else:
        k = neg.shape[0] // q.shape[0]
        negl = (q.unsqueeze(1) @ neg.reshape(q.shape[0], k, -1).transpose(-2, -1)).squeeze(1)
    e = torch.exp(negl / tau)
    N = e.shape[1]
    if beta == 0:
        R = e.sum(dim=-1)
    else:
        imp = torch.exp(beta * negl / tau)
        R = (imp * e).sum(dim=-1) / imp.mean(dim=-1)
    raw = (R - tau_plus * N * pos) / (1 - tau_plus)
    floor = N * torch.exp(-1 / tau)
    Ng = torch.clamp(raw, min=floor)
    per = -torch.log(pos / (pos + Ng))
    if weights is not None:
        w = torch.tensor(weights)
        total = (w * per).mean() if reduction == "mean" else (w * per).sum()
    elif reduction == "mean":
        total = per.mean()
    else:
        total = per.sum()
    ratio = (raw / floor).detach()
    clamped = [i for i in range(len(ratio)) if ratio[i] < 1]
    assert all(abs(float(r) - 1) >= 1e-3 for r in ratio), "a query too close to the clamp's switch"
    return total, per, clamped


def emit(name, t):
    t = t.detach().reshape(t.shape[0], -1) if t.dim() > 0 else t.detach().reshape(1, 1)
    vals = " ".join(repr(float(x)) for x in t.flatten())
    print(f"{name} {t.shape[0]} {t.shape[1]} {vals}")


def case(name, n, d, m, tau, mode, reduction, weighted, gen, scale=1.0):
    q = (scale * torch.randn(n, d, generator=gen)).requires_grad_()
    p = (q.detach() + 0.7 * torch.randn(n, d, generator=gen)).requires_grad_()
    rows = m if mode == "shared" else n * m
    neg = torch.randn(rows, d, generator=gen).requires_grad_()
    t = torch.tensor(tau, requires_grad=True)
    weights = [float(x) for x in torch.rand(n, generator=gen) * 2] if weighted else None
    total, per = loss(q, p, neg, t, mode, reduction, weights)
    total.backward()
    print(f"case {name} {mode} {reduction}")
    emit("temperature", torch.tensor(tau))
    emit("query", q)
    emit("positive_key", p)
    emit("negative_keys", neg)
    if weights is not None:
        emit("weights", torch.tensor(weights).reshape(1, -1))
    emit("value", total)
    emit("per_anchor", per.reshape(1, -1))
    emit("grad_query", q.grad)
    emit("grad_positive_key", p.grad)
    emit("grad_negative_keys", neg.grad)
    emit("grad_temperature", t.grad)


def debiased_case(name, n, d, m, tau, mode, reduction, weighted, gen, tau_plus, beta, align=0.7):
    q = torch.randn(n, d, generator=gen).requires_grad_()
    # align: per-row noise of the positive key (a list mixes well- and badly-aligned pairs)
    noise = torch.tensor(align if isinstance(align, list) else [align] * n).reshape(n, 1)
    p = (q.detach() + noise * torch.randn(n, d, generator=gen)).requires_grad_()
    rows = m if mode == "shared" else n * m
    neg = torch.randn(rows, d, generator=gen).requires_grad_()
    t = torch.tensor(tau, requires_grad=True)
    weights = [float(x) for x in torch.rand(n, generator=gen) * 2] if weighted else None
    total, per, clamped = debiased_loss(q, p, neg, t, mode, reduction, weights, tau_plus, beta)
    total.backward()
    print(f"case {name} {mode} {reduction}")
    print(f"# clamped queries (Ng at its floor N e^(-1/tau)): {clamped} of {n}")
    emit("temperature", torch.tensor(tau))
    emit("tau_plus", torch.tensor(tau_plus))
    emit("beta", torch.tensor(beta))
    emit("query", q)
    emit("positive_key", p)
    emit("negative_keys", neg)
    if weights is not None:
        emit("weights", torch.tensor(weights).reshape(1, -1))
    emit("value", total)
    emit("per_anchor", per.reshape(1, -1))
    emit("grad_query", q.grad)
    emit("grad_positive_key", p.grad)
    emit("grad_negative_keys", neg.grad)
    emit("grad_temperature", t.grad)


def main():
    gen = torch.Generator().manual_seed(20261202)
    print(f"# generated by tests/data/make_reference_negatives.py with torch {torch.__version__}; float64 autograd")
    for mode in ("shared", "paired"):
        case(f"{mode}_mean", 6, 5, 9 if mode == "shared" else 3, 0.1, mode, "mean", False, gen)
        case(f"{mode}_sum", 5, 4, 7 if mode == "shared" else 4, 0.5, mode, "sum", False, gen)
        case(f"{mode}_none", 4, 3, 5 if mode == "shared" else 2, 0.2, mode, "none", False, gen)
        case(f"{mode}_weighted_mean", 6, 5, 8 if mode == "shared" else 3, 0.3, mode, "mean", True, gen)
        case(f"{mode}_weighted_sum", 6, 5, 8 if mode == "shared" else 3, 0.07, mode, "sum", True, gen)
        case(f"{mode}_one_negative", 3, 6, 1, 0.25, mode, "mean", False, gen, scale=40.0)
    # A larger shared case, several query blocks under a small memory budget in the test.
    case("shared_large", 40, 8, 150, 0.1, "shared", "mean", False, gen)
    # Debiased (tau_plus) and hard-negative (beta) forms: N = M shared, k per query.
    mixed = [0.05, 2.0, 0.1, 3.0, 0.02, 1.0]
    debiased_case("debiased_shared_mean", 6, 5, 9, 0.2, "shared", "mean", False, gen, 0.1, 0.0)
    debiased_case("debiased_paired_sum", 5, 4, 4, 0.5, "paired", "sum", False, gen, 0.1, 0.0, 2.0)
    debiased_case("debiased_shared_clamp_mixed", 6, 5, 7, 0.1, "shared", "mean", False, gen, 0.5, 0.0, mixed)
    debiased_case("hard_shared_mean", 6, 5, 9, 0.2, "shared", "mean", False, gen, 0.0, 1.0)
    debiased_case("hard_paired_weighted_mean", 6, 5, 3, 0.3, "paired", "mean", True, gen, 0.1, 2.0)
    debiased_case("hard_shared_none", 4, 3, 5, 0.25, "shared", "none", False, gen, 0.2, 0.5)
    debiased_case("hard_paired_clamp_mixed", 6, 5, 4, 0.1, "paired", "sum", True, gen, 0.3, 1.0, mixed)
    debiased_case("hard_paired_one_negative", 3, 6, 1, 0.25, "paired", "mean", False, gen, 0.1, 6.0)
    debiased_case("hard_shared_large", 40, 8, 150, 0.1, "shared", "mean", False, gen, 0.1, 1.0)


if __name__ == "__main__":
    main()
