"""Paired comparison of two evaluations (custom.experiments.compare) on hand-made tables and on committed real-ACDC
evaluation files."""

import csv
import math
from pathlib import Path

import pytest

from custom.errors import InputError
from custom.experiments.compare import main, paired_difference, paired_markdown, read_volume_metrics

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
        "/elsewhere/p3.nii.gz": {"dice_mean": 0.5, "hd95_mean": float("inf")},
    })
    ta, tb = read_volume_metrics(a), read_volume_metrics(b / "metrics.csv")  # cases matched by file name
    dice = paired_difference(ta, tb, "dice_mean")
    assert dice.n == 4 and dice.patients == 4 and dice.mean_difference == pytest.approx(0.05)
    assert (dice.better, dice.worse) == (2, 1)
    assert dice.ci_low <= dice.mean_difference <= dice.ci_high and dice.ci_low < dice.ci_high
    hd = paired_difference(ta, tb, "hd95_mean")  # NaN and inf pairs are left out; a lower distance is better
    assert hd.n == 2 and hd.mean_difference == pytest.approx(2.5)
    assert (hd.better, hd.worse) == (1, 1)


def test_volumes_of_one_patient_are_resampled_together(tmp_path):
    """Two frames per patient folder with equal differences: the interval is the one of one volume per patient (a
    bootstrap over volumes would draw 20 times and give a narrower interval)."""
    diffs = [0.3, -0.1, 0.2, 0.0, 0.5, -0.2, 0.1, 0.4, -0.3, 0.25]
    frames = {f"/d/patient{i:03d}/patient{i:03d}_frame{f}.nii.gz": d for i, d in enumerate(diffs) for f in (1, 2)}
    single = {f"/d/patient{i:03d}.nii.gz": d for i, d in enumerate(diffs)}
    result = {}
    for name, rows in (("frames", frames), ("single", single)):
        a = _write(tmp_path / name / "a", {c: {"dice_mean": 0.5} for c in rows})
        b = _write(tmp_path / name / "b", {c: {"dice_mean": 0.5 + d} for c, d in rows.items()})
        result[name] = paired_difference(read_volume_metrics(a), read_volume_metrics(b), "dice_mean")
    assert result["frames"].n == 20 and result["frames"].patients == 10 and result["single"].patients == 10
    assert result["frames"].ci_low == pytest.approx(result["single"].ci_low)
    assert result["frames"].ci_high == pytest.approx(result["single"].ci_high)


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
    """Supervised vs ideal at L8 c1 (8 test-time views): 20 volumes of 10 patients; the means are those of the
    committed summaries."""
    sup, ideal = RESULTS / "supervised_L8_dihedral", RESULTS / "ideal_L8_dihedral"
    d = paired_difference(read_volume_metrics(sup), read_volume_metrics(ideal), "dice_mean")
    with open(ideal / "summary.csv", newline="") as f:
        summary = {r["metric"]: float(r["mean"]) for r in csv.DictReader(f)}
    assert d.n == 20 and d.patients == 10 and d.mean_b == pytest.approx(summary["dice_mean"], abs=1e-4)
    assert d.better + d.worse == 20 and d.ci_low < d.mean_difference < d.ci_high
    assert main([str(sup), str(ideal), "--metrics", "dice_mean"]) == 0
    out = capsys.readouterr().out
    assert "20 volumes (10 patients)" in out and f"{d.mean_difference:+8.3f}" in out


def test_paired_markdown_table_of_real_runs(tmp_path):
    a, b = RESULTS / "supervised_L8_dihedral" / "metrics.csv", RESULTS / "ideal_L8_dihedral" / "metrics.csv"
    table = paired_markdown([("ideal/L8_c1_seed0", a, b)], "supervised")
    d = paired_difference(read_volume_metrics(a), read_volume_metrics(b), "dice_mean")
    assert table.startswith("Paired against `supervised`")
    assert f"| ideal/L8_c1_seed0 | {d.mean_a:.3f} | {d.mean_b:.3f} | {d.mean_difference:+.3f} | " in table
    assert paired_markdown([], "supervised") == ""
