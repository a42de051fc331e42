#!/usr/bin/python3
"""Reference values and gradients for the losses of issue 15, by PyTorch autograd in float64.

Every loss is written out here from the formulas of tests/data/REFERENCE_LOSSES.md
(which says, for each, which peer code it follows and where that code departs
from its paper).  Nothing here calls the C++ library or a peer to produce the
data; the peers are only run, on the same inputs, with --cross-check.

    /usr/bin/python3 tests/data/make_reference_more.py                 # writes tests/data/more_reference.txt
    /usr/bin/python3 tests/data/make_reference_more.py --cross-check   # also runs the peers' code (not in CI)

Notation (README): rows are samples, row i of za and zb are two views of
instance i, u = F.normalize(za), v = F.normalize(zb) (norm clamped at 1e-12),
s_ij = u_i . v_j, x = s / tau.  Symmetric losses average over 2n anchors:
anchor r < n is row r of za, anchor n + i is row i of zb.

Output format (as make_reference_additive.py, read by tests/support.hpp):

    case NAME LOSS n d
    param KEY VALUE            one line per parameter (temperature, tau_plus, beta, ...)
    ids i0 i1 ...              instance ids (multi-positive, false-negative masks)
    labels y0 y1 ...           class labels (single-batch SupCon)      [new key]
    za ... / zb ...            row-major n x d inputs (single-batch SupCon: za only)
    value V
    grad_a ... / grad_b ...    dL/dza, dL/dzb (single-batch SupCon: grad_a only)
    grad_KEY G                 dL/dKEY for every scalar parameter the loss is
                               differentiable in (grad_temperature, grad_t, grad_alpha,
                               grad_log_scale); grad_sigma is written as 0 (DCLW's
                               weights are detached)
    per_anchor ...             per-anchor losses l_r in anchor order        [new key]
    value_u V / value_v V      uniformity of each view (uniform cases)      [new key]
    # ...                      comments (clamped anchors, DCLW weights, reductions)

Lines a reader does not know are to be skipped (tests/support.hpp does).
"""
import argparse
import atexit
import contextlib
import importlib.util
import io
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import warnings

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

HERE = os.path.dirname(os.path.abspath(__file__))
NEG_INF = float("-inf")


# ----------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------

def normalize(z):
    # torch's F.normalize: z / max(||z||, 1e-12), as the README and every peer.
    return F.normalize(z, dim=1, eps=1e-12)


def eye(n):
    return torch.eye(n, dtype=torch.bool)


def same_ids(ids, n):
    # [n x n] True where rows i and j share an instance id (diagonal included).
    if ids is None:
        return eye(n)
    t = torch.tensor(ids)
    return t.reshape(-1, 1) == t.reshape(1, -1)


def masked_lse(x, keep):
    # log sum_{keep} e^x per row; -inf for a row with nothing kept.
    return torch.logsumexp(x.masked_fill(~keep, NEG_INF), dim=1)


# ----------------------------------------------------------------------------
# Anchor layouts.  Each returns, for every anchor r, its logits over the rows
# it is compared with, the column of its positive, and which columns are its
# negatives (and which are valid at all).
# ----------------------------------------------------------------------------

def layout_ntxent(u, v, tau, ids=None):
    # 2n anchors; anchor r is row r of W = [U; V]; its columns are the 2n rows
    # of W; positive the other view (r + n mod 2n); negatives every other row
    # q != r, q != partner (minus equal ids): 2n - 2 of them without ids.
    n = u.shape[0]
    w = torch.cat([u, v], 0)
    logits = w @ w.T / tau
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    pos = torch.zeros(2 * n, 2 * n, dtype=torch.bool)
    pos[torch.arange(2 * n), partner] = True
    neg = ~same_ids(ids, n).repeat(2, 2)  # equal ids (incl. self, partner) are never negatives
    return logits, partner, pos, neg


def layout_oneway(x, y, tau, ids=None):
    # n anchors x_i against the n rows of y: positive y_i, negatives y_j, j != i
    # (minus equal ids): n - 1 of them without ids.
    n = x.shape[0]
    logits = x @ y.T / tau
    partner = torch.arange(n)
    pos = eye(n)
    neg = ~same_ids(ids, n)
    return logits, partner, pos, neg


def anchors_of(kind, u, v, tau, ids=None):
    # The list of anchor blocks whose per-anchor losses are concatenated (and
    # averaged): one block one-way, two blocks (u then v) CLIP-style, one block
    # of 2n rows NT-Xent-style.
    if kind == "ntxent":
        return [layout_ntxent(u, v, tau, ids)]
    if kind == "infonce":
        return [layout_oneway(u, v, tau, ids)]
    if kind == "clip":
        return [layout_oneway(u, v, tau, ids), layout_oneway(v, u, tau, ids)]
    raise ValueError(kind)


# ----------------------------------------------------------------------------
# Base losses (for the reductions): InfoNCE, CLIP, NT-Xent, DCL, each as a
# cross entropy over the anchor's logits (positive in the denominator) or,
# for DCL, the decoupled form.
# ----------------------------------------------------------------------------

def base_family(kind, decoupled=False):
    def loss(za, zb, p, ids=None):
        u, v = normalize(za), normalize(zb)
        per = []
        for logits, partner, pos, neg in anchors_of(kind, u, v, p["temperature"], ids):
            rows = torch.arange(logits.shape[0])
            keep = neg if decoupled else (neg | pos)
            per.append(masked_lse(logits, keep) - logits[rows, partner])
        per = torch.cat(per)
        return per.mean(), per, []
    return loss


# ----------------------------------------------------------------------------
# 1 + 2: debiased (Chuang et al.) and hard-negative (Robinson et al.) losses
# ----------------------------------------------------------------------------

def debiased_family(kind):
    """l_r = log(e^{x_pos} + Ng_r) - x_pos with
         Ng_r = max( (R_r - tau_plus N_r e^{x_pos}) / (1 - tau_plus),  N_r e^{-1/tau} ),
         R_r  = sum_{j in neg(r)} e^{x_rj}                                   (beta = 0, Chuang)
         R_r  = N_r sum_j e^{beta x_rj} e^{x_rj} / sum_j e^{beta x_rj}       (beta > 0, Robinson)
       N_r the number of negatives of anchor r; mean over anchors.  The
       importance weights e^{beta x} are NOT detached (as in HCL's code); the
       floor N_r e^{-1/tau} is differentiated in tau (a constant for the inputs)."""

    def loss(za, zb, p, ids=None):
        u, v = normalize(za), normalize(zb)
        tau, tau_plus, beta = p["temperature"], float(p["tau_plus"]), float(p["beta"])
        per, clamped, ratios = [], [], []
        for logits, partner, _, neg in anchors_of(kind, u, v, tau, ids):
            rows = torch.arange(logits.shape[0])
            x_pos = logits[rows, partner]
            count = neg.sum(1).to(logits.dtype)  # N_r
            e = torch.exp(logits).masked_fill(~neg, 0.0)
            if beta == 0.0:
                r_sum = e.sum(1)
            else:
                imp = torch.exp(beta * logits).masked_fill(~neg, 0.0)
                r_sum = count * (imp * e).sum(1) / imp.sum(1)
            raw = (r_sum - tau_plus * count * torch.exp(x_pos)) / (1.0 - tau_plus)
            floor = count * torch.exp(-1.0 / tau)
            low = raw < floor
            ng = torch.where(low, floor, raw)
            per.append(torch.log(torch.exp(x_pos) + ng) - x_pos)
            clamped.append(low)
            ratios.append((raw / floor).detach())
        per = torch.cat(per)
        clamped = torch.cat(clamped)
        ratios = torch.cat(ratios)
        # No anchor may sit at the switch of the clamp (where its derivative jumps),
        # so that any correct implementation takes the same branch.
        assert bool(((ratios - 1.0).abs() > 1e-3).all()), ratios
        idx = [int(i) for i in torch.nonzero(clamped).flatten()]
        notes = [f"clamped anchors (Ng at its floor N e^(-1/tau)): {idx if idx else 'none'}"
                 f" of {per.numel()}; min |raw/floor - 1| = {float((ratios - 1).abs().min()):.3g}"]
        return per.mean(), per, notes
    return loss


