#!/usr/bin/env python3
"""Plots the CSV written by tools/keep-curve: recall@1 and latency against keep.

    python3 tools/plot-keep-curve.py docs/keep-curve.csv docs/keep-curve.png
Needs matplotlib (dev machines only).
"""
import csv
import sys
from collections import defaultdict

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = defaultdict(list)
with open(sys.argv[1]) as f:
    for r in csv.DictReader(f):
        rows[r["method"]].append(r)

fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
for method, rs in rows.items():
    rs.sort(key=lambda r: float(r["keep"]))
    keep = [float(r["keep"]) for r in rs]
    a.plot(keep, [float(r["recall_at_1"]) for r in rs], marker="o", label=method)
    b.plot(keep, [float(r["median_ms"]) for r in rs], marker="o", label=method)
a.axhline(0.764, color="grey", linestyle=":", label="dense")
a.axhline(0.764 * 0.99, color="grey", linestyle="--", linewidth=0.7, label="99% / 95% of dense")
a.axhline(0.764 * 0.95, color="grey", linestyle="--", linewidth=0.7)
a.set_xlabel("keep (fraction of prunable parameters)")
a.set_ylabel("recall@1, debdesc eval")
a.legend()
b.set_xlabel("keep")
b.set_ylabel("latency, ms (seq 128, batch 1, 1 thread)")
b.legend()
fig.suptitle("all-MiniLM-L6-v2 pruned with spp: one file, any keep ratio")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print("wrote", sys.argv[2])
