#!/usr/bin/python3
"""Reference values and gradients for the InfoNCE-based family, by PyTorch autograd.

Independent of the C++ code: every loss is written here the way its peer library
computes it (materialised logits, cross entropy / logsumexp, autograd for every
gradient), in float64.  Run with Debian's python3-torch:

    /usr/bin/python3 tests/data/make_reference.py > tests/data/infonce_family_reference.txt

CI never runs this; it reads the committed output.
"""
import sys

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def normalize(z):
    return F.normalize(z, dim=1, eps=1e-12)


def same_id(ids, n):
    # [n x n] True where two instances share an id and are different rows.
    if ids is None:
        return torch.zeros(n, n, dtype=torch.bool)
    t = torch.tensor(ids)
    return (t.reshape(-1, 1) == t.reshape(1, -1)) & ~torch.eye(n, dtype=torch.bool)


def ntxent_lightly(za, zb, tau, ids=None):
    # SimCLR as lightly's NTXentLoss: 2n anchors, logits against the 2n-1 others,
    # cross entropy with the other view as target, mean over 2n anchors.
    # With ids: other pairs of equal ids are removed (false-negative mask).
    n = za.shape[0]
    w = torch.cat([normalize(za), normalize(zb)], 0)
    logits = w @ w.T / tau
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    logits = logits.masked_fill(same_id(ids, n).repeat(2, 2), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(logits, target)


def ntxent_pml(za, zb, tau):
    # pytorch-metric-learning's NTXentLoss over SelfSupervisedLoss(symmetric=True):
    # embeddings cat(a, b), labels cat(arange, arange); per positive pair (anchor,
    # positive): -log(e^{s_ap} / (e^{s_ap} + sum over different-label e^{s_an})),
    # mean over all 2n positive pairs.
    n = za.shape[0]
    w = torch.cat([normalize(za), normalize(zb)], 0)
    labels = torch.cat([torch.arange(n), torch.arange(n)])
    sim = w @ w.T / tau
    losses = []
    for a in range(2 * n):
        p = (a + n) % (2 * n)
        neg = labels != labels[a]
        denom = torch.logsumexp(torch.cat([sim[a, p].reshape(1), sim[a][neg]]), 0)
        losses.append(denom - sim[a, p])
    return torch.stack(losses).mean()


def infonce_oneway(za, zb, tau, ids=None):
    # info-nce-pytorch InfoNCE(temperature=tau) without negative keys:
    # logits = q @ k^T, labels = arange(n), cross entropy, mean over n queries.
    q, k = normalize(za), normalize(zb)
    logits = (q @ k.T / tau).masked_fill(same_id(ids, za.shape[0]), float("-inf"))
    return F.cross_entropy(logits, torch.arange(za.shape[0]))


def clip_openclip(za, zb, tau, ids=None):
    # open_clip ClipLoss on normalised features, logit_scale = 1/tau:
    # (CE(image logits) + CE(text logits)) / 2.
    u, v = normalize(za), normalize(zb)
    logits = ((1.0 / tau) * u @ v.T).masked_fill(same_id(ids, za.shape[0]), float("-inf"))
    labels = torch.arange(za.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def dcl_lightly(za, zb, tau, ids=None):
    # lightly's DCLLoss (no weight function): for each direction, the negative
    # term is one logsumexp over the union of the n-1 within-view and n-1
    # cross-view negatives, the positive term is -s_ii/tau; mean, then the
    # average of the two directions.
    def one(x, y):
        n = x.shape[0]
        s_xx = x @ x.T / tau
        s_xy = x @ y.T / tau
        off = ~torch.eye(n, dtype=torch.bool)
        mask = same_id(ids, n)
        s_xx, s_xy = s_xx.masked_fill(mask, float("-inf")), s_xy.masked_fill(mask, float("-inf"))
        neg = torch.cat([s_xx[off].view(n, n - 1), s_xy[off].view(n, n - 1)], 1)
        return (-s_xy.diag() + torch.logsumexp(neg, 1)).mean()

    u, v = normalize(za), normalize(zb)
    return 0.5 * (one(u, v) + one(v, u))


def dhel(za, zb, tau, ids=None):
    # DHEL (paper notes, Def. 3.1 with psi = log, c1 = 0, c2 = 1), symmetric:
    # -s_ii/tau + logsumexp_{j != i} u_i.u_j / tau, and the same for v.
    def one(x, y):
        n = x.shape[0]
        s_xx = (x @ x.T / tau).masked_fill(same_id(ids, n), float("-inf"))
        off = ~torch.eye(n, dtype=torch.bool)
        return (-(x * y).sum(1) / tau + torch.logsumexp(s_xx[off].view(n, n - 1), 1)).mean()

    u, v = normalize(za), normalize(zb)
    return 0.5 * (one(u, v) + one(v, u))


def supcon_pml(za, zb, tau, labels):
    # pytorch-metric-learning's SupConLoss on cat(za, zb) with labels cat(y, y):
    # per anchor, log-softmax over all non-self samples, averaged over the
    # anchor's positives (same label, not itself); mean over anchors with a
    # positive.
    n = za.shape[0]
    w = torch.cat([normalize(za), normalize(zb)], 0)
    y = torch.tensor(labels).repeat(2)
    sim = w @ w.T / tau
    self_mask = torch.eye(2 * n, dtype=torch.bool)
    pos = (y.reshape(-1, 1) == y.reshape(1, -1)) & ~self_mask
    log_prob = sim - torch.logsumexp(sim.masked_fill(self_mask, float("-inf")), 1, keepdim=True)
    per_anchor = -(log_prob * pos).sum(1) / pos.sum(1)
    return per_anchor[pos.sum(1) > 0].mean()


LOSSES = {
    "ntxent": ntxent_lightly,
    "infonce": infonce_oneway,
    "clip": clip_openclip,
    "dcl": dcl_lightly,
    "dhel": dhel,
}


def uneven(n, d, gen):
    # Raw embeddings with row norms spread over three orders of magnitude.
    z = torch.randn(n, d, generator=gen)
    scale = torch.exp(torch.empty(n, 1).uniform_(-3.0, 3.0, generator=gen))
    return z * scale


def emit(f, name, loss, tau, za, zb, ids=None):
    ta = torch.tensor(za.tolist(), requires_grad=True)
    tb = torch.tensor(zb.tolist(), requires_grad=True)
    tt = torch.tensor(tau, requires_grad=True)
    value = LOSSES[loss](ta, tb, tt, ids)
    value.backward()
    n, d = za.shape
    fmt = lambda t: " ".join(repr(float(x)) for x in t.reshape(-1).tolist())
    f.write(f"case {name} {loss} {tau!r} {n} {d}\n")
    if ids is not None:
        f.write("ids " + " ".join(str(i) for i in ids) + "\n")
    f.write(f"za {fmt(za)}\n")
    f.write(f"zb {fmt(zb)}\n")
    f.write(f"value {float(value)!r}\n")
    f.write(f"grad_a {fmt(ta.grad)}\n")
    f.write(f"grad_b {fmt(tb.grad)}\n")
    f.write(f"grad_tau {float(tt.grad)!r}\n")


def main():
    gen = torch.Generator().manual_seed(20261123)
    out = sys.stdout
    out.write("# generated by tests/data/make_reference.py with torch %s; float64 autograd\n" % torch.__version__)
    shapes = [(2, 1, 0.5), (3, 2, 0.1), (5, 4, 0.5), (8, 16, 0.07), (17, 7, 0.2), (33, 12, 1.3)]
    for loss in LOSSES:
        for k, (n, d, tau) in enumerate(shapes):
            za, zb = uneven(n, d, gen), uneven(n, d, gen)
            emit(out, f"{loss}_{k}", loss, tau, za, zb)
    # A zero row (norm clamped at 1e-12) and a repeated instance.
    za, zb = uneven(6, 5, gen), uneven(6, 5, gen)
    za[3] = 0.0
    zb[1] = zb[4]
    for loss in LOSSES:
        emit(out, f"{loss}_degenerate", loss, 0.3, za, zb)

    # False-negative masks: duplicated instances share an id.
    za, zb = uneven(10, 6, gen), uneven(10, 6, gen)
    ids = [0, 1, 2, 0, 3, 4, 1, 5, 0, 6]
    for loss in LOSSES:
        emit(out, f"{loss}_ids", loss, 0.2, za, zb, ids)

    # SupCon with several positives per anchor, and with distinct labels.
    LOSSES["supcon"] = supcon_pml
    for k, (n, d, tau) in enumerate([(3, 2, 0.1), (8, 5, 0.1), (20, 9, 0.3)]):
        za, zb = uneven(n, d, gen), uneven(n, d, gen)
        labels = [int(x) for x in torch.randint(0, max(2, n // 3), (n,), generator=gen)]
        emit(out, f"supcon_{k}", "supcon", tau, za, zb, labels)
    za, zb = uneven(6, 4, gen), uneven(6, 4, gen)
    emit(out, "supcon_distinct", "supcon", 0.5, za, zb, [5, 4, 3, 2, 1, 0])

    # Cross-check of the two NT-Xent formulations (they must agree).
    za, zb = uneven(9, 6, gen), uneven(9, 6, gen)
    a, b = ntxent_lightly(za, zb, 0.25), ntxent_pml(za, zb, 0.25)
    assert abs(float(a - b)) < 1e-12 * abs(float(a)), (float(a), float(b))


if __name__ == "__main__":
    main()