# ----------------------------------------------------------------------------
# 3: SupCon on one batch (pytorch-metric-learning SupConLoss(embeddings, labels))
# ----------------------------------------------------------------------------

def supcon_single(za, zb, p, labels):
    """n anchors u_i = rows of za; x_ij = u_i.u_j / tau; P(i) = {j != i: y_j = y_i};
       l_i = log sum_{j != i} e^{x_ij} - mean_{p in P(i)} x_ip;
       L = mean of l_i over the anchors with P(i) non-empty;
       L = 0 (zero gradients) when no pair is positive or no pair is negative
       (pytorch-metric-learning's two guards)."""
    n = za.shape[0]
    u = normalize(za)
    x = u @ u.T / p["temperature"]
    y = torch.tensor(labels)
    same = y.reshape(-1, 1) == y.reshape(1, -1)
    positive = same & ~eye(n)
    negative = ~same
    if not bool(positive.any()) or not bool(negative.any()):
        zero = (za * 0).sum() + 0 * p["temperature"]
        return zero, torch.zeros(n), ["no positive or no negative pair in the batch: value 0, zero gradients"]
    lse = masked_lse(x, ~eye(n))
    count = positive.sum(1)
    mean_pos = torch.where(positive, x, torch.zeros_like(x)).sum(1) / count.clamp(min=1)
    per = torch.where(count > 0, lse - mean_pos, torch.zeros_like(lse))
    used = count > 0
    notes = [f"anchors in the mean (with a positive): {[int(i) for i in torch.nonzero(used).flatten()]}"]
    return per[used].mean(), per, notes


# ----------------------------------------------------------------------------
# 4: DCLW (lightly DCLWLoss)
# ----------------------------------------------------------------------------

def dclw(za, zb, p, ids=None):
    """DCL (decoupled: negatives = 2n - 2 within- and cross-view rows, positive
       not in the denominator) with the positive term of instance i weighted by
       w_i = 2 - n softmax_i(s_ii / sigma), computed from detached u, v (a
       constant: dL/dsigma = 0); each direction a mean over n, then 0.5 (a + b)."""
    n = za.shape[0]
    u, v = normalize(za), normalize(zb)
    tau, sigma = p["temperature"], float(p["sigma"])
    with torch.no_grad():
        w = 2.0 - n * torch.softmax((u * v).sum(1) / sigma, dim=0)
    logits, partner, _, neg = layout_ntxent(u, v, tau, ids)
    rows = torch.arange(2 * n)
    per = -torch.cat([w, w]) * logits[rows, partner] + masked_lse(logits, neg)
    notes = ["weights w_i = 2 - n softmax(s_ii/sigma): " + " ".join(f"{float(t):.6g}" for t in w)]
    return per.mean(), per, notes


# ----------------------------------------------------------------------------
# 5: several positives across views by id
# ----------------------------------------------------------------------------

def multipos_family(kind, form):
    """Positives of anchor u_i: every v_j with id_j = id_i (j = i included);
       NT-Xent-style also every u_j, j != i, with id_j = id_i.  The denominator
       is every column of the anchor (positives included).
         form 'sum'  (MIL-NCE):     l = lse_{all} x - log sum_{P} e^x
         form 'mean' (SupCon L_out): l = lse_{all} x - mean_{P} x
       Mean over anchors (n one-way, 2n CLIP- and NT-Xent-style)."""

    def rows(logits, pos, valid):
        lse = masked_lse(logits, valid)
        if form == "sum":
            return lse - masked_lse(logits, pos)
        count = pos.sum(1)
        return lse - torch.where(pos, logits, torch.zeros_like(logits)).sum(1) / count

    def loss(za, zb, p, ids):
        n = za.shape[0]
        u, v = normalize(za), normalize(zb)
        tau = p["temperature"]
        same = same_ids(ids, n)
        if kind == "ntxent":
            w = torch.cat([u, v], 0)
            logits = w @ w.T / tau
            valid = ~eye(2 * n)
            pos = same.repeat(2, 2) & valid
            per = rows(logits, pos, valid)
        else:
            full = torch.ones(n, n, dtype=torch.bool)
            per = rows(u @ v.T / tau, same, full)
            if kind == "clip":
                per = torch.cat([per, rows(v @ u.T / tau, same, full)])
        return per.mean(), per, []
    return loss


# ----------------------------------------------------------------------------
# 6: label smoothing, torch's cross_entropy(label_smoothing=eps)
# ----------------------------------------------------------------------------

def smoothed_family(kind):
    """l_r = lse_r - (1 - eps) x_{r,pos} - (eps / K_r) sum_k x_rk over the K_r
       logits of anchor r (positive + its negatives: n for InfoNCE / CLIP rows,
       2n - 1 for NT-Xent; with ids the masked logits are removed, not -inf)."""

    def loss(za, zb, p, ids=None):
        u, v = normalize(za), normalize(zb)
        eps = float(p["label_smoothing"])
        per = []
        for logits, partner, pos, neg in anchors_of(kind, u, v, p["temperature"], ids):
            rows = torch.arange(logits.shape[0])
            keep = neg | pos
            k = keep.sum(1).to(logits.dtype)
            mean_logit = torch.where(keep, logits, torch.zeros_like(logits)).sum(1) / k
            per.append(masked_lse(logits, keep) - (1 - eps) * logits[rows, partner] - eps * mean_logit)
        per = torch.cat(per)
        return per.mean(), per, []
    return loss


# ----------------------------------------------------------------------------
# 7: alignment and uniformity (Wang & Isola)
# ----------------------------------------------------------------------------

def uniformity_of(x, t):
    # log of the mean over the n(n-1)/2 pairs i < j of e^{-t ||x_i - x_j||^2}
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    sq = ((x[i] - x[j]) ** 2).sum(1)
    return torch.log(torch.exp(-t * sq).mean())


def alignment(za, zb, p, ids=None):
    u, v = normalize(za), normalize(zb)
    per = ((u - v) ** 2).sum(1).sqrt() ** p["alpha"]  # ||u_i - v_i||_2^alpha
    # the same through the positive similarity, (2 - 2 s_ii)^(alpha/2), for unit rows
    engine = (2 - 2 * (u * v).sum(1)) ** (p["alpha"] / 2)
    assert float((engine - per).abs().max()) <= 1e-12
    return per.mean(), per, []


def uniformity_engine_form(x, t):
    # The same for unit rows, as a log-sum-exp over similarities (||x_i - x_j||^2 = 2 - 2 x_i.x_j):
    # L = -2t + lse_{i != j}(2t x_i.x_j) - log(n(n-1)).
    n = x.shape[0]
    s = (x @ x.T).masked_fill(eye(n), NEG_INF)
    return -2 * t + torch.logsumexp((2 * t * s).reshape(-1), 0) - math.log(n * (n - 1))


