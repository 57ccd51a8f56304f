"""Tests for custom.report: exact indices from hand-made label volumes, pairing rules, refusals and outputs."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest

from custom.report import (
    INDEX_COLUMNS,
    ReportError,
    agreement,
    cardiac_indices,
    discover_cases,
    main,
    read_pairs_csv,
)

SHAPE = (20, 20, 5)
SPACING = (2.0, 2.5, 10.0)  # 50 mm^3 = 0.05 ml per voxel
# voxel counts per frame: LV cavity, RV cavity, myocardium
ED_COUNTS = {3: 400, 1: 300, 2: 200}  # LV 20 ml, RV 15 ml, MYO 10 ml
ES_COUNTS = {3: 160, 1: 180, 2: 220}  # LV 8 ml, RV 9 ml, MYO 11 ml
EXPECTED = {
    "LV_EDV_ml": 20.0,
    "LV_ESV_ml": 8.0,
    "LV_SV_ml": 12.0,
    "LV_EF_pct": 60.0,
    "RV_EDV_ml": 15.0,
    "RV_ESV_ml": 9.0,
    "RV_SV_ml": 6.0,
    "RV_EF_pct": 40.0,
    "MYO_ED_ml": 10.0,
    "MYO_ES_ml": 11.0,
    "MYO_mass_g": 10.5,
}


def labels_with_counts(counts, scale=1.0):
    """(20, 20, 5) label volume holding exactly ``round(count * scale)`` voxels of each label."""
    flat = np.zeros(int(np.prod(SHAPE)), dtype=np.uint8)
    start = 0
    for value, count in counts.items():
        n = int(round(count * scale))
        flat[start : start + n] = value
        start += n
    return flat.reshape(SHAPE)


def save(path, array, spacing=SPACING):
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4) if spacing is None else np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))


def make_patient(root, patient, frames=(1, 12), spacing=SPACING, scale=1.0, info=None, pred_subfolders=True):
    """Images and ``_gt`` labels in ``root/data/patient``, ``_seg`` predictions (= gt) under ``root/pred``."""
    data, pred = root / "data" / patient, root / "pred"
    volumes = [labels_with_counts(ED_COUNTS, scale), labels_with_counts(ES_COUNTS, scale)]
    volumes += [labels_with_counts(ES_COUNTS, scale)] * (len(frames) - 2)
    for frame, labels in zip(frames, volumes):
        name = f"{patient}_frame{frame:02d}"
        save(data / f"{name}.nii.gz", np.random.default_rng(frame).random(SHAPE).astype(np.float32), spacing)
        save(data / f"{name}_gt.nii.gz", labels, spacing)
        folder = pred / name if pred_subfolders else pred
        save(folder / f"{name}_seg.nii.gz", labels, spacing)
    if info is not None:
        (data / "Info.cfg").write_text(f"ED: {info[0]}\nES: {info[1]}\nGroup: NOR\nNbFrame: 30\n")


def args(root, *extra, gt=True):
    base = ["--pred", str(root / "pred"), "--image", str(root / "data"), "--out", str(root / "out")]
    return base + (["--gt", str(root / "data")] if gt else []) + list(extra)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cardiac_indices_exact():
    ind = cardiac_indices(labels_with_counts(ED_COUNTS), labels_with_counts(ES_COUNTS), SPACING, SPACING)
    assert list(ind) == list(INDEX_COLUMNS)
    for key, value in EXPECTED.items():
        assert ind[key] == pytest.approx(value, rel=1e-12), key
    empty = np.zeros(SHAPE, dtype=np.uint8)
    assert math.isnan(cardiac_indices(empty, empty, SPACING, SPACING)["LV_EF_pct"])


def test_agreement_known_values():
    stats = agreement([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])  # errors 1, 2, 3
    assert stats["n"] == 3 and stats["mae"] == pytest.approx(2.0) and stats["bias"] == pytest.approx(2.0)
    assert stats["sd"] == pytest.approx(1.0) and stats["pearson_r"] == pytest.approx(1.0)
    assert (stats["loa_lower"], stats["loa_upper"]) == pytest.approx((0.04, 3.96))
    assert math.isnan(agreement([1.0, 2.0], [3.0, 3.0])["pearson_r"])
    assert agreement([1.0, math.nan], [1.0, 2.0])["n"] == 1


def test_report_end_to_end_identical_pred_and_gt(tmp_path, capsys):
    make_patient(tmp_path, "patient001")
    make_patient(tmp_path, "patient002", scale=0.5)
    assert main(args(tmp_path)) == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "agreement.csv", "bland_altman.png", "clinical.csv", "patient001.png", "patient002.png"
    ]
    rows = read_csv(out / "clinical.csv")
    assert [r["patient"] for r in rows] == ["patient001", "patient002"]
    assert (rows[0]["ed_frame"], rows[0]["es_frame"]) == ("1", "12")
    for key, value in EXPECTED.items():
        assert float(rows[0][key]) == pytest.approx(value, rel=1e-5), key
        assert float(rows[0][f"gt_{key}"]) == pytest.approx(value, rel=1e-5)
        assert float(rows[0][f"err_{key}"]) == 0.0
    assert float(rows[1]["LV_EDV_ml"]) == pytest.approx(10.0)
    stats = {r["index"]: r for r in read_csv(out / "agreement.csv")}
    assert list(stats) == list(INDEX_COLUMNS)
    for key in INDEX_COLUMNS:
        assert stats[key]["n"] == "2"
        assert float(stats[key]["mae"]) == 0.0 and float(stats[key]["bias"]) == 0.0
        assert float(stats[key]["loa_lower"]) == 0.0 and float(stats[key]["loa_upper"]) == 0.0
    assert float(stats["LV_EDV_ml"]["pearson_r"]) == pytest.approx(1.0)
    assert (out / "patient001.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_without_gt_writes_no_agreement(tmp_path):
    make_patient(tmp_path, "patient001", pred_subfolders=False)
    assert main(args(tmp_path, gt=False)) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clinical.csv", "patient001.png"]
    assert "gt_LV_EF_pct" not in read_csv(tmp_path / "out" / "clinical.csv")[0]


def test_info_cfg_decides_ed_and_es(tmp_path):
    # three frames: Info.cfg says ES is frame 5, not the highest frame number
    make_patient(tmp_path, "patient001", frames=(1, 5, 12), info=(1, 5))
    make_patient(tmp_path, "patient002", frames=(3, 11))
    cases = discover_cases(tmp_path / "pred", tmp_path / "data", tmp_path / "data", None, "_gt", False)
    assert [(c.patient, c.ed_frame, c.es_frame) for c in cases] == [("patient001", 1, 5), ("patient002", 3, 11)]
    assert cases[0].es_pred.name == "patient001_frame05_seg.nii.gz"
    assert cases[0].es_gt.name == "patient001_frame05_gt.nii.gz"
    assert cases[1].ed_image.name == "patient002_frame03.nii.gz"


def test_three_frames_without_info_cfg_is_an_error(tmp_path, capsys):
    make_patient(tmp_path, "patient001", frames=(1, 5, 12))
    assert main(args(tmp_path)) == 1
    assert "patient001" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_missing_frame_error_and_skip(tmp_path, capsys):
    make_patient(tmp_path, "patient001")
    make_patient(tmp_path, "patient002")
    (tmp_path / "pred" / "patient002_frame12" / "patient002_frame12_seg.nii.gz").unlink()
    assert main(args(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: patient002") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()

    assert main(args(tmp_path, "--skip-incomplete")) == 0
    assert "skipped: patient002" in capsys.readouterr().err
    assert [r["patient"] for r in read_csv(tmp_path / "out" / "clinical.csv")] == ["patient001"]


def test_missing_gt_frame_names_the_patient(tmp_path, capsys):
    make_patient(tmp_path, "patient001")
    (tmp_path / "data" / "patient001" / "patient001_frame01_gt.nii.gz").unlink()
    assert main(args(tmp_path)) == 1
    assert "patient001: no ground truth for frame 1" in capsys.readouterr().err


def test_identity_spacing_is_refused_unless_given(tmp_path, capsys):
    make_patient(tmp_path, "patient001", spacing=None)
    assert main(args(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "patient001_frame01_seg.nii.gz" in err and "--spacing" in err
    assert not (tmp_path / "out").exists()

    assert main(args(tmp_path, "--spacing", *map(str, SPACING))) == 0
    assert "using --spacing 2 2.5 10 mm" in capsys.readouterr().out
    row = read_csv(tmp_path / "out" / "clinical.csv")[0]
    assert float(row["LV_EDV_ml"]) == pytest.approx(20.0) and float(row["MYO_mass_g"]) == pytest.approx(10.5)


def test_shape_mismatch_names_both_files(tmp_path, capsys):
    make_patient(tmp_path, "patient001")
    save(tmp_path / "data" / "patient001" / "patient001_frame12.nii.gz", np.zeros((20, 20, 4), np.float32))
    assert main(args(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "patient001_frame12_seg.nii.gz" in err and "patient001_frame12.nii.gz" in err and "(20, 20, 4)" in err
    assert not (tmp_path / "out").exists()


def test_ambiguous_predictions_need_a_suffix(tmp_path, capsys):
    make_patient(tmp_path, "patient001")
    data = str(tmp_path / "data")
    common = ["--pred", data, "--image", data, "--gt", data, "--out", str(tmp_path / "out")]
    assert main(common) == 1
    assert "several files match" in capsys.readouterr().err
    assert main([*common, "--pred-suffix", "_gt"]) == 0
    assert float(read_csv(tmp_path / "out" / "clinical.csv")[0]["LV_EF_pct"]) == pytest.approx(60.0)


def test_pairs_csv(tmp_path):
    make_patient(tmp_path, "patient001")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "patient,ed_pred,es_pred,ed_gt,es_gt\n"
        "p1,pred/patient001_frame01/patient001_frame01_seg.nii.gz,"
        "pred/patient001_frame12/patient001_frame12_seg.nii.gz,"
        "data/patient001/patient001_frame01_gt.nii.gz,data/patient001/patient001_frame12_gt.nii.gz\n"
    )
    out = tmp_path / "out"
    assert main(["--pairs", str(pairs), "--image", str(tmp_path / "data"), "--out", str(out)]) == 0
    row = read_csv(out / "clinical.csv")[0]
    assert row["patient"] == "p1" and float(row["RV_EF_pct"]) == pytest.approx(40.0)
    assert (out / "p1.png").is_file() and (out / "agreement.csv").is_file()


def test_pairs_csv_missing_columns(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("patient,ed_pred\np1,a.nii.gz\n")
    with pytest.raises(ReportError, match="es_pred"):
        read_pairs_csv(pairs, None, None, "_gt", False)


def test_pairs_csv_missing_file_is_named(tmp_path, capsys):
    make_patient(tmp_path, "patient001")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "patient,ed_pred,es_pred,ed_image,es_image\n"
        "p1,data/patient001/patient001_frame01_gt.nii.gz,data/patient001/patient001_frame12_gt.nii.gz,"
        "data/patient001/missing.nii.gz,data/patient001/patient001_frame12.nii.gz\n"
    )
    assert main(["--pairs", str(pairs), "--out", str(tmp_path / "out")]) == 1
    assert "missing.nii.gz: file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
