#!/usr/bin/python3
"""Writes the seed corpus of fuzz_losses.cpp (run from anywhere; the bytes
follow the order in which fuzz_losses.cpp's decode() reads them).  For every
loss kind, float and double, inputs with valid shapes, sensible parameters
and moderate entries, so the fuzzer starts from calls that succeed (and the
replay test runs the central-difference check on the double ones); one in
four with instance ids or weights; plus five inputs of random bytes."""
import math
import os
import random

KINDS = 15
here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus")
os.makedirs(out, exist_ok=True)
rng = random.Random(2026)


def u16(x):
    x = max(0, min(65535, int(round(x))))
    return [x & 255, x >> 8]


def between(lo, hi, x):  # Reader::between: a byte that is not 0 mod 8, then u16
    return [1] + u16((x - lo) / (hi - lo) * 65535)


def positive(x, lo=0.005, hi=5.0):
    return [1] + u16((math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)) * 65535)


def seed(kind, as_float, n, d, variant):
    b = [1 if as_float else 0, kind, n, d, 3, 1, variant % 5]        # flag, kind, n, d, nk, k
    for x in (1.0, 1.0, 1.0, 2.0):                                   # p[0..3]
        b += between(-0.5, 2.5, x)
    b += positive(0.3 + 0.2 * variant)                               # p[0]: the temperature
    b += [(variant * 3 % 8) | ((variant & 1) << 3)]                  # engine: tile, threads, budget
    b += [(1 if variant == 1 else 0) | (4 if variant == 2 else 0)]  # call: ids, weights
    b += [1] + [rng.randrange(5) for _ in range(n)]                  # ids
    b += [1] + [rng.randrange(4) for _ in range(n)]                  # labels
    b += [1]                                                         # weights: 2n of them
    for _ in range(2 * n):
        b += between(0.0, 3.0, 0.5 + rng.random())
    rows = 2 * n + 3 * (n if kind == 14 else 1)                      # za, zb, negative keys
    for _ in range(rows * d):
        b += [4 + rng.randrange(12)] + u16(rng.randrange(65536))
    return bytes(b)


count = 0
for kind in range(KINDS):
    for as_float in (False, True):
        for variant in range(3):
            n = 2 + (kind + variant) % 3
            d = 1 + (variant + kind) % 3
            with open(os.path.join(out, f"seed-{kind:02d}-{'f' if as_float else 'd'}{variant}"), "wb") as f:
                f.write(seed(kind, as_float, n, d, variant))
            count += 1
for k in range(5):
    with open(os.path.join(out, f"random-{k}"), "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(rng.randrange(16, 600))))
    count += 1
print(f"{count} seeds in {out}")