def uniformity(za, zb, p, ids=None):
    u, v = normalize(za), normalize(zb)
    lu, lv = uniformity_of(u, p["t"]), uniformity_of(v, p["t"])
    for x, l in ((u, lu), (v, lv)):
        assert abs(float(uniformity_engine_form(x, p["t"]) - l)) <= 1e-12 * max(1.0, abs(float(l)))
    notes = [f"value_u {float(lu)!r}", f"value_v {float(lv)!r}"]
    return 0.5 * (lu + lv), None, notes


def align_uniform(za, zb, p, ids=None):
    # The authors' training objective: align_w * L_align + unif_w * (L_unif(U) + L_unif(V)) / 2.
    a, _, _ = alignment(za, zb, p)
    b, _, _ = uniformity(za, zb, p)
    return p["align_weight"] * a + p["uniform_weight"] * b, None, []


# ----------------------------------------------------------------------------
# 8: CLIP with the temperature kept as a log logit scale (open_clip)
# ----------------------------------------------------------------------------

def clip_log_scale(za, zb, p, ids=None):
    # logit scale t = exp(log_scale), tau = 1/t; no clamp in the forward (open_clip
    # clamps the parameter to [0, ln 100] after the optimizer step).
    q = dict(p)
    q["temperature"] = torch.exp(-p["log_scale"])
    return base_family("clip")(za, zb, q, ids)


LOSSES = {
    "infonce": base_family("infonce"),
    "clip": base_family("clip"),
    "ntxent": base_family("ntxent"),
    "dcl": base_family("ntxent", decoupled=True),
    "debiased_ntxent": debiased_family("ntxent"),
    "debiased_infonce": debiased_family("infonce"),
    "debiased_clip": debiased_family("clip"),
    "supcon_single": supcon_single,
    "dclw": dclw,
    "multipos_sum_infonce": multipos_family("infonce", "sum"),
    "multipos_sum_clip": multipos_family("clip", "sum"),
    "multipos_sum_ntxent": multipos_family("ntxent", "sum"),
    "multipos_mean_infonce": multipos_family("infonce", "mean"),
    "multipos_mean_clip": multipos_family("clip", "mean"),
    "multipos_mean_ntxent": multipos_family("ntxent", "mean"),
    "smooth_infonce": smoothed_family("infonce"),
    "smooth_clip": smoothed_family("clip"),
    "smooth_ntxent": smoothed_family("ntxent"),
    "align": alignment,
    "uniform": uniformity,
    "align_uniform": align_uniform,
    "clip_log_scale": clip_log_scale,
}

# Scalar parameters each loss is differentiable in (grad_<key> lines).
LEARN = {
    "align": ("alpha",),
    "uniform": ("t",),
    "align_uniform": ("alpha", "t"),
    "clip_log_scale": ("log_scale",),
}
SINGLE_INPUT = {"supcon_single"}
USES_LABELS = {"supcon_single"}


# ----------------------------------------------------------------------------
# Evaluation and output
# ----------------------------------------------------------------------------

def evaluate(loss, za, zb, params, ids=None, labels=None):
    """Value, gradients (dict: 'a', 'b', and each learnable parameter), per-anchor
    losses and notes of one loss on fresh leaves."""
    learn = LEARN.get(loss, ("temperature",))
    ta = za.clone().requires_grad_(True)
    tb = None if loss in SINGLE_INPUT else zb.clone().requires_grad_(True)
    p = {k: (torch.tensor(float(v), requires_grad=True) if k in learn else v) for k, v in params.items()}
    if loss in USES_LABELS:
        value, per, notes = LOSSES[loss](ta, tb, p, labels)
    else:
        value, per, notes = LOSSES[loss](ta, tb, p, ids)
    value.backward()
    grads = {"a": ta.grad if ta.grad is not None else torch.zeros_like(za)}
    if tb is not None:
        grads["b"] = tb.grad if tb.grad is not None else torch.zeros_like(zb)
    for k in learn:
        if k in p:
            g = p[k].grad
            grads[k] = 0.0 if g is None else float(g)
    return float(value), grads, (None if per is None else per.detach()), notes


def fmt(t):
    return " ".join(repr(float(x)) for x in t.reshape(-1).tolist())


class Writer:
    def __init__(self, out, cross=None):
        self.out = out
        self.cross = cross
        self.cases = []
        self.values = {}

    def comment(self, text):
        self.out.write(f"# {text}\n")

    def case(self, name, loss, za, zb, params, ids=None, labels=None, note=None):
        assert name not in self.values, name
        value, grads, per, notes = evaluate(loss, za, zb, params, ids, labels)
        n, d = za.shape
        o = self.out
        o.write(f"case {name} {loss} {n} {d}\n")
        for k, v in params.items():
            o.write(f"param {k} {float(v)!r}\n")
        if ids is not None:
            o.write("ids " + " ".join(str(i) for i in ids) + "\n")
        if labels is not None:
            o.write("labels " + " ".join(str(i) for i in labels) + "\n")
        o.write(f"za {fmt(za)}\n")
        if loss not in SINGLE_INPUT:
            o.write(f"zb {fmt(zb)}\n")
        o.write(f"value {value!r}\n")
        o.write(f"grad_a {fmt(grads['a'])}\n")
        if "b" in grads:
            o.write(f"grad_b {fmt(grads['b'])}\n")
        for k, g in grads.items():
            if k not in ("a", "b"):
                o.write(f"grad_{k} {g!r}\n")
        if loss == "dclw":
            o.write("grad_sigma 0.0\n")  # sigma only enters the detached weights
        if per is not None:
            o.write(f"per_anchor {fmt(per)}\n")
        for t in notes + ([note] if note else []):
            # per-view values (uniformity) are data lines, the rest comments
            o.write(f"{t}\n" if t.startswith("value_") else f"# {t}\n")
        self.cases.append(name)
        self.values[name] = (value, grads)
        if self.cross is not None:
            self.cross.check(name, loss, za, zb, params, ids, labels, value, grads)
        return value, grads


# ----------------------------------------------------------------------------
# Deterministic inputs
# ----------------------------------------------------------------------------

class Inputs:
    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)

    def unit(self, n, d):
        z = torch.randn(n, d, generator=self.gen)
        return z / z.norm(dim=1, keepdim=True)

    def norms(self, n, lo=0.3, hi=3.0):
        # log-uniform row norms in [lo, hi]
        return torch.exp(torch.empty(n, 1).uniform_(math.log(lo), math.log(hi), generator=self.gen))

    def pair(self, n, d, corr=0.5):
        """za, zb with norms in [0.3, 3]; the direction of zb_i mixes za_i's
        direction (weight corr_i) with fresh noise: corr = 0 independent views,
        corr near 1 nearly aligned positives.  corr may be a list per row."""
        a = self.unit(n, d)
        noise = self.unit(n, d)
        c = torch.as_tensor(corr, dtype=torch.float64).reshape(-1, 1).expand(n, 1)
        b = c * a + (1.0 - c) * noise
        b = b / b.norm(dim=1, keepdim=True)
        return a * self.norms(n), b * self.norms(n)

    def single(self, n, d):
        return self.unit(n, d) * self.norms(n)


