"""Paired comparison of two evaluations (custom.experiments.compare) on hand-made tables and on committed real-ACDC
evaluation files."""

import csv
import math
from pathlib import Path

import pytest

from custom.errors import InputError
from custom.experiments.compare import main, paired_difference, read_volume_metrics

RESULTS = Path(__file__).resolve().parents[1] / "results" / "acdc_cpu" / "tta_check"


def _write(folder: Path, rows: dict[str, dict[str, float]]) -> Path:
    folder.mkdir(parents=True)
    columns = ["case", *next(iter(rows.values()))]
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for case, values in rows.items():
            writer.writerow({"case": case, **{k: "" if math.isnan(v) else v for k, v in values.items()}})
    return folder


def test_difference_counts_and_interval(tmp_path):
    a = _write(tmp_path / "a", {f"/data/p{i}.nii.gz": {"dice_mean": 0.5, "hd95_mean": 10.0} for i in range(4)})
    b = _write(tmp_path / "b", {
        "/elsewhere/p0.nii.gz": {"dice_mean": 0.7, "hd95_mean": 5.0},
        "/elsewhere/p1.nii.gz": {"dice_mean": 0.6, "hd95_mean": 20.0},
        "/elsewhere/p2.nii.gz": {"dice_mean": 0.4, "hd95_mean": float("nan")},
        "/elsewhere/p3.nii.gz": {"dice_mean": 0.5, "hd95_mean": 8.0},
    })
    ta, tb = read_volume_metrics(a), read_volume_metrics(b / "metrics.csv")  # cases matched by file name
    dice = paired_difference(ta, tb, "dice_mean")
    assert dice.n == 4 and dice.mean_difference == pytest.approx(0.05)
    assert (dice.better, dice.worse) == (2, 1)
    assert dice.ci_low <= dice.mean_difference <= dice.ci_high and dice.ci_low < dice.ci_high
    hd = paired_difference(ta, tb, "hd95_mean")  # the NaN pair is left out; a lower distance is better
    assert hd.n == 3 and hd.mean_difference == pytest.approx(1.0)
    assert (hd.better, hd.worse) == (2, 1)


def test_bad_input_names_the_problem(tmp_path):
    a = _write(tmp_path / "a", {"p0.nii.gz": {"dice_mean": 0.5}})
    b = _write(tmp_path / "b", {"p1.nii.gz": {"dice_mean": 0.5}})
    with pytest.raises(InputError, match="no per-volume metrics file"):
        read_volume_metrics(tmp_path / "missing")
    with pytest.raises(InputError, match="share no volume"):
        paired_difference(read_volume_metrics(a), read_volume_metrics(b), "dice_mean")
    with pytest.raises(InputError, match="'dice_RV' is not in evaluation A"):
        paired_difference(read_volume_metrics(a), read_volume_metrics(a), "dice_RV")


def test_real_acdc_evaluations(capsys):
    """Supervised vs ideal at L8 c1 (8 test-time views): the means are those of the committed summaries."""
    sup, ideal = RESULTS / "supervised_L8_dihedral", RESULTS / "ideal_L8_dihedral"
    d = paired_difference(read_volume_metrics(sup), read_volume_metrics(ideal), "dice_mean")
    summary = {r["metric"]: float(r["mean"]) for r in csv.DictReader(open(ideal / "summary.csv"))}
    assert d.n == 20 and d.mean_b == pytest.approx(summary["dice_mean"], abs=1e-4)
    assert d.better + d.worse == 20 and d.ci_low < d.mean_difference < d.ci_high
    assert main([str(sup), str(ideal), "--metrics", "dice_mean"]) == 0
    out = capsys.readouterr().out
    assert "over 20 volumes" in out and f"{d.mean_difference:+8.3f}" in out
