"""Tests of the datalist builder (custom.data.datalist): CLI output, file validation errors, layouts, load_split."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from custom.data.datalist import DatasetError, build_datalist, load_split, main
from custom.data.synthetic import MMWHS_LABELS, generate_acdc, generate_mmwhs

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("training", "unlabeled", "validation", "test")

# 4 synthetic patients: patient001 labeled (L1) / patient001+002 (L2), 003 validation, 004 test
TINY_PROTOCOL = {
    "name": "tiny_acdc",
    "layout": "acdc",
    "labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3},
    "all_cases": {"first": 1, "last": 4},
    "test": [4],
    "validation": [3],
    "labeled": {
        "L1": {"fraction": 0.5, "c1": [1], "c2": [2]},
        "L2": {"fraction": 1.0, "c1": [1, 2]},
        "L100": {"fraction": 1.0, "c1": "all"},
    },
}


@pytest.fixture(scope="module")
def acdc_source(tmp_path_factory) -> Path:
    return generate_acdc(tmp_path_factory.mktemp("acdc_src") / "acdc", cases=4, seed=0)


@pytest.fixture
def acdc_dir(acdc_source, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    return Path(shutil.copytree(acdc_source, tmp_path / "acdc"))


@pytest.fixture
def protocol_file(tmp_path) -> Path:
    path = tmp_path / "tiny_acdc.json"
    path.write_text(json.dumps(TINY_PROTOCOL))
    return path


@pytest.fixture(scope="module")
def mmwhs_dir(tmp_path_factory) -> Path:
    """Two generated MM-WHS volumes (training cases 1001, 1002) plus a copy of 1001 posing as validation case 1009."""
    root = generate_mmwhs(tmp_path_factory.mktemp("mmwhs") / "mmwhs", cases=2, seed=0)
    for kind in ("image", "label"):
        shutil.copy(root / f"mr_train_1001_{kind}.nii.gz", root / f"mr_train_1009_{kind}.nii.gz")
    return root


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _frame_files(root: Path, case: str) -> list[tuple[Path, Path]]:
    images = sorted(p for p in (root / case).glob(f"{case}_frame??.nii.gz"))
    return [(p, p.with_name(p.name.replace(".nii.gz", "_gt.nii.gz"))) for p in images]


def _save(array: np.ndarray, path: Path, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


def _assert_failed(code: int, err: str, out_file: Path, *needles: str) -> None:
    assert code == 2
    assert err.startswith("error: ")
    for needle in needles:
        assert needle in err, f"{needle!r} not in stderr: {err!r}"
    assert not out_file.exists()
    assert not list(out_file.parent.glob(f".{out_file.name}*")), "temporary output left behind"


# ---------------------------------------------------------------------------------------------------------------
# ACDC layout, successful runs
# ---------------------------------------------------------------------------------------------------------------


def test_cli_acdc_protocol_file(acdc_source, protocol_file, tmp_path, capsys):
    out = tmp_path / "out" / "tiny_L1.json"
    code, stdout, err = _run(capsys, "--dataset-dir", acdc_source, "--protocol", protocol_file, "--labeled", "L1",
                             "--subset", "c1", "--out", out)
    assert code == 0, err
    assert str(out) in stdout and "training 2" in stdout
    d = json.loads(out.read_text())
    for key in (*SPLITS, "pretraining", "labels", "label_mapping", "missing", "name"):
        assert key in d
    assert d["labels"] == TINY_PROTOCOL["labels"]
    assert d["label_mapping"] == {"0": 0, "1": 1, "2": 2, "3": 3}
    assert d["missing"] == []
    cases = {k: [item["case"] for item in d[k]] for k in SPLITS}
    assert cases == {
        "training": ["patient001"] * 2,
        "unlabeled": ["patient002"] * 2,
        "validation": ["patient003"] * 2,
        "test": ["patient004"] * 2,
    }
    for split in SPLITS + ("pretraining",):
        for item in d[split]:
            for key in ("image", "label"):
                if key in item:
                    assert not Path(item[key]).is_absolute()
                    assert (acdc_source / item[key]).is_file()
            assert item["image"].startswith(item["case"] + "/")
    # labeled splits carry labels, unlabeled ones do not
    for split in ("training", "validation", "test"):
        assert all(item["label"] == item["image"].replace(".nii.gz", "_gt.nii.gz") for item in d[split])
    assert all("label" not in item for item in d["unlabeled"] + d["pretraining"])
    # both annotated frames of a patient, ED (frame 1) and ES, stay together
    for split in SPLITS:
        frames = defaultdict(list)
        for item in d[split]:
            frames[item["case"]].append(item["frame"])
        for case, fr in frames.items():
            assert sorted(fr)[0] == 1 and len(fr) == 2 and len(set(fr)) == 2
            on_disk = sorted(int(p.name[len(case) + 6 : len(case) + 8]) for p, _ in _frame_files(acdc_source, case))
            assert sorted(fr) == on_disk
    # pretraining = training pool + validation, images only
    pre = {item["image"] for item in d["pretraining"]}
    assert pre == {item["image"] for s in ("training", "unlabeled", "validation") for item in d[s]}
    assert len(d["pretraining"]) == 6
    # MONAI reads it back with base_dir = dataset folder
    loaded = load_decathlon_datalist(out, data_list_key="training", base_dir=acdc_source)
    assert len(loaded) == 2 and all(Path(x["image"]).is_file() and Path(x["label"]).is_file() for x in loaded)


def test_cli_acdc_l2_and_l100(acdc_source, protocol_file, tmp_path, capsys):
    out = tmp_path / "l2.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_source, "--protocol", protocol_file, "--labeled", "L2", "--out", out)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert sorted({i["case"] for i in d["training"]}) == ["patient001", "patient002"]
    assert d["unlabeled"] == []
    assert len(d["pretraining"]) == 6
    d100 = build_datalist(acdc_source, protocol=str(protocol_file), labeled="L100")
    assert [i["case"] for i in d100["training"]] == [i["case"] for i in d["training"]]


def test_cli_synthetic_acdc_allow_missing(acdc_source, tmp_path, capsys):
    out = tmp_path / "syn.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_source, "--protocol", "synthetic_acdc", "--labeled", "L1",
                        "--allow-missing", "--out", out)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["name"] == "synthetic_acdc_L1_c1"
    assert d["missing"] == [f"patient{n:03d}" for n in range(5, 21)]
    assert {i["case"] for i in d["training"]} == {"patient001"}
    assert [i["case"] for i in d["unlabeled"]] == ["patient002"] * 2 + ["patient003"] * 2 + ["patient004"] * 2
    assert d["validation"] == [] and d["test"] == []


# ---------------------------------------------------------------------------------------------------------------
# error cases: exit code 2, a message naming the file and the problem, no output
# ---------------------------------------------------------------------------------------------------------------


def test_cli_missing_cases_without_allow_missing(acdc_source, tmp_path, capsys):
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_source, "--protocol", "synthetic_acdc", "--labeled", "L1", "--out", out)
    _assert_failed(code, err, out, "synthetic_acdc", "patient005", "patient020", "missing", "--allow-missing")
    assert "patient001" not in err


def test_cli_unexpected_label_value(acdc_dir, protocol_file, tmp_path, capsys):
    image, label = _frame_files(acdc_dir, "patient002")[0]
    nii = nib.load(str(label))
    data = np.asarray(nii.dataobj).copy()
    data[0, 0, 0] = 7
    _save(data, label, nii.affine)
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)
    _assert_failed(code, err, out, str(label), "unexpected label values [7")
    # --no-check skips the value scan, so the same folder goes through
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--no-check",
                        "--out", out)
    assert code == 0, err
    assert out.is_file()


def test_cli_label_shape_mismatch(acdc_dir, protocol_file, tmp_path, capsys):
    image, label = _frame_files(acdc_dir, "patient003")[1]
    nii = nib.load(str(label))
    data = np.asarray(nii.dataobj)[:-3]
    _save(data, label, nii.affine)
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)
    _assert_failed(code, err, out, str(label), "does not match", str(tuple(data.shape)))


def test_cli_label_affine_mismatch(acdc_dir, protocol_file, tmp_path, capsys):
    image, label = _frame_files(acdc_dir, "patient001")[0]
    nii = nib.load(str(label))
    affine = nii.affine.copy()
    affine[0, 3] += 5.0
    _save(np.asarray(nii.dataobj), label, affine)
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)
    _assert_failed(code, err, out, str(label), "affine")


def test_cli_truncated_label(acdc_dir, protocol_file, tmp_path, capsys):
    _, label = _frame_files(acdc_dir, "patient004")[0]
    raw = label.read_bytes()
    label.write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)
    _assert_failed(code, err, out, str(label), "cannot read as NIfTI")


def test_cli_truncated_image(acdc_dir, protocol_file, tmp_path, capsys):
    image, _ = _frame_files(acdc_dir, "patient002")[1]
    raw = image.read_bytes()
    image.write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)
    _assert_failed(code, err, out, str(image))


def test_cli_not_a_nifti(acdc_dir, protocol_file, tmp_path, capsys):
    image, _ = _frame_files(acdc_dir, "patient001")[1]
    image.write_text("this is not a NIfTI volume\n")
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)
    _assert_failed(code, err, out, str(image), "cannot read as NIfTI")


def test_cli_4d_image(acdc_dir, protocol_file, tmp_path, capsys):
    image, _ = _frame_files(acdc_dir, "patient003")[0]
    nii = nib.load(str(image))
    data = np.asarray(nii.dataobj)
    _save(np.stack([data] * 3, axis=-1), image, nii.affine)
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)
    _assert_failed(code, err, out, str(image), "expected a 3D volume", "4D cine")


def test_cli_nonexistent_dataset_dir(protocol_file, tmp_path, capsys):
    missing = tmp_path / "no_such_folder"
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", missing, "--protocol", protocol_file, "--out", out)
    _assert_failed(code, err, out, str(missing), "not found")


def test_cli_empty_folder_and_unknown_protocol(tmp_path, capsys, acdc_source):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", empty, "--protocol", "synthetic_acdc", "--out", out)
    _assert_failed(code, err, out, str(empty), "no cases found")
    code, _, err = _run(capsys, "--dataset-dir", acdc_source, "--protocol", "nonexistent_proto", "--out", out)
    _assert_failed(code, err, out, "nonexistent_proto", "acdc_paper")
    code, _, err = _run(capsys, "--dataset-dir", acdc_source, "--protocol", "synthetic_acdc", "--labeled", "L9",
                        "--allow-missing", "--out", out)
    _assert_failed(code, err, out, "L9")


def test_failed_run_keeps_previous_output(acdc_dir, protocol_file, tmp_path, capsys):
    out = tmp_path / "o.json"
    assert _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)[0] == 0
    before = out.read_bytes()
    _, label = _frame_files(acdc_dir, "patient001")[0]
    label.write_bytes(b"garbage")
    code, _, err = _run(capsys, "--dataset-dir", acdc_dir, "--protocol", protocol_file, "--labeled", "L1", "--out", out)
    assert code == 2 and str(label) in err
    assert out.read_bytes() == before


def test_cli_malformed_protocol_file(acdc_source, tmp_path, capsys):
    proto = tmp_path / "incomplete.json"
    proto.write_text(json.dumps({"name": "incomplete"}))
    out = tmp_path / "o.json"
    code, _, err = _run(capsys, "--dataset-dir", acdc_source, "--protocol", proto, "--out", out)
    _assert_failed(code, err, out, "incomplete.json", "layout")


# ---------------------------------------------------------------------------------------------------------------
# MM-WHS layout
# ---------------------------------------------------------------------------------------------------------------


def _depths(root: Path) -> dict[str, int]:
    return {p.name[: len("mr_train_1001")]: nib.load(str(p)).shape[2] for p in root.glob("mr_train_*_image.nii.gz")}


def test_cli_mmwhs_slices(mmwhs_dir, tmp_path, capsys):
    out = tmp_path / "mm.json"
    code, _, err = _run(capsys, "--dataset-dir", mmwhs_dir, "--protocol", "mmwhs_paper", "--labeled", "F20",
                        "--allow-missing", "--out", out)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["name"] == "mmwhs_paper_F20_seed0"
    assert d["label_mapping"] == {str(v): i for i, v in enumerate(MMWHS_LABELS.values())}
    assert "mr_train_1001" not in d["missing"] and "mr_train_1003" in d["missing"] and len(d["missing"]) == 17
    depths = _depths(mmwhs_dir)
    total = depths["mr_train_1001"] + depths["mr_train_1002"]
    labeled = {i["case"]: i["slices"] for i in d["training"]}
    unlabeled = {i["case"]: i["slices"] for i in d["unlabeled"]}
    assert sum(len(v) for v in labeled.values()) == round(0.2 * total)
    assert set(unlabeled) == {"mr_train_1001", "mr_train_1002"}
    for case in unlabeled:
        lab, unl = set(labeled.get(case, [])), set(unlabeled[case])
        assert not lab & unl
        assert lab | unl == set(range(depths[case]))
    assert all("label" in i for i in d["training"]) and all("label" not in i for i in d["unlabeled"])
    assert [i["case"] for i in d["validation"]] == ["mr_train_1009"]
    assert "slices" not in d["validation"][0] and d["validation"][0]["label"] == "mr_train_1009_label.nii.gz"
    assert d["test"] == []
    assert sorted(i["case"] for i in d["pretraining"]) == ["mr_train_1001", "mr_train_1002", "mr_train_1009"]
    # another seed labels other slices; F100 leaves nothing unlabeled
    other = build_datalist(mmwhs_dir, protocol="mmwhs_paper", labeled="F20", seed=1, allow_missing=True, check_files=False)
    assert {i["case"]: i["slices"] for i in other["training"]} != labeled
    full = build_datalist(mmwhs_dir, protocol="mmwhs_paper", labeled="F100", allow_missing=True, check_files=False)
    assert full["unlabeled"] == []
    assert {i["case"]: i["slices"] for i in full["training"]} == {
        c: list(range(depths[c])) for c in ("mr_train_1001", "mr_train_1002")
    }


def test_cli_mmwhs_errors(mmwhs_dir, tmp_path, capsys):
    out = tmp_path / "mm.json"
    code, _, err = _run(capsys, "--dataset-dir", mmwhs_dir, "--protocol", "mmwhs_paper", "--labeled", "F10", "--out", out)
    _assert_failed(code, err, out, "mr_train_1003", "--allow-missing")
    broken = Path(shutil.copytree(mmwhs_dir, tmp_path / "broken"))
    (broken / "mr_train_1002_label.nii.gz").unlink()
    code, _, err = _run(capsys, "--dataset-dir", broken, "--protocol", "mmwhs_paper", "--labeled", "F10",
                        "--allow-missing", "--out", out)
    _assert_failed(code, err, out, str(broken / "mr_train_1002_label.nii.gz"), "label file missing")
    # raw ACDC-style class indices are not MM-WHS values
    label = broken / "mr_train_1001_label.nii.gz"
    nii = nib.load(str(label))
    _save(np.full(nii.shape, 3, np.uint16), label, nii.affine)
    shutil.copy(mmwhs_dir / "mr_train_1002_label.nii.gz", broken / "mr_train_1002_label.nii.gz")
    code, _, err = _run(capsys, "--dataset-dir", broken, "--protocol", "mmwhs_paper", "--labeled", "F10",
                        "--allow-missing", "--out", out)
    _assert_failed(code, err, out, str(label), "unexpected label values [3")


# ---------------------------------------------------------------------------------------------------------------
# bring-your-own folder
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def folder_dir(tmp_path) -> Path:
    """10 tiny volumes ``cXX_image.nii.gz``; the first 6 have ``cXX_label.nii.gz``."""
    root = tmp_path / "folder"
    root.mkdir()
    for i in range(10):
        image = (np.arange(8 * 6 * 3).reshape(8, 6, 3) + i).astype(np.int16)
        _save(image, root / f"c{i:02d}_image.nii.gz")
        if i < 6:
            _save((np.arange(8 * 6 * 3).reshape(8, 6, 3) % 3).astype(np.uint8), root / f"c{i:02d}_label.nii.gz")
    return root


def test_cli_folder_protocol(folder_dir, tmp_path, capsys):
    out = tmp_path / "f.json"
    code, _, err = _run(capsys, "--dataset-dir", folder_dir, "--protocol", "folder", "--images", "*_image.nii.gz",
                        "--label-replace", "_image", "_label", "--labeled-fraction", "0.5", "--val-fraction", "0.1",
                        "--test-fraction", "0.2", "--seed", "2", "--out", out)
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["protocol"] == "folder" and d["labels"] is None and d["label_mapping"] is None
    with_label = {f"c{i:02d}_image" for i in range(6)}
    for split in ("training", "validation", "test"):
        for item in d[split]:
            assert item["case"] in with_label
            assert item["label"] == item["image"].replace("_image", "_label")
            assert (folder_dir / item["label"]).is_file()
    assert d["training"], "at least one labeled case"
    assert all("label" not in i for i in d["unlabeled"] + d["pretraining"])
    assert all(i["image"] == i["case"] + ".nii.gz" for s in SPLITS for i in d[s])
    seen = [i["case"] for s in SPLITS for i in d[s]]
    assert len(seen) == len(set(seen))
    assert {i["case"] for i in d["pretraining"]} == {i["case"] for s in ("training", "unlabeled", "validation") for i in d[s]}
    again = build_datalist(folder_dir, protocol="folder", images="*_image.nii.gz", label_replace=["_image", "_label"],
                           labeled_fraction=0.5, val_fraction=0.1, test_fraction=0.2, seed=2)
    assert json.loads(json.dumps(again)) == d


def test_cli_folder_without_label_replace_is_all_unlabeled(folder_dir):
    d = build_datalist(folder_dir, protocol="folder", images="*_image.nii.gz", val_fraction=0.0, test_fraction=0.0)
    assert d["training"] == [] and len(d["unlabeled"]) == 10 and len(d["pretraining"]) == 10


@pytest.mark.parametrize("seed", [0, 1])
def test_folder_keeps_every_image(folder_dir, seed):
    d = build_datalist(folder_dir, protocol="folder", images="*_image.nii.gz", label_replace=["_image", "_label"],
                       labeled_fraction=0.5, val_fraction=0.1, test_fraction=0.2, seed=seed)
    seen = {i["case"] for s in SPLITS for i in d[s]}
    assert seen == {f"c{i:02d}_image" for i in range(10)}


def test_cli_folder_needs_images(folder_dir, tmp_path, capsys):
    out = tmp_path / "f.json"
    code, _, err = _run(capsys, "--dataset-dir", folder_dir, "--protocol", "folder", "--out", out)
    _assert_failed(code, err, out, "--images")
    code, _, err = _run(capsys, "--dataset-dir", folder_dir, "--protocol", "folder", "--images", "*.nii.xyz", "--out", out)
    _assert_failed(code, err, out, str(folder_dir), "no cases found")


# ---------------------------------------------------------------------------------------------------------------
# load_split
# ---------------------------------------------------------------------------------------------------------------


def test_load_split(acdc_source, protocol_file, tmp_path, capsys):
    out = tmp_path / "dl.json"
    assert _run(capsys, "--dataset-dir", acdc_source, "--protocol", protocol_file, "--labeled", "L1", "--out", out)[0] == 0
    items = load_split(out, "training", acdc_source)
    assert len(items) == 2
    for item in items:
        assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
        assert Path(item["image"]).parent == acdc_source / "patient001"
    unl = load_split(out, "unlabeled", str(acdc_source))
    assert all("label" not in i and Path(i["image"]).is_file() for i in unl)
    # the file on disk is not modified
    assert json.loads(out.read_text())["training"][0]["image"] == "patient001/patient001_frame01.nii.gz"


def test_load_split_errors_name_datalist(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(DatasetError, match="nope.json: datalist not found"):
        load_split(missing, "training", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(DatasetError, match="bad.json: datalist is not valid JSON"):
        load_split(bad, "training", tmp_path)
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": [{"image": "a.nii.gz"}], "test": []}))
    with pytest.raises(DatasetError) as err:
        load_split(dl, "validation", tmp_path)
    assert str(dl) in str(err.value) and "'validation'" in str(err.value) and "missing or empty" in str(err.value)
    with pytest.raises(DatasetError) as err:
        load_split(dl, "test", tmp_path)
    assert str(dl) in str(err.value) and "'test'" in str(err.value)


def test_load_split_non_object_json(tmp_path):
    dl = tmp_path / "list.json"
    dl.write_text("[]")
    with pytest.raises(DatasetError, match="list.json"):
        load_split(dl, "training", tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# committed datalists of the built-in data never drift
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builtin_acdc() -> Path:
    from custom.paths import default_dataset

    return Path(default_dataset("acdc"))


@pytest.mark.parametrize("labeled", ["L1", "L2", "L4"])
def test_committed_datalists_match_builder(builtin_acdc, labeled):
    committed = REPO / "datalists" / f"synthetic_acdc_{labeled}_c1.json"
    assert committed.is_file(), f"{committed} is not committed"
    built = build_datalist(builtin_acdc, protocol="synthetic_acdc", labeled=labeled, subset="c1", check_files=labeled == "L1")
    assert json.loads(json.dumps(built)) == json.loads(committed.read_text()), (
        f"{committed.name} drifted from build_datalist; regenerate it with python -m custom.data.datalist "
        f"--dataset-dir data/synthetic_acdc --protocol synthetic_acdc --labeled {labeled} --subset c1 --out {committed}"
    )
    assert sum(len(built[s]) for s in SPLITS) == 40  # 20 patients x 2 frames