# ----------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------

def write_all(w, cross=None):
    g = Inputs(20261215)
    w.comment("generated by tests/data/make_reference_more.py with torch %s; float64 autograd" % torch.__version__)
    w.comment("formulas, conventions and peers: tests/data/REFERENCE_LOSSES.md")

    # ---- 1. Debiased contrastive loss (Chuang et al.), beta = 0 ----------------
    w.comment("1. debiased (Chuang et al.): param beta = 0")
    for n, d, tau, tp, corr in [(2, 3, 0.5, 0.1, 0.3), (5, 7, 0.2, 0.1, 0.5), (8, 7, 0.1, 0.05, 0.4),
                                (5, 3, 0.3, 0.2, 0.6)]:
        za, zb = g.pair(n, d, corr)
        w.case(f"debiased_ntxent_n{n}_d{d}", "debiased_ntxent", za, zb,
               {"temperature": tau, "tau_plus": tp, "beta": 0.0})
    # The clamp active for some anchors and not for others: nearly aligned
    # positives for the first rows (their corrected sum falls below the floor),
    # independent views for the rest.
    za, zb = g.pair(8, 3, [0.97, 0.95, 0.9, 0.1, 0.0, 0.2, 0.05, 0.3])
    w.case("debiased_ntxent_clamp_mixed", "debiased_ntxent", za, zb,
           {"temperature": 0.2, "tau_plus": 0.1, "beta": 0.0})
    za, zb = g.pair(5, 7, [0.98, 0.1, 0.96, 0.0, 0.2])
    w.case("debiased_infonce_clamp_mixed", "debiased_infonce", za, zb,
           {"temperature": 0.2, "tau_plus": 0.1, "beta": 0.0})
    # A row of norm 1e-3 (still far above the 1e-12 clamp of the normalisation).
    za, zb = g.pair(5, 3, 0.5)
    za[2] = za[2] / za[2].norm() * 1e-3
    w.case("debiased_ntxent_tiny_row", "debiased_ntxent", za, zb,
           {"temperature": 0.25, "tau_plus": 0.1, "beta": 0.0})
    for n, d, tau, tp in [(2, 7, 0.4, 0.1), (5, 3, 0.2, 0.1), (8, 7, 0.1, 0.1)]:
        za, zb = g.pair(n, d, 0.5)
        w.case(f"debiased_infonce_n{n}_d{d}", "debiased_infonce", za, zb,
               {"temperature": tau, "tau_plus": tp, "beta": 0.0})
    for n, d, tau, tp in [(5, 7, 0.2, 0.1), (8, 3, 0.3, 0.15)]:
        za, zb = g.pair(n, d, 0.5)
        w.case(f"debiased_clip_n{n}_d{d}", "debiased_clip", za, zb,
               {"temperature": tau, "tau_plus": tp, "beta": 0.0})
    # With instance ids (our extension: N_r = the anchor's unmasked negatives).
    za, zb = g.pair(8, 7, 0.5)
    w.case("debiased_ntxent_ids", "debiased_ntxent", za, zb, {"temperature": 0.2, "tau_plus": 0.1, "beta": 0.0},
           ids=[0, 1, 0, 2, 3, 1, 4, 0], note="extension: N_r counts the anchor's negatives after the id mask")

    # ---- 2. Hard negatives (Robinson et al.) -----------------------------------
    w.comment("2. hard negatives (Robinson et al.): beta > 0, optionally with tau_plus")
    for n, d, tau, tp, beta in [(2, 3, 0.5, 0.1, 1.0), (5, 7, 0.2, 0.1, 0.5), (8, 7, 0.1, 0.1, 1.0),
                                (8, 3, 0.3, 0.0, 2.0), (5, 3, 0.4, 0.05, 6.0)]:
        za, zb = g.pair(n, d, 0.5)
        w.case(f"hard_ntxent_n{n}_d{d}_b{beta:g}", "debiased_ntxent", za, zb,
               {"temperature": tau, "tau_plus": tp, "beta": beta})
    za, zb = g.pair(8, 3, [0.97, 0.95, 0.9, 0.1, 0.0, 0.2, 0.05, 0.3])
    w.case("hard_ntxent_clamp_mixed", "debiased_ntxent", za, zb,
           {"temperature": 0.2, "tau_plus": 0.1, "beta": 1.0})
    for n, d, tau, tp, beta in [(2, 7, 0.3, 0.1, 1.0), (5, 3, 0.2, 0.1, 0.5), (8, 7, 0.1, 0.0, 1.0)]:
        za, zb = g.pair(n, d, 0.5)
        w.case(f"hard_infonce_n{n}_d{d}_b{beta:g}", "debiased_infonce", za, zb,
               {"temperature": tau, "tau_plus": tp, "beta": beta})
    za, zb = g.pair(5, 7, [0.98, 0.1, 0.96, 0.0, 0.2])
    w.case("hard_infonce_clamp_mixed", "debiased_infonce", za, zb,
           {"temperature": 0.2, "tau_plus": 0.1, "beta": 1.0})
    za, zb = g.pair(5, 7, 0.5)
    w.case("hard_clip_n5_d7_b1", "debiased_clip", za, zb, {"temperature": 0.2, "tau_plus": 0.1, "beta": 1.0})
    za, zb = g.pair(5, 3, 0.5)
    za[4] = za[4] / za[4].norm() * 1e-3
    w.case("hard_ntxent_tiny_row", "debiased_ntxent", za, zb, {"temperature": 0.25, "tau_plus": 0.1, "beta": 1.0})

    # ---- 3. SupCon on one batch -------------------------------------------------
    w.comment("3. SupCon on one batch (pytorch-metric-learning SupConLoss(embeddings, labels)); za is the batch z")
    for n, d, tau, labels in [(5, 3, 0.1, [0, 1, 0, 2, 1]), (8, 7, 0.2, [3, 1, 3, 3, 0, 1, 5, 0]),
                              (8, 3, 0.5, [0, 0, 1, 1, 2, 2, 3, 4]), (5, 7, 0.3, [1, 1, 1, 0, 1])]:
        z = g.single(n, d)
        w.case(f"supcon_single_n{n}_d{d}", "supcon_single", z, None, {"temperature": tau}, labels=labels)
    z = g.single(5, 3)
    z[1] = z[1] / z[1].norm() * 1e-3
    w.case("supcon_single_tiny_row", "supcon_single", z, None, {"temperature": 0.2}, labels=[0, 1, 1, 0, 2])
    z = g.single(5, 3)
    w.case("supcon_single_no_positive", "supcon_single", z, None, {"temperature": 0.1}, labels=[4, 3, 2, 1, 0])
    z = g.single(2, 3)
    w.case("supcon_single_n2_no_positive", "supcon_single", z, None, {"temperature": 0.1}, labels=[0, 1])
    z = g.single(4, 3)
    w.case("supcon_single_no_negative", "supcon_single", z, None, {"temperature": 0.1}, labels=[2, 2, 2, 2],
           note="pytorch-metric-learning returns 0 when the batch has no negative pair (see REFERENCE_LOSSES.md)")

    # ---- 4. DCLW -----------------------------------------------------------------
    w.comment("4. DCLW (lightly DCLWLoss); grad_sigma is 0 by definition (detached weights)")
    for n, d, tau, sigma, corr in [(2, 3, 0.1, 0.5, 0.5), (5, 7, 0.2, 0.5, 0.5), (8, 7, 0.1, 0.5, 0.4),
                                   (8, 3, 0.3, 1.0, 0.5)]:
        za, zb = g.pair(n, d, corr)
        w.case(f"dclw_n{n}_d{d}", "dclw", za, zb, {"temperature": tau, "sigma": sigma})
    # Negative weights: one instance far better aligned than the rest, small sigma.
    za, zb = g.pair(5, 3, [0.99, 0.0, 0.1, 0.0, 0.2])
    w.case("dclw_negative_weight", "dclw", za, zb, {"temperature": 0.2, "sigma": 0.1})
    za, zb = g.pair(8, 7, 0.5)
    w.case("dclw_ids", "dclw", za, zb, {"temperature": 0.2, "sigma": 0.5}, ids=[0, 1, 2, 0, 3, 4, 1, 5])

    # ---- 5. Several positives by id ----------------------------------------------
    w.comment("5. several positives across views by id: sum = MIL-NCE form, mean = SupCon L_out form")
    id_sets = [(2, 3, 0.5, [0, 1]), (5, 7, 0.2, [0, 1, 0, 2, 1]), (8, 3, 0.1, [0, 0, 0, 1, 2, 2, 3, 4]),
               (8, 7, 0.3, [5, 1, 5, 1, 5, 1, 2, 2])]
    for n, d, tau, ids in id_sets:
        za, zb = g.pair(n, d, 0.5)
        for form in ("sum", "mean"):
            for kind in ("infonce", "clip", "ntxent"):
                w.case(f"multipos_{form}_{kind}_n{n}_d{d}", f"multipos_{form}_{kind}", za, zb,
                       {"temperature": tau}, ids=ids)

    # ---- 6. Label smoothing -------------------------------------------------------
    w.comment("6. label smoothing, torch cross_entropy(label_smoothing=eps) per anchor row")
    for n, d, tau, eps in [(2, 3, 0.5, 0.1), (5, 7, 0.1, 0.1), (8, 7, 0.2, 0.3), (8, 3, 0.07 * 2, 0.1)]:
        za, zb = g.pair(n, d, 0.5)
        for kind in ("clip", "infonce", "ntxent"):
            w.case(f"smooth_{kind}_n{n}_d{d}_e{eps:g}", f"smooth_{kind}", za, zb,
                   {"temperature": tau, "label_smoothing": eps})
    za, zb = g.pair(8, 7, 0.5)
    w.case("smooth_clip_ids", "smooth_clip", za, zb, {"temperature": 0.2, "label_smoothing": 0.1},
           ids=[0, 1, 0, 2, 3, 1, 4, 0], note="extension: K_r = the anchor's unmasked logits")

    # ---- 7. Alignment and uniformity ---------------------------------------------
    w.comment("7. alignment (mean ||u_i - v_i||^alpha) and uniformity ((L_unif(U) + L_unif(V)) / 2)")
    for n, d, alpha in [(2, 3, 2.0), (5, 7, 2.0), (8, 7, 1.0), (8, 3, 3.0), (5, 3, 0.5)]:
        za, zb = g.pair(n, d, 0.5)
        w.case(f"align_n{n}_d{d}_a{alpha:g}", "align", za, zb, {"alpha": alpha})
    for n, d, t in [(2, 3, 2.0), (5, 7, 2.0), (8, 7, 1.0), (8, 3, 5.0)]:
        za, zb = g.pair(n, d, 0.5)
        w.case(f"uniform_n{n}_d{d}_t{t:g}", "uniform", za, zb, {"t": t})
    za, zb = g.pair(5, 3, 0.5)
    zb[3] = zb[3] / zb[3].norm() * 1e-3
    w.case("uniform_tiny_row", "uniform", za, zb, {"t": 2.0})
    za, zb = g.pair(8, 7, 0.5)
    w.case("align_uniform_n8_d7", "align_uniform", za, zb,
           {"alpha": 2.0, "t": 2.0, "align_weight": 1.0, "uniform_weight": 1.0})

    # ---- 8. Learned temperature as a log logit scale -----------------------------
    w.comment("8. CLIP with tau = exp(-log_scale): grad_log_scale = -tau dL/dtau")
    for n, d, ls in [(5, 7, math.log(1 / 0.07)), (8, 3, math.log(100.0)), (5, 3, 0.0)]:
        za, zb = g.pair(n, d, 0.5)
        w.case(f"clip_log_scale_n{n}_d{d}", "clip_log_scale", za, zb, {"log_scale": ls})
        w.case(f"clip_log_scale_n{n}_d{d}_as_tau", "clip", za, zb, {"temperature": math.exp(-ls)})
        vs, gs = w.values[f"clip_log_scale_n{n}_d{d}"]
        vt, gt = w.values[f"clip_log_scale_n{n}_d{d}_as_tau"]
        tau = math.exp(-ls)
        assert abs(vs - vt) <= 1e-13 * max(1, abs(vt))
        assert abs(gs["log_scale"] + tau * gt["temperature"]) <= 1e-12 * max(1, abs(gs["log_scale"]))

    # ---- Reductions ------------------------------------------------------------------
    w.comment("reductions: each reduce_* case has a partner on the same inputs; see REFERENCE_LOSSES.md")
    red = []

    def pair_cases(tag, cases, tol):
        # cases: list of (name_suffix, loss, params, ids); the first is compared with each other.
        names = []
        for suffix, loss, params, ids in cases:
            name = f"reduce_{tag}_{suffix}"
            w.case(name, loss, za, zb, params, ids=ids)
            names.append(name)
        ref_v, ref_g = w.values[names[0]]
        for other in names[1:]:
            v, gr = w.values[other]
            dv = abs(v - ref_v)
            dg = max(float((gr[k] - ref_g[k]).abs().max()) for k in ("a", "b"))
            dt = abs(gr.get("temperature", 0.0) - ref_g.get("temperature", 0.0))
            red.append((names[0], other, dv, dg, dt))
            assert dv <= tol * max(1, abs(ref_v)) and dg <= tol and dt <= tol * max(1, abs(ref_g["temperature"])), \
                (names[0], other, dv, dg, dt)
            w.comment(f"{other} vs {names[0]}: |dvalue| = {dv:.3g}, max |dgrad| = {dg:.3g}, |d dtau| = {dt:.3g}")

    # (i) tau_plus = 0, beta = 0: NT-Xent, InfoNCE, CLIP.
    za, zb = g.pair(8, 7, 0.5)
    pair_cases("i_ntxent", [("ntxent", "ntxent", {"temperature": 0.2}, None),
                            ("debiased_ntxent", "debiased_ntxent", {"temperature": 0.2, "tau_plus": 0.0, "beta": 0.0}, None)],
               1e-13)
    za, zb = g.pair(5, 3, 0.5)
    pair_cases("i_infonce", [("infonce", "infonce", {"temperature": 0.1}, None),
                             ("debiased_infonce", "debiased_infonce", {"temperature": 0.1, "tau_plus": 0.0, "beta": 0.0}, None)],
               1e-13)
    za, zb = g.pair(8, 3, 0.5)
    pair_cases("i_clip", [("clip", "clip", {"temperature": 0.3}, None),
                          ("debiased_clip", "debiased_clip", {"temperature": 0.3, "tau_plus": 0.0, "beta": 0.0}, None)],
               1e-13)
    # (ii) all-distinct ids: InfoNCE, CLIP, NT-Xent (and SupCon two-view with distinct labels).
    for kind, (n, d, tau) in [("infonce", (5, 7, 0.2)), ("clip", (8, 7, 0.1)), ("ntxent", (8, 3, 0.5))]:
        za, zb = g.pair(n, d, 0.5)
        ids = list(range(10, 10 + n))[::-1]
        pair_cases(f"ii_{kind}", [(kind, kind, {"temperature": tau}, None),
                                  (f"multipos_sum_{kind}", f"multipos_sum_{kind}", {"temperature": tau}, ids),
                                  (f"multipos_mean_{kind}", f"multipos_mean_{kind}", {"temperature": tau}, ids)],
                   1e-13)
    # (iii) eps = 0: CLIP, InfoNCE.
    for kind, (n, d, tau) in [("clip", (8, 7, 0.1)), ("infonce", (5, 3, 0.3))]:
        za, zb = g.pair(n, d, 0.5)
        pair_cases(f"iii_{kind}", [(kind, kind, {"temperature": tau}, None),
                                   (f"smooth_{kind}", f"smooth_{kind}", {"temperature": tau, "label_smoothing": 0.0}, None)],
                   1e-13)
    # (iv) DCLW with large sigma: the weights tend to 1 and DCLW to DCL.
    za, zb = g.pair(8, 7, 0.5)
    tau = 0.1
    w.case("reduce_iv_dcl", "dcl", za, zb, {"temperature": tau})
    for sigma, tag in ((1e6, "1e6"), (1e12, "1e12")):
        name = f"reduce_iv_dclw_sigma{tag}"
        w.case(name, "dclw", za, zb, {"temperature": tau, "sigma": sigma})
        v, gr = w.values[name]
        rv, rg = w.values["reduce_iv_dcl"]
        dv = abs(v - rv)
        dg = max(float((gr[k] - rg[k]).abs().max()) for k in ("a", "b"))
        bound = math.expm1(2 / sigma) / tau
        w.comment(f"{name} vs reduce_iv_dcl: |dvalue| = {dv:.3g} (bound (e^(2/sigma) - 1)/tau = {bound:.3g}), "
                  f"max |dgrad| = {dg:.3g}")
        red.append(("reduce_iv_dcl", name, dv, dg, abs(gr["temperature"] - rg["temperature"])))
        assert dv <= bound + 1e-14
    return red


