"""Plots the samples of a soak run (scripts/soak): one PNG, one panel per
measure, one line per node. Usage: soak-plot.py samples.csv out.png title"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

samples, out, title = sys.argv[1], sys.argv[2], sys.argv[3]
rows = list(csv.DictReader(open(samples)))
nodes = sorted({r["node"] for r in rows})
panels = [
    ("rss_kib", "RSS (MiB)", 1 / 1024),
    ("fds", "open file descriptors", 1),
    ("threads", "threads", 1),
    ("connections", "WebSocket connections", 1),
    ("tasks", "tracked tasks", 1),
    ("outbound_frames", "frames in outbound queues", 1),
]
fig, axes = plt.subplots(4, 2, figsize=(12, 12), sharex=True)
for ax, (key, label, scale) in zip(axes.flat, panels):
    for node in nodes:
        pts = [(float(r["elapsed_s"]) / 60, float(r[key]) * scale) for r in rows if r["node"] == node]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"node {node}")
    ax.set_title(label)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
first = [r for r in rows if r["node"] == nodes[0]]
minutes = [float(r["elapsed_s"]) / 60 for r in first]
for ax, key, label in [(axes.flat[6], "acked", "acknowledged actions (cumulative)"),
                       (axes.flat[7], "failed", "failed actions (cumulative)")]:
    ax.plot(minutes, [int(r[key]) for r in first], color="black")
    if key == "acked":
        ax.plot(minutes, [int(r["refused"]) for r in first], color="gray", label="refused by the rules")
        ax.legend()
    ax.set_title(label)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_xlabel("minutes")
axes.flat[0].legend()
fig.suptitle(title)
fig.tight_layout()
fig.savefig(out, dpi=90)
print(f"soak: plot in {out}")
