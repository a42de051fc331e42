#!/usr/bin/env python3
"""Draws a run of simclr_fashion_mnist as one PNG with three panels.

  python3 examples/simclr_fashion_mnist/plot.py DIR [-o OUT.png]

DIR holds what the example wrote (epochs.csv, steps.csv, embedding.csv,
probes.csv, run.txt); the picture goes to DIR/simclr_fashion_mnist.png unless -o says
otherwise.  Needs only matplotlib (Debian: apt-get install python3-matplotlib).

Panels: the loss (of the training batches, and per epoch on the fixed
test view pairs); the cosine similarity of positive and of negative pairs at the head
(mean and +-1 standard deviation); a 2-D PCA of the trained representation
of 2000 test images, coloured by class.
"""
import argparse
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="the directory the example wrote its CSV files to")
    ap.add_argument("-o", "--out", help="PNG to write (default DIR/simclr_fashion_mnist.png)")
    args = ap.parse_args()
    try:
        epochs = read_csv(os.path.join(args.dir, "epochs.csv"))
        steps = read_csv(os.path.join(args.dir, "steps.csv"))
        emb = read_csv(os.path.join(args.dir, "embedding.csv"))
        probes = read_csv(os.path.join(args.dir, "probes.csv"))
        with open(os.path.join(args.dir, "run.txt")) as f:
            run = [line.rstrip("\n") for line in f]
    except OSError as e:
        sys.exit(f"plot.py: {e} (run simclr_fashion_mnist first; it prints the directory)")
    explained = [float(v) for v in run[1].split(",")[1:3]]

    fig, ax = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw={"width_ratios": [1, 1, 1.25]})

    e = [int(r["epoch"]) for r in epochs]
    ax[0].plot([float(r["epoch"]) for r in steps], [float(r["train_loss"]) for r in steps], "-", color="tab:orange",
               label="training batches")
    ax[0].plot(e, [float(r["pair_loss"]) for r in epochs], "o-", color="tab:blue", label="fixed test view pairs")
    ax[0].set_xlabel("epoch (0 = untrained)")
    ax[0].set_ylabel("NT-Xent loss" if "loss=ntxent" in run[0] else "loss")
    ax[0].set_title("loss")
    ax[0].set_xticks(e)
    ax[0].legend()
    ax[0].grid(alpha=0.3)

    for key, label, colour in (("pos", "positive pairs", "tab:green"), ("neg", "cross-view negatives", "tab:red")):
        mean = [float(r[key + "_mean"]) for r in epochs]
        sd = [float(r[key + "_sd"]) for r in epochs]
        ax[1].plot(e, mean, "o-", color=colour, label=label + " (mean)")
        ax[1].fill_between(e, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                           color=colour, alpha=0.2, label=label + " (±1 sd)")
    ax[1].axhline(0, color="grey", lw=0.8)
    ax[1].set_xlabel("epoch (0 = untrained)")
    ax[1].set_ylabel("cosine similarity at the head")
    ax[1].set_title("similarities of 1000 fixed test view pairs")
    ax[1].set_xticks(e)
    ax[1].set_ylim(-1, 1.05)
    ax[1].legend(loc="lower left", fontsize=8)
    ax[1].grid(alpha=0.3)

    cmap = plt.get_cmap("tab10")
    for c, name in enumerate(CLASSES):
        pts = [(float(r["pc1"]), float(r["pc2"])) for r in emb if int(r["label"]) == c]
        ax[2].scatter([p[0] for p in pts], [p[1] for p in pts], s=4, color=cmap(c), alpha=0.7, label=name,
                      rasterized=True)
    ax[2].set_xlabel(f"PC 1 ({100 * explained[0]:.0f} % of the variance)")
    ax[2].set_ylabel(f"PC 2 ({100 * explained[1]:.0f} %)")
    ax[2].set_title(f"trained representation of {len(emb)} test images (PCA)")
    ax[2].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=3, frameon=False)
    ax[2].set_xticks([])
    ax[2].set_yticks([])

    rows = {r["representation"]: r for r in probes}
    line = "probes (logistic / ridge / kNN):  " + "   ".join(
        f"{name} {float(rows[name]['logreg']):.3f} / {float(rows[name]['ridge']):.3f} / {float(rows[name]['knn']):.3f}"
        for name in ("raw pixels", "random encoder", "trained encoder"))
    fig.suptitle(run[0].replace("SimCLR on Fashion-MNIST: ", "SimCLR on Fashion-MNIST   ") + "\n" + line, fontsize=10)
    fig.tight_layout()
    out = args.out or os.path.join(args.dir, "simclr_fashion_mnist.png")
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