# ----------------------------------------------------------------------------
# --cross-check: the peers' own code on the same inputs (never needed for the data)
# ----------------------------------------------------------------------------

PEERS = {
    # name: (mirror directory under --mirror, commit)
    "DCL": ("chingyaoc+DCL/repo", "7d6345f6a2e4e2615e63f39966ad0dad3f54f954"),
    "HCL": ("joshr17+HCL/repo", "7b4647fac271c78a2a9d619fe3f2929ecfaf33df"),
    "PML": ("KevinMusgrave+pytorch-metric-learning/repo", "216a792c22b0154d3d3bf008a7317edc7d677e71"),
    "lightly": ("lightly-ai+lightly/repo", "e8d317fc5a87f4387a85a35e689869039ec249ee"),
    "MIL-NCE": ("antoine77340+MIL-NCE_HowTo100M/repo", "b282b1534324b3ac9960eebf89312c9a8a912eec"),
    "SupContrast": ("HobbitLong+SupContrast/repo", "66a8fe53880d6a1084b2e4e0db0a019024d6d41a"),
    "align_uniform": ("SsnL+align_uniform/repo/.git", "e256d476ddbe04873dc15a8f893d4443d1f81671"),
    "open_clip": ("mlfoundations+open_clip/repo", "89fb801f1e6087880e951fc8354b8a2077b79c6d"),
}


