"""Summarise bundle training logs: best validation Dice, wall time, loss curves (PNG).

python scripts/summarize_runs.py --runs runs --names l8_cps l8_sup ... --plot docs/real_acdc_curves.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ITER = re.compile(r"Epoch: (\d+)/\d+, Iter: (\d+)/(\d+) -- (.*)")
VAL = re.compile(r"Epoch\[(\d+)\] Metrics -- val_mean_dice: ([0-9.]+)")
WALL = re.compile(r"wall_s ([0-9.]+) maxrss_kb (\d+)")


def parse(log: Path) -> dict:
    curve, vals, wall, rss = [], [], None, None
    for line in log.read_text(errors="replace").splitlines():
        if m := ITER.search(line):
            epoch, it, length = int(m.group(1)), int(m.group(2)), int(m.group(3))
            terms = re.findall(r"(\w+): ([-0-9.e]+)", m.group(4))
            curve.append(((epoch - 1) * length + it, {k: float(v) for k, v in terms}))
        elif m := VAL.search(line):
            vals.append((int(m.group(1)), float(m.group(2))))
        elif m := WALL.search(line):
            wall, rss = float(m.group(1)), int(m.group(2))
    best = max(vals, key=lambda x: x[1]) if vals else (None, None)
    return {"curve": curve, "val": vals, "best_epoch": best[0], "best_dice": best[1], "wall_s": wall, "maxrss_mb": rss and rss / 1024}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="runs")
    p.add_argument("--names", nargs="+", required=True)
    p.add_argument("--plot")
    args = p.parse_args()
    results = {n: parse(Path(args.runs) / f"{n}.log") for n in args.names if (Path(args.runs) / f"{n}.log").exists()}
    print("| run | best val mean Dice | at epoch | validation Dice per epoch | wall time (min) |")
    print("|---|---|---|---|---|")
    for n, r in results.items():
        per_epoch = ", ".join(f"{d:.3f}" for _, d in r["val"])
        wall = f"{r['wall_s'] / 60:.1f}" if r["wall_s"] else "running"
        best = f"{r['best_dice']:.3f}" if r["best_dice"] is not None else "-"
        print(f"| {n} | {best} | {r['best_epoch']} | {per_epoch} | {wall} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = sorted({k for r in results.values() for _, t in r["curve"] for k in t if k.startswith("loss")})
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for n, r in results.items():
                pts = [(i, t[key]) for i, t in r["curve"] if key in t]
                if pts:
                    ax.plot(*zip(*pts), label=n)
            ax.set_title(key)
            ax.set_xlabel("iteration")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
