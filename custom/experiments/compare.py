"""Paired comparison of two evaluations on the same test volumes: ``python -m custom.experiments.compare A B``.

Two runs scored on the same 20 volumes differ by a few hundredths of mean Dice even when nothing but chance
separates them; the per-volume pairs say how much of a difference the test set supports. For each metric the
comparison reports the mean of ``B - A`` over the volumes both evaluations scored, a percentile bootstrap 95 %
interval of that mean, and on how many volumes ``B`` is better and worse. The bootstrap resamples patients, not
volumes: the volumes of one patient folder (ACDC: its ED and ES frames) are alike and go together; in a flat
folder every volume is its own patient. ``A`` and ``B`` are evaluation folders (``metrics.csv``, one row per
volume, as the fine-tuning bundle's ``evaluate.yaml`` writes) or the CSV files themselves. The interval covers the
choice of test patients only, not the spread between training runs (seeds, labeled sets), which is usually larger
at L1.

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

__all__ = ["Evaluation", "PairedDifference", "read_volume_metrics", "paired_difference", "paired_markdown", "main"]

DEFAULT_METRICS = ("dice_mean", "dice_RV", "dice_MYO", "dice_LV", "hd95_mean")
_LOWER_IS_BETTER = ("asd_", "hd_", "hd95_", "empty_pred_")  # distances and empty predictions; the rest (Dice) higher


@dataclass(frozen=True)
class Evaluation:
    """Per-volume metrics of one evaluation: ``values[case][metric]``, and the patient of each case."""

    values: dict[str, dict[str, float]]
    patients: dict[str, str]


@dataclass(frozen=True)
class PairedDifference:
    """``B - A`` of one metric over the volumes both evaluations scored (pairs with a NaN or inf are left out)."""

    metric: str
    n: int  # volumes
    patients: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    better: int  # volumes on which B is better than A (higher Dice, lower distance)
    worse: int


def read_volume_metrics(path: str | Path) -> Evaluation:
    """``metrics.csv`` (or a folder holding it) -> :class:`Evaluation`. A case is the file name of its image, so
    that evaluations of the same volumes from different dataset folders match; its patient is the folder of the
    image where the volumes lie in several folders (ACDC), else the file name."""
    path = Path(path)
    csv_path = path / "metrics.csv" if path.is_dir() else path
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: no per-volume metrics file (an evaluation folder holds metrics.csv)")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "case" not in rows[0]:
        raise InputError(f"{csv_path}: expected a 'case' column and one row per volume")
    values: dict[str, dict[str, float]] = {}
    folders: dict[str, str] = {}
    for row in rows:
        image = Path(row.pop("case"))
        if image.name in values:
            raise InputError(f"{csv_path}: volume {image.name} appears twice")
        values[image.name] = {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
        folders[image.name] = image.parent.name
    by_folder = len(set(folders.values())) > 1
    return Evaluation(values, {case: folder if by_folder else case for case, folder in folders.items()})


def paired_difference(a: Evaluation, b: Evaluation, metric: str, n_boot: int = 10000,
                      seed: int = 0) -> PairedDifference:
    """Mean and patient-bootstrap 95 % interval of ``b - a`` for ``metric`` over the volumes of both evaluations.

    Raises:
        InputError: the evaluations share no volume, or ``metric`` is missing from either.
    """
    cases = sorted(set(a.values) & set(b.values))
    if not cases:
        raise InputError("the two evaluations share no volume: compare evaluations of the same test split")
    for name, evaluation in (("A", a), ("B", b)):
        columns = evaluation.values[cases[0]]
        if metric not in columns:
            raise InputError(f"metric {metric!r} is not in evaluation {name} (columns: {', '.join(columns)})")
    pairs = np.array([(a.values[c][metric], b.values[c][metric]) for c in cases], dtype=float)
    finite = np.isfinite(pairs).all(axis=1)
    pairs, cases = pairs[finite], [c for c, keep in zip(cases, finite) if keep]
    if not cases:
        nan = math.nan
        return PairedDifference(metric, 0, 0, nan, nan, nan, nan, nan, 0, 0)
    diff = pairs[:, 1] - pairs[:, 0]
    patients = sorted({a.patients[c] for c in cases})
    index = {p: i for i, p in enumerate(patients)}
    of_case = np.array([index[a.patients[c]] for c in cases])
    sums, counts = np.bincount(of_case, diff, len(patients)), np.bincount(of_case, minlength=len(patients))
    draws = np.random.default_rng(seed).integers(0, len(patients), size=(n_boot, len(patients)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    sign = -1.0 if metric.startswith(_LOWER_IS_BETTER) else 1.0
    return PairedDifference(
        metric=metric, n=len(cases), patients=len(patients), mean_a=float(pairs[:, 0].mean()),
        mean_b=float(pairs[:, 1].mean()), mean_difference=float(diff.mean()),
        ci_low=float(np.percentile(means, 2.5)), ci_high=float(np.percentile(means, 97.5)),
        better=int((sign * diff > 0).sum()), worse=int((sign * diff < 0).sum()),
    )


def paired_markdown(pairs: Sequence[tuple[str, Path, Path]], baseline: str, metric: str = "dice_mean") -> str:
    """A markdown table of ``B - A`` for ``(run name, evaluation A, evaluation B)`` triples, A being ``baseline``'s run
    on the same labeled set, subset and seed ('' without pairs)."""
    if not pairs:
        return ""
    lines = [f"Paired against `{baseline}` on the same test volumes ({metric}, B - A; 95 % interval: test patients "
             "resampled, not the spread between training runs; `python -m custom.experiments.compare`):", "",
             f"| run | A: {baseline} | B: run | B - A | 95 % interval | volumes B better / worse |", "|---" * 6 + "|"]
    for name, a, b in pairs:
        d = paired_difference(read_volume_metrics(a), read_volume_metrics(b), metric)
        lines.append(f"| {name} | {d.mean_a:.3f} | {d.mean_b:.3f} | {d.mean_difference:+.3f} | "
                     f"[{d.ci_low:+.3f}, {d.ci_high:+.3f}] | {d.better} / {d.worse} of {d.n} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom.experiments.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="evaluation folder (or metrics.csv) of the reference run A")
    parser.add_argument("b", help="evaluation folder (or metrics.csv) of run B, compared as B - A")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help=f"metric columns (default: {' '.join(DEFAULT_METRICS)})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    args = parser.parse_args(argv)
    a, b = read_volume_metrics(args.a), read_volume_metrics(args.b)
    shared = set(a.values) & set(b.values)
    only = len(set(a.values) ^ set(b.values))
    left_out = f" ({only} scored by one only, left out)" if only else ""
    print(f"B - A over the {len(shared)} volumes ({len({a.patients[c] for c in shared})} patients) scored by both"
          f"{left_out}; 95 % interval: patients resampled")
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