@contextlib.contextmanager
def cuda_is_identity():
    # The research scripts call .cuda(); on the CPU make it return the tensor itself.
    saved = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


class _Bar:
    # Stand-in for tqdm: iterate, ignore descriptions.
    def __init__(self, it=None, *a, **k):
        self.it = it

    def __iter__(self):
        return iter(self.it)

    def set_description(self, *a, **k):
        pass


def _stub(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules.setdefault(name, m)
    return sys.modules[name]


class Peers:
    """Loads each peer's file from the fetched bare repository at a pinned commit
    (git archive into a temporary directory) and runs it with stubs for imports
    that only its training scripts need."""

    def __init__(self, mirror):
        self.mirror = mirror
        self.tmp = tempfile.mkdtemp(prefix="contrastive_peers_")
        atexit.register(shutil.rmtree, self.tmp, True)
        self.mods = {}

    def extract(self, peer, path):
        gitdir, commit = PEERS[peer]
        data = subprocess.run(["git", "--git-dir", os.path.join(self.mirror, gitdir), "archive", commit, path],
                              check=True, capture_output=True).stdout
        dest = os.path.join(self.tmp, peer)
        os.makedirs(dest, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest)
        return dest

    def load_file(self, peer, path, modname):
        key = (peer, path)
        if key not in self.mods:
            root = self.extract(peer, path)
            spec = importlib.util.spec_from_file_location(modname, os.path.join(root, path))
            mod = importlib.util.module_from_spec(spec)
            with contextlib.redirect_stdout(io.StringIO()):
                spec.loader.exec_module(mod)
            self.mods[key] = mod
        return self.mods[key]

    # -- individual peers ---------------------------------------------------------
    def dcl_main(self):
        for name in ("utils", "model"):
            _stub(name, Model=None)
        _stub("tqdm", tqdm=_Bar)
        return self.load_file("DCL", "main.py", "chingyaoc_dcl_main")

    def hcl_main(self):
        for name in ("utils", "model", "pandas"):
            _stub(name, Model=None)
        _stub("tqdm", tqdm=_Bar)
        return self.load_file("HCL", "image/main.py", "joshr17_hcl_main")

    def pml(self):
        if "pml" not in self.mods:
            root = self.extract("PML", "src/pytorch_metric_learning")
            _stub("tqdm", tqdm=_Bar)
            _stub("tqdm.autonotebook", tqdm=_Bar)
            _stub("sklearn")
            _stub("sklearn.preprocessing", normalize=None, StandardScaler=None)
            sys.path.insert(0, os.path.join(root, "src"))
            import pytorch_metric_learning.losses as losses  # noqa: E402
            self.mods["pml"] = losses
        return self.mods["pml"]

    def lightly_dcl(self):
        # its weight function copies a tensor with torch.tensor(): a UserWarning, harmless
        warnings.filterwarnings("ignore", message="To copy construct from a tensor")
        pkg = _stub("lightly")
        pkg.__path__ = []
        utils = _stub("lightly.utils")
        utils.__path__ = []
        dist = _stub("lightly.utils.dist", world_size=lambda: 1)
        utils.dist = dist
        pkg.utils = utils
        return self.load_file("lightly", "lightly/loss/dcl_loss.py", "lightly_dcl_loss")

    def milnce(self):
        return self.load_file("MIL-NCE", "loss.py", "milnce_loss")

    def supcontrast(self):
        return self.load_file("SupContrast", "losses.py", "supcontrast_losses")

    def align_uniform(self):
        return self.load_file("align_uniform", "align_uniform/__init__.py", "ssnl_align_uniform")

    def open_clip_loss(self):
        if not hasattr(torch, "compiler"):  # torch 1.13 has no torch.compiler.disable (a no-op here)
            torch.compiler = types.SimpleNamespace(disable=lambda f=None, **k: f if f is not None else (lambda g: g))
        return self.load_file("open_clip", "src/open_clip/loss.py", "open_clip_loss")


def run_leaves(fn, za, zb, scalars):
    """Calls fn(a, b, tensors) on fresh leaves; fn returns the loss tensor (or a
    float after calling backward itself).  Returns value and gradients."""
    a = za.clone().requires_grad_(True)
    b = None if zb is None else zb.clone().requires_grad_(True)
    ts = {k: torch.tensor(float(v), requires_grad=True) for k, v in scalars.items()}
    out = fn(a, b, ts)
    if torch.is_tensor(out):
        out.backward()
        out = float(out)
    grads = {"a": a.grad}
    if b is not None:
        grads["b"] = b.grad
    for k, t in ts.items():
        grads[k] = 0.0 if t.grad is None else float(t.grad)
    return out, grads


class CrossCheck:
    def __init__(self, mirror):
        self.peers = Peers(mirror)
        self.rows = []  # (case, peer, |dvalue|, max |dgrad|, scalar grads compared)

    def compare(self, name, peer, value, grads, pv, pg, keys):
        dv = abs(value - pv)
        dg = max(float((grads[k] - pg[k]).abs().max()) for k in ("a", "b") if k in grads and k in pg)
        scale_v = max(1.0, abs(value))
        scale_g = max(1.0, max(float(grads[k].abs().max()) for k in ("a", "b") if k in grads))
        ds = 0.0
        for k in keys:
            ds = max(ds, abs(grads[k] - pg[k]) / max(1.0, abs(grads[k])))
        ok = dv <= 1e-12 * scale_v and dg <= 1e-12 * scale_g and ds <= 1e-12
        self.rows.append((name, peer, dv, dg, ",".join(keys) if keys else "-", ds, ok))
        assert ok, (name, peer, value, pv, dv, dg, ds)

    def check(self, name, loss, za, zb, params, ids, labels, value, grads):
        p = self.peers
        tau = params.get("temperature")
        if loss == "debiased_ntxent" and ids is None:
            n = za.shape[0]
            if float(params["beta"]) == 0.0:
                mod = p.dcl_main()
                mod.batch_size, mod.epoch, mod.epochs = n, 1, 1

                class Net:
                    def train(self):
                        pass

                    def __call__(self, x):  # stands in for Model.forward's last line
                        return x, F.normalize(x, dim=-1)

                class Opt:
                    def zero_grad(self):
                        pass

                    def step(self):
                        pass

                def fn(a, b, ts):
                    with cuda_is_identity():
                        return mod.train(Net(), [(a, b, None)], Opt(), ts["temperature"], True,
                                         float(params["tau_plus"]))
                pv, pg = run_leaves(fn, za, zb, {"temperature": tau})
                self.compare(name, "DCL main.py train()", value, grads, pv, pg, ["temperature"])
            mod = p.hcl_main()

            def fn(a, b, ts):
                mod.temperature = ts["temperature"]
                mod.device = torch.device("cpu")
                return mod.criterion(F.normalize(a, dim=-1), F.normalize(b, dim=-1), float(params["tau_plus"]),
                                     a.shape[0], float(params["beta"]), "hard")
            pv, pg = run_leaves(fn, za, zb, {"temperature": tau})
            self.compare(name, "HCL image/main.py criterion(hard)", value, grads, pv, pg, ["temperature"])
        elif loss == "supcon_single":
            losses = p.pml()

            def fn(a, b, ts):
                return losses.SupConLoss(temperature=ts["temperature"])(a, torch.tensor(labels))
            pv, pg = run_leaves(fn, za, None, {"temperature": tau})
            self.compare(name, "PML SupConLoss", value, grads, pv, pg, ["temperature"])
        elif loss in ("infonce", "clip", "ntxent") and ids is None:
            n = za.shape[0]
            if loss == "clip":
                oc = p.open_clip_loss()

                def fn(a, b, ts):
                    return oc.ClipLoss()(F.normalize(a, dim=1), F.normalize(b, dim=1), 1.0 / ts["temperature"])
                peer = "open_clip ClipLoss(logit_scale=1/tau)"
            elif loss == "ntxent":
                sc = p.supcontrast()

                def fn(a, b, ts):
                    feats = torch.stack([F.normalize(a, dim=1), F.normalize(b, dim=1)], dim=1)
                    return sc.SupConLoss(temperature=ts["temperature"], base_temperature=ts["temperature"])(feats)
                peer = "SupContrast SupConLoss (SimCLR mode)"
            else:
                losses = p.pml()
                y = torch.arange(n)

                def fn(a, b, ts):
                    return losses.SupConLoss(temperature=ts["temperature"])(a, y, ref_emb=b, ref_labels=y.clone())
                peer = "PML SupConLoss(ref_emb), distinct labels"
            pv, pg = run_leaves(fn, za, zb, {"temperature": tau})
            self.compare(name, peer, value, grads, pv, pg, ["temperature"])
        elif loss in ("dclw", "dcl"):
            mod = p.lightly_dcl()
            if ids is not None:
                return  # lightly has no id mask
            if loss == "dclw":
                def fn(a, b, ts):
                    return mod.DCLWLoss(temperature=ts["temperature"], sigma=ts["sigma"])(a, b)
                pv, pg = run_leaves(fn, za, zb, {"temperature": tau, "sigma": params["sigma"]})
                assert pg["sigma"] == 0.0
                self.compare(name, "lightly DCLWLoss", value, grads, pv, pg, ["temperature"])
            else:
                def fn(a, b, ts):
                    return mod.DCLLoss(temperature=ts["temperature"])(a, b)
                pv, pg = run_leaves(fn, za, zb, {"temperature": tau})
                self.compare(name, "lightly DCLLoss", value, grads, pv, pg, ["temperature"])
        elif loss.startswith("multipos_mean"):
            losses = p.pml()
            t_ids = torch.tensor(ids)
            if loss.endswith("ntxent"):
                def fn(a, b, ts):
                    return losses.SupConLoss(temperature=ts["temperature"])(torch.cat([a, b]), torch.cat([t_ids, t_ids]))
                pv, pg = run_leaves(fn, za, zb, {"temperature": tau})
                self.compare(name, "PML SupConLoss on cat(a, b)", value, grads, pv, pg, ["temperature"])
                sc = p.supcontrast()

                def fn2(a, b, ts):
                    feats = torch.stack([F.normalize(a, dim=1), F.normalize(b, dim=1)], dim=1)
                    return sc.SupConLoss(temperature=ts["temperature"], base_temperature=ts["temperature"])(feats, t_ids)
                pv, pg = run_leaves(fn2, za, zb, {"temperature": tau})
                self.compare(name, "SupContrast SupConLoss(all)", value, grads, pv, pg, ["temperature"])
            else:
                def one(x, y, t):
                    # ref_labels a distinct tensor: PML keeps the diagonal (own view) as a positive
                    return losses.SupConLoss(temperature=t)(x, t_ids, ref_emb=y, ref_labels=t_ids.clone())

                def fn(a, b, ts):
                    if loss.endswith("infonce"):
                        return one(a, b, ts["temperature"])
                    return 0.5 * (one(a, b, ts["temperature"]) + one(b, a, ts["temperature"]))
                pv, pg = run_leaves(fn, za, zb, {"temperature": tau})
                self.compare(name, "PML SupConLoss(ref_emb)", value, grads, pv, pg, ["temperature"])
        elif loss.startswith("smooth_"):
            kind = loss[len("smooth_"):]
            eps = float(params["label_smoothing"])

            def fn(a, b, ts):
                u, v = F.normalize(a, dim=1), F.normalize(b, dim=1)
                t = ts["temperature"]
                n = u.shape[0]
                if ids is not None:
                    # per row, torch's cross entropy over the logits the anchor keeps
                    same = same_ids(ids, n)
                    terms = []
                    for x, y in ((u, v), (v, u)) if kind == "clip" else ((u, v),):
                        for i in range(n):
                            keep = ~same[i] | (torch.arange(n) == i)
                            row = (x[i] @ y[keep].T / t).reshape(1, -1)
                            target = torch.tensor([int(torch.nonzero(torch.nonzero(keep).flatten() == i))])
                            terms.append(F.cross_entropy(row, target, label_smoothing=eps))
                    return torch.stack(terms).mean()
                if kind == "ntxent":
                    wv = torch.cat([u, v])
                    logits = wv @ wv.T / t
                    logits = logits[~eye(2 * n)].reshape(2 * n, 2 * n - 1)  # self removed, as lightly's NTXentLoss
                    target = torch.cat([torch.arange(n - 1, 2 * n - 1), torch.arange(0, n)])
                    return F.cross_entropy(logits, target, label_smoothing=eps)
                logits = u @ v.T / t
                target = torch.arange(n)
                if kind == "infonce":
                    return F.cross_entropy(logits, target, label_smoothing=eps)
                return 0.5 * (F.cross_entropy(logits, target, label_smoothing=eps)
                              + F.cross_entropy(logits.T, target, label_smoothing=eps))
            pv, pg = run_leaves(fn, za, zb, {"temperature": tau})
            self.compare(name, "torch cross_entropy(label_smoothing)", value, grads, pv, pg, ["temperature"])
        elif loss in ("align", "uniform", "align_uniform"):
            au = p.align_uniform()

            def fn(a, b, ts):
                u, v = F.normalize(a, dim=1), F.normalize(b, dim=1)
                if loss == "align":
                    return au.align_loss(u, v, alpha=ts["alpha"])
                unif = (au.uniform_loss(u, t=ts["t"]) + au.uniform_loss(v, t=ts["t"])) / 2
                if loss == "uniform":
                    return unif
                return (au.align_loss(u, v, alpha=ts["alpha"]) * float(params["align_weight"])
                        + unif * float(params["uniform_weight"]))
            keys = [k for k in ("alpha", "t") if k in params]
            pv, pg = run_leaves(fn, za, zb, {k: params[k] for k in keys})
            self.compare(name, "align_uniform align_loss/uniform_loss", value, grads, pv, pg, keys)
        elif loss == "clip_log_scale":
            oc = p.open_clip_loss()

            def fn(a, b, ts):
                return oc.ClipLoss()(F.normalize(a, dim=1), F.normalize(b, dim=1), ts["log_scale"].exp())
            pv, pg = run_leaves(fn, za, zb, {"log_scale": params["log_scale"]})
            self.compare(name, "open_clip ClipLoss(logit_scale=exp)", value, grads, pv, pg, ["log_scale"])

    def milnce_transcription(self, g):
        """MIL-NCE's own loss (joint denominator over both directions, positives
        counted twice) against our transcription of it, on B videos x K captions."""
        mod = self.peers.milnce()
        for B, K, d in [(3, 1, 4), (4, 3, 5), (6, 2, 3)]:
            video = torch.randn(B, d, generator=g.gen)
            text = torch.randn(B * K, d, generator=g.gen)

            def ours(vid, txt):
                x = (vid @ txt.T).reshape(B, B, K)  # x[i, j, k] = video i . caption k of clip j
                num = torch.logsumexp(x[torch.arange(B), torch.arange(B)], dim=1)
                row = x.reshape(B, B * K)  # video i against every caption
                col = x.permute(1, 0, 2).reshape(B, B * K)  # every video against the captions of i
                den = torch.logsumexp(torch.cat([row, col], 1), dim=1)
                return (den - num).mean()

            def theirs(vid, txt):
                with cuda_is_identity():
                    return mod.MILNCELoss()(vid, txt)
            pv, pg = run_leaves(lambda a, b, ts: theirs(a, b), video, text, {})
            ov, og = run_leaves(lambda a, b, ts: ours(a, b), video, text, {})
            self.compare(f"milnce_joint_B{B}_K{K}", "MIL-NCE MILNCELoss (transcription)", ov, og, pv, pg, [])

    def report(self, out):
        out.write("cross-check against the peers' code (float64):\n")
        for name, peer, dv, dg, keys, ds, ok in self.rows:
            out.write(f"  {name:40s} {peer:40s} |dvalue| {dv:.1e}  max|dgrad| {dg:.1e}  "
                      f"scalars {keys} rel {ds:.1e}  {'ok' if ok else 'FAIL'}\n")
        out.write(f"{len(self.rows)} comparisons, all within 1e-12\n")


def log_scale_example(out):
    """Item 8's numeric example: open_clip's parameterisation and the chain rule."""
    g = Inputs(7)
    za, zb = g.pair(4, 3, 0.5)
    ls = math.log(1 / 0.07)
    value, grads, _, _ = evaluate("clip_log_scale", za, zb, {"log_scale": ls})
    tau = math.exp(-ls)
    _, gt, _, _ = evaluate("clip", za, zb, {"temperature": tau})
    dtau = gt["temperature"]
    out.write("# log-scale example (n = 4, d = 3, inputs from Inputs(7).pair(4, 3, 0.5)):\n")
    out.write(f"#   log_scale = ln(1/0.07) = {ls!r}; t = exp(log_scale) = {math.exp(ls)!r}; tau = 1/t = {tau!r}\n")
    out.write(f"#   L = {value!r}; dL/dtau = {dtau!r}; dL/dt = -tau^2 dL/dtau = {-tau * tau * dtau!r}\n")
    out.write(f"#   dL/dlog_scale = t dL/dt = -tau dL/dtau = {-tau * dtau!r}; autograd: {grads['log_scale']!r}\n")
    for raw in (4.7, -0.1, 3.0):
        out.write(f"#   after a step log_scale = {raw}: clamp to [0, ln 100] gives {min(max(raw, 0.0), math.log(100.0))!r}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "more_reference.txt"))
    ap.add_argument("--cross-check", action="store_true",
                    help="also run the peers' code on every case (needs the fetched repositories)")
    ap.add_argument("--mirror", default="/work/.mirror", help="directory of the fetched bare repositories")
    args = ap.parse_args()
    cross = CrossCheck(args.mirror) if args.cross_check else None
    buf = io.StringIO()
    w = Writer(buf, cross)
    red = write_all(w, cross)
    log_scale_example(buf)
    with open(args.out, "w") as f:
        f.write(buf.getvalue())
    sys.stderr.write(f"wrote {len(w.cases)} cases to {args.out}\n")
    for a, b, dv, dg, dt in red:
        sys.stderr.write(f"reduction {b} vs {a}: |dvalue| {dv:.1e}, max|dgrad| {dg:.1e}, |d dL/dtau| {dt:.1e}\n")
    if cross is not None:
        cross.milnce_transcription(Inputs(99))
        cross.report(sys.stderr)


if __name__ == "__main__":
    main()
