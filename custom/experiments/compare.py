"""Paired comparison of two evaluations on the same test volumes: ``python -m custom.experiments.compare A B``.

Two runs scored on the same 20 volumes differ by a few hundredths of mean Dice even when nothing but chance
separates them; the per-volume pairs say how much of a difference the volumes support. For each metric the
comparison reports the mean of ``B - A`` over the volumes both evaluations scored, a percentile bootstrap 95 %
interval of that mean (volumes resampled with replacement, a fixed seed), and on how many volumes ``B`` is better
and worse. ``A`` and ``B`` are evaluation folders (``metrics.csv``, one row per volume, as the fine-tuning bundle's
``evaluate.yaml`` writes) or the CSV files themselves. The interval covers the choice of test volumes only, not
the spread between training runs (seeds, labeled sets), which is usually larger at L1.

Example::

    python -m custom.experiments.compare runs/supervised/L1_c1_seed0/eval runs/ideal/L1_c1_seed0/eval
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from custom.errors import InputError

__all__ = ["PairedDifference", "read_volume_metrics", "paired_difference", "main"]

DEFAULT_METRICS = ("dice_mean", "dice_RV", "dice_MYO", "dice_LV", "hd95_mean")
_HIGHER_IS_BETTER = "dice"


@dataclass(frozen=True)
class PairedDifference:
    """``B - A`` of one metric over the volumes both evaluations scored (pairs with a NaN are left out)."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    better: int  # volumes on which B is better than A (higher Dice, lower distance)
    worse: int


def read_volume_metrics(path: str | Path) -> dict[str, dict[str, float]]:
    """``metrics.csv`` (or a folder holding it) -> ``{case: {metric: value}}``; the case is the file name of the
    image, so that two evaluations of the same volumes from different dataset folders match."""
    path = Path(path)
    csv_path = path / "metrics.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: no per-volume metrics file (an evaluation folder holds metrics.csv)")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "case" not in rows[0]:
        raise InputError(f"{csv_path}: expected a 'case' column and one row per volume")
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        case = Path(row.pop("case")).name
        if case in table:
            raise InputError(f"{csv_path}: volume {case} appears twice")
        table[case] = {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
    return table


def paired_difference(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], metric: str,
                      n_boot: int = 10000, seed: int = 0) -> PairedDifference:
    """Mean and bootstrap 95 % interval of ``b - a`` for ``metric`` over the volumes of both tables.

    Raises:
        InputError: the tables share no volume, or ``metric`` is missing from either.
    """
    cases = sorted(set(a) & set(b))
    if not cases:
        raise InputError("the two evaluations share no volume: compare evaluations of the same test split")
    for name, table in (("A", a), ("B", b)):
        if metric not in table[cases[0]]:
            raise InputError(f"metric {metric!r} is not in evaluation {name} (columns: {', '.join(table[cases[0]])})")
    pairs = np.array([(a[c][metric], b[c][metric]) for c in cases], dtype=float)
    pairs = pairs[~np.isnan(pairs).any(axis=1)]
    if len(pairs) == 0:
        nan = math.nan
        return PairedDifference(metric, 0, nan, nan, nan, nan, nan, 0, 0)
    diff = pairs[:, 1] - pairs[:, 0]
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    sign = 1.0 if metric.startswith(_HIGHER_IS_BETTER) else -1.0
    return PairedDifference(
        metric=metric, n=len(diff), mean_a=float(pairs[:, 0].mean()), mean_b=float(pairs[:, 1].mean()),
        mean_difference=float(diff.mean()), ci_low=float(np.percentile(means, 2.5)),
        ci_high=float(np.percentile(means, 97.5)),
        better=int((sign * diff > 0).sum()), worse=int((sign * diff < 0).sum()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom.experiments.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="evaluation folder (or metrics.csv) of the reference run A")
    parser.add_argument("b", help="evaluation folder (or metrics.csv) of run B, compared as B - A")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help=f"metric columns (default: {' '.join(DEFAULT_METRICS)})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    args = parser.parse_args(argv)
    a, b = read_volume_metrics(args.a), read_volume_metrics(args.b)
    only = len(set(a) ^ set(b))
    left_out = f" ({only} scored by one only, left out)" if only else ""
    print(f"B - A over {len(set(a) & set(b))} volumes scored by both{left_out}")
    print(f"{'metric':<12} {'A':>8} {'B':>8} {'B - A':>8}   {'95 % interval':<18} B better / worse")
    for metric in args.metrics:
        d = paired_difference(a, b, metric, seed=args.seed)
        interval = f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
        print(f"{metric:<12} {d.mean_a:8.3f} {d.mean_b:8.3f} {d.mean_difference:+8.3f}   {interval:<18} "
              f"{d.better} / {d.worse} of {d.n}")
    return 0


if __name__ == "__main__":
    from custom.errors import install_excepthook

    install_excepthook()
    sys.exit(main())
