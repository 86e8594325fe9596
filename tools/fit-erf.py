#!/usr/bin/env python3
"""Fits the polynomial coefficients of the vectorised erf in
Sources/SPPKernels/VectorMath.swift (run once; prints Swift literals and the error).

|x| < 1:      erf(x) = x · P(x²)
1 ≤ |x| < 4:  erf(x) = 1 − e^{−x²} · Q(|x| − 2.5)     (Q fits erfc(x)·e^{x²}, smooth there)
|x| ≥ 4:      erf(x) = ±1 (float32 rounds erf(3.92…) to 1)
Least squares on Chebyshev nodes, in relative error, in float64 (numpy + math only).
"""
import math
import numpy as np


def fit(xs, target, basis, weight):
    a = np.stack([b(xs) for b in basis], axis=1) * weight[:, None]
    c, *_ = np.linalg.lstsq(a, target * weight, rcond=None)
    return c


def cheb(lo, hi, n):
    k = np.arange(n)
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / n)


erf = np.vectorize(math.erf)
erfc = np.vectorize(math.erfc)

xs = cheb(0, 1, 400)
p_deg = 7
p = fit(xs, erf(xs) / np.where(xs == 0, 1, xs) * (xs != 0) + (xs == 0) * 2 / math.sqrt(math.pi),
        [lambda x, k=k: x ** (2 * k) for k in range(p_deg)], 1 / erf(np.maximum(xs, 1e-3)) * xs)
xs = cheb(1, 4, 600)
q_deg = 12
q = fit(xs, erfc(xs) * np.exp(xs * xs), [lambda x, k=k: (x - 2.5) ** k for k in range(q_deg)], 1 / (erfc(xs) * np.exp(xs * xs)))


def approx(x):
    x = np.float32(x)
    ax = abs(x)
    if ax < 1:
        s = np.float32(0)
        for c in reversed(p):
            s = np.float32(s * x * x + np.float32(c))
        return np.float32(x * s)
    if ax >= 4:
        return np.float32(math.copysign(1, x))
    t = np.float32(ax - 2.5)
    s = np.float32(0)
    for c in reversed(q):
        s = np.float32(s * t + np.float32(c))
    e = np.float32(math.exp(-float(np.float32(ax * ax))))
    return np.float32(math.copysign(1, x)) * np.float32(1 - e * s)


grid = np.linspace(-6, 6, 200001)
err = max(abs(float(approx(v)) - math.erf(float(np.float32(v)))) for v in grid)
print("// P (|x| < 1), constant term first:", ", ".join(f"{c:.10e}" for c in p))
print("// Q (1 ≤ |x| < 4, powers of |x| − 2.5), constant term first:", ", ".join(f"{c:.10e}" for c in q))
print(f"// max abs error on [-6, 6] (float32 evaluation): {err:.2e}")
