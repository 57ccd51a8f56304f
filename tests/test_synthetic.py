"""Tests of the built-in synthetic ACDC / MM-WHS data (custom.data.synthetic)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from custom.data import synthetic
from custom.data.synthetic import cache as synthetic_cache
from custom.data.synthetic import (
    ACDC_LABELS,
    MMWHS_LABELS,
    ensure_dataset,
    generate_acdc,
    generate_mmwhs,
    main,
    save_preview,
)

FOUR = ndimage.generate_binary_structure(2, 1)


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    nii = nib.load(str(path))
    return np.asanyarray(nii.dataobj), nii


def _info(case_dir: Path) -> dict[str, str]:
    lines = (case_dir / "Info.cfg").read_text().splitlines()
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines)}


def _frames(case_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray, nib.Nifti1Image]]:
    """{"ED"/"ES": (image, label, image nifti)} of one ACDC patient."""
    es = int(_info(case_dir)["ES"])
    out = {}
    for phase, frame in (("ED", 1), ("ES", es)):
        stem = case_dir / f"{case_dir.name}_frame{frame:02d}"
        image, nii = _load(stem.with_name(stem.name + ".nii.gz"))
        labels, _ = _load(stem.with_name(stem.name + "_gt.nii.gz"))
        out[phase] = (image, labels, nii)
    return out


@pytest.fixture(scope="module")
def acdc(tmp_path_factory) -> Path:
    return generate_acdc(tmp_path_factory.mktemp("acdc"), cases=3, seed=0)


@pytest.fixture(scope="module")
def acdc_two(tmp_path_factory) -> Path:
    return generate_acdc(tmp_path_factory.mktemp("acdc2"), cases=2, seed=0)


@pytest.fixture(scope="module")
def mmwhs(tmp_path_factory) -> Path:
    return generate_mmwhs(tmp_path_factory.mktemp("mmwhs"), cases=2, seed=0)


# ---------------------------------------------------------------------------------------------- ACDC


def test_acdc_layout(acdc):
    patients = sorted(p.name for p in acdc.iterdir())
    assert patients == ["patient001", "patient002", "patient003"]
    for name in patients:
        case_dir = acdc / name
        info = _info(case_dir)
        assert list(info) == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        assert info["ED"] == "1" and info["NbFrame"] == "30"
        assert 8 <= int(info["ES"]) <= 15
        assert info["Group"] in synthetic.ACDC_GROUPS
        assert re.fullmatch(r"\d+\.\d", info["Height"]) and re.fullmatch(r"\d+\.\d", info["Weight"])
        es = int(info["ES"])
        expected = {"Info.cfg"} | {
            f"{name}_frame{f:02d}{s}.nii.gz" for f in (1, es) for s in ("", "_gt")
        }
        assert {p.name for p in case_dir.iterdir()} == expected


def test_acdc_arrays(acdc):
    for case_dir in sorted(acdc.iterdir()):
        for image, labels, nii in _frames(case_dir).values():
            assert image.dtype == np.int16 and labels.dtype == np.uint8
            assert image.shape == labels.shape
            w, h, n = image.shape
            assert 112 <= w <= 144 and 112 <= h <= 144 and 6 <= n <= 12
            assert set(np.unique(labels)) == set(ACDC_LABELS.values())
            assert 0 <= image.min() and 300 < image.max() < 4000  # raw, un-normalised intensities

            affine = nii.affine
            assert np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3]))  # diagonal
            sx, sy, sz = np.diag(affine)[:3]
            assert sx == sy and 1.3 <= sx <= 1.8 and 8.0 <= sz <= 10.0
            assert np.any(affine[:3, 3] != 0)
            assert np.allclose(nii.header.get_zooms()[:3], (sx, sy, sz))
            assert int(nii.header["qform_code"]) == 1 and int(nii.header["sform_code"]) == 1


def test_acdc_anatomy(acdc):
    lv, myo, rv = ACDC_LABELS["LV"], ACDC_LABELS["MYO"], ACDC_LABELS["RV"]
    for case_dir in sorted(acdc.iterdir()):
        frames = _frames(case_dir)
        ed, es = frames["ED"][1], frames["ES"][1]
        # LV cavity shrinks at end-systole, by roughly 30-50 %; so does the RV; the myocardium keeps its volume
        ratio = (es == lv).sum() / (ed == lv).sum()
        assert 0.3 < ratio < 0.85, (case_dir.name, ratio)
        assert (es == rv).sum() < (ed == rv).sum()
        assert abs((es == myo).sum() / (ed == myo).sum() - 1.0) < 0.1
        for labels in (ed, es):
            areas = [(labels[:, :, k] == lv).sum() + (labels[:, :, k] == myo).sum() for k in range(labels.shape[2])]
            assert areas[-1] < areas[0]  # apex smaller than base
            assert (labels[:, :, -1] == myo).any()
            for k in range(labels.shape[2]):
                sl = labels[:, :, k]
                # the LV cavity is enclosed by myocardium: its 4-neighbours are LV or MYO only
                ring = ndimage.binary_dilation(sl == lv, FOUR) & (sl != lv)
                assert set(np.unique(sl[ring])) <= {myo}, (case_dir.name, k)
                if (sl == rv).any():  # the RV is attached to the myocardium (septum)
                    assert (ndimage.binary_dilation(sl == rv, FOUR) & (sl == myo)).any()
            mid = labels[:, :, labels.shape[2] // 2]
            assert (mid == rv).any() and (mid == lv).any()


def test_acdc_appearance(acdc):
    for case_dir in sorted(acdc.iterdir()):
        image, labels, _ = _frames(case_dir)["ED"]
        inner = ndimage.binary_erosion(labels == ACDC_LABELS["LV"], iterations=2)
        blood, muscle = image[inner].astype(float), image[labels == ACDC_LABELS["MYO"]].astype(float)
        assert blood.std() > 0  # noise / texture in the blood pool
        assert blood.mean() > 1.8 * muscle.mean()  # bright blood, dark myocardium
        corner = image[:8, :8].astype(float)  # air outside the body: dark but noisy (Rician floor)
        assert corner.mean() < 0.2 * blood.mean() and corner.std() > 0


def test_acdc_determinism(acdc, acdc_two, tmp_path):
    # patient k only depends on (seed, k): identical bytes whether 2 or 3 cases were generated
    for name in ("patient001", "patient002"):
        for f in (acdc / name).iterdir():
            assert f.read_bytes() == (acdc_two / name / f.name).read_bytes(), f.name
    other = generate_acdc(tmp_path / "seed1", cases=1, seed=1)
    a = _frames(acdc / "patient001")["ED"][0]
    b = _frames(other / "patient001")["ED"][0]
    assert a.shape != b.shape or not np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------- MM-WHS


def test_mmwhs(mmwhs):
    names = sorted(p.name for p in mmwhs.iterdir())
    assert names == [f"mr_train_{i}_{k}.nii.gz" for i in (1001, 1002) for k in ("image", "label")]
    for case in (1001, 1002):
        image, nii = _load(mmwhs / f"mr_train_{case}_image.nii.gz")
        labels, lnii = _load(mmwhs / f"mr_train_{case}_label.nii.gz")
        assert image.dtype == np.int16 and labels.dtype == np.uint16
        assert image.shape == labels.shape
        assert all(abs(a - b) <= 8 for a, b in zip(image.shape, (96, 96, 64)))
        assert set(np.unique(labels)) == set(MMWHS_LABELS.values())
        zooms = np.asarray(nii.header.get_zooms()[:3])
        assert np.all((zooms >= 1.8) & (zooms <= 2.3))
        assert np.allclose(nii.affine, lnii.affine) and np.allclose(np.diag(nii.affine)[:3], zooms)
        lv = labels == MMWHS_LABELS["LV"]
        assert image[ndimage.binary_erosion(lv, iterations=2)].std() > 0
        # LV touches its myocardium; the RV is attached to the LV myocardium
        assert (ndimage.binary_dilation(lv) & (labels == MMWHS_LABELS["MYO"])).any()
        assert (ndimage.binary_dilation(labels == MMWHS_LABELS["RV"]) & (labels == MMWHS_LABELS["MYO"])).any()


def test_mmwhs_determinism(mmwhs, tmp_path):
    again = generate_mmwhs(tmp_path, cases=1, seed=0)
    for kind in ("image", "label"):
        name = f"mr_train_1001_{kind}.nii.gz"
        assert (again / name).read_bytes() == (mmwhs / name).read_bytes()


# ---------------------------------------------------------------------------------------------- ensure_dataset


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_ensure_dataset_idempotent(tmp_path):
    root = tmp_path / "data" / "acdc"
    assert ensure_dataset(root, layout="acdc", cases=2, seed=3) == root
    record = json.loads((root / "dataset.json").read_text())
    assert {k: record[k] for k in ("layout", "cases", "seed", "version")} == {
        "layout": "acdc", "cases": 2, "seed": 3, "version": synthetic.GENERATOR_VERSION
    }
    assert "patient002/patient002_frame01_gt.nii.gz" in record["files"]
    assert all((root / f).is_file() for f in record["files"])
    before = _mtimes(root)
    assert ensure_dataset(root, layout="acdc", cases=2, seed=3) == root
    assert _mtimes(root) == before
    assert [p.name for p in root.parent.iterdir()] == ["acdc"]  # no temporary folders left behind


def test_ensure_dataset_refuses_other_data(tmp_path):
    root = ensure_dataset(tmp_path / "acdc", layout="acdc", cases=1, seed=0)
    with pytest.raises(FileExistsError, match=re.escape(str(root))):
        ensure_dataset(root, layout="acdc", cases=1, seed=1)
    with pytest.raises(FileExistsError, match=re.escape(str(root))):
        ensure_dataset(root, layout="mmwhs", cases=1, seed=0)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=re.escape(str(user))):
        ensure_dataset(user, layout="acdc", cases=1)
    assert (user / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="layout"):
        ensure_dataset(tmp_path / "x", layout="mnms")


def test_ensure_dataset_interrupted(tmp_path, monkeypatch):
    def crash(out_dir, cases, seed):
        generate_acdc(out_dir, 1, seed)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_cache, "generate_acdc", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(tmp_path / "acdc", layout="acdc", cases=2)
    assert list(tmp_path.iterdir()) == []  # nothing that could pass for a dataset, no temporary folder


def test_ensure_dataset_empty_dir(tmp_path):
    (tmp_path / "acdc").mkdir()
    root = ensure_dataset(tmp_path / "acdc", layout="acdc", cases=1)
    assert (root / "dataset.json").is_file()


# ---------------------------------------------------------------------------------------------- CLI / preview


def test_cli(tmp_path, capsys):
    out, png = tmp_path / "ds", tmp_path / "preview.png"
    assert main(["--out", str(out), "--cases", "1", "--seed", "0", "--preview", str(png)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and str(png) in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--out", str(out), "--cases", "1"]) == 0
    assert "existing" in capsys.readouterr().out
    assert main(["--out", str(out), "--cases", "2"]) == 1  # mismatching existing data: clear error, no crash


def test_mmwhs_preview(mmwhs, tmp_path):
    png = save_preview(mmwhs, tmp_path / "mm.png", layout="mmwhs")
    assert png.stat().st_size > 0
