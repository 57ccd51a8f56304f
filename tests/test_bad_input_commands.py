"""Bad input through the real commands: exit status non-zero, stderr exactly one line ``error: <file>: <problem>``
(no traceback), and nothing written (no checkpoint, prediction, datalist or experiment folder).

Commands: fine-tuning and pre-training ``training``, ``evaluating`` and ``inference`` (``python -m monai.bundle
run``), the datalist CLI (``python -m custom.data.datalist``) and the experiment runner (``python -m
custom.experiments``). Each starts a Python process (~8 s), so every case runs through the fine-tuning training
(the main command) and each other command gets the cases that reach it by its own input path.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.paths import default_dataset

REPO = Path(__file__).resolve().parents[1]
FINETUNE = REPO / "bundles" / "ideal_finetune" / "configs"
PRETRAIN = REPO / "bundles" / "ideal_pretrain" / "configs"
DATALIST = REPO / "datalists" / "synthetic_acdc_L2_c1.json"
# small, and short: a case that slipped through must not train for long before its test fails
SMALL = ["--backbone", "resnet18", "--spatial_size", "64", "--max_iterations", "2", "--epoch_length", "1"]

pytestmark = pytest.mark.slow

# case -> (which file of the first item it replaces, the problem the error must name)
CASES = {
    "truncated": ("image", "cannot read as NIfTI"),
    "not_nifti": ("image", "cannot read as NIfTI"),
    "slice_2d": ("image", "expected a 3D volume"),
    "cine_4d": ("image", "4D cine volume"),
    "nan": ("image", "NaN or infinite"),
    "constant": ("image", "constant"),
    "missing": ("image", "file not found"),
    "label_shape": ("label", "does not match image shape"),
    "label_out_of_range": ("label", "label values"),
    "empty_split": ("datalist", "is missing or empty"),
    "no_datalist": ("datalist", "datalist not found"),
}
IMAGE_CASES = [c for c, (kind, _) in CASES.items() if kind == "image"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Bad files shaped like the first training image of the built-in data, and a datalist per case."""
    root = tmp_path_factory.mktemp("bad_input")
    data = Path(default_dataset("acdc"))
    template = json.loads(DATALIST.read_text())
    first = template["training"][0]
    ref = nib.load(str(data / first["image"]))
    shape, affine = ref.shape, ref.affine
    rng = np.random.default_rng(0)

    def save(array, name):
        nib.save(nib.Nifti1Image(array, affine), str(root / name))
        return root / name

    raw = (data / first["image"]).read_bytes()
    (root / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (root / "not_nifti.nii.gz").write_text("not an image")
    nan = rng.random(shape).astype(np.float32)
    nan[3, 3, 1] = np.nan
    out_of_range = np.asarray(nib.load(str(data / first["label"])).dataobj).astype(np.uint8)
    out_of_range[0, 0, 0] = 7
    files = {
        "truncated": root / "truncated.nii.gz",
        "not_nifti": root / "not_nifti.nii.gz",
        "slice_2d": save(rng.random(shape[:2]).astype(np.float32), "slice_2d.nii.gz"),
        "cine_4d": save(rng.random((*shape, 3)).astype(np.float32), "cine_4d.nii.gz"),
        "nan": save(nan, "nan.nii.gz"),
        "constant": save(np.full(shape, 3.0, np.float32), "constant.nii.gz"),
        "missing": root / "missing.nii.gz",
        "label_shape": save(np.zeros((*shape[:2], shape[2] + 1), np.uint8), "label_shape.nii.gz"),
        "label_out_of_range": save(out_of_range, "label_out_of_range.nii.gz"),
    }
    datalists = {}
    for case, (kind, _) in CASES.items():
        path = root / f"datalist_{case}.json"
        if case == "no_datalist":
            datalists[case] = (path, path)
            continue
        dl = json.loads(json.dumps(template))
        if case == "empty_split":
            for split in ("training", "pretraining", "test"):
                dl[split] = []
            datalists[case] = (path, path)
        else:
            # the same bad file first in every split a command reads
            item = {"image": str(data / first["image"]), "label": str(data / first["label"]), kind: str(files[case])}
            for split in ("training", "test"):
                dl[split][0] = dict(dl[split][0], **item)
            dl["pretraining"][0] = {"image": str(files[case]) if kind == "image" else str(data / first["image"])}
            datalists[case] = (path, files[case])
        path.write_text(json.dumps(dl))
    return {"root": root, "data": data, "files": files, "datalists": datalists}


def _fails_in_one_line(cmd, named, problem, written):
    """Run ``cmd``; assert exit != 0, stderr == one ``error: <named>: ...<problem>...`` line, ``written`` empty."""
    proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: {named}: ") and problem in lines[0], lines[0]
    leftovers = [p for p in written.rglob("*") if p.is_file()] if written.exists() else []
    assert not leftovers, leftovers


def _bundle(config, workflow, bad, case, out, *extra):
    datalist, named = bad["datalists"][case]
    cmd = ["-m", "monai.bundle", "run", workflow, "--config_file", json.dumps([str(c) for c in config]),
           "--bundle_root", str(out), "--datalist", str(datalist), "--dataset_dir", str(bad["data"]), *SMALL, *extra]
    return cmd, named


@pytest.mark.parametrize("case", sorted(CASES))
def test_finetune_training(bad, case, tmp_path):
    cmd, named = _bundle([FINETUNE / "train.yaml"], "training", bad, case, tmp_path / "bundle")
    _fails_in_one_line(cmd, named, CASES[case][1], tmp_path / "bundle")


@pytest.mark.parametrize("case", ["truncated", "nan", "cine_4d", "empty_split", "no_datalist"])
def test_pretrain_training(bad, case, tmp_path):
    cmd, named = _bundle([PRETRAIN / "train.yaml"], "training", bad, case, tmp_path / "bundle")
    _fails_in_one_line(cmd, named, CASES[case][1], tmp_path / "bundle")


@pytest.mark.parametrize("case", ["not_nifti", "constant", "label_out_of_range", "label_shape", "empty_split"])
def test_evaluating(bad, case, tmp_path):
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    torch.save(DualDecoderUNet("resnet18").state_dict(), root / "models" / "model.pt")
    cmd, named = _bundle([FINETUNE / "train.yaml", FINETUNE / "evaluate.yaml"], "evaluating", bad, case, root,
                         "--save_predictions", "true")
    _fails_in_one_line(cmd, named, CASES[case][1], root / "eval")


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_inference(bad, case, tmp_path):
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    torch.save(DualDecoderUNet("resnet18").state_dict(), root / "models" / "model.pt")
    image = bad["files"][case]
    out = tmp_path / "predictions"
    cmd = ["-m", "monai.bundle", "run", "--config_file", str(FINETUNE / "inference.yaml"), "--bundle_root", str(root),
           *SMALL, "--input_glob", str(image), "--output_dir", str(out)]
    problem = "no input image matches" if case == "missing" else CASES[case][1]
    _fails_in_one_line(cmd, image, problem, out)


@pytest.fixture
def corrupted_dataset(bad, tmp_path):
    """A copy of the built-in ACDC-layout data whose first image (or label) is replaced by a bad file."""

    def make(case):
        folder = tmp_path / "dataset"
        shutil.copytree(bad["data"], folder)
        kind = CASES[case][0]
        target = folder / "patient001" / ("patient001_frame01.nii.gz" if kind == "image" else "patient001_frame01_gt.nii.gz")
        shutil.copyfile(bad["files"][case], target)
        return folder, target

    return make


@pytest.mark.parametrize("case", ["truncated", "slice_2d", "nan", "label_shape", "label_out_of_range"])
def test_datalist_cli(corrupted_dataset, case, tmp_path):
    folder, target = corrupted_dataset(case)
    out = tmp_path / "out" / "datalist.json"
    cmd = ["-m", "custom.data.datalist", "--dataset-dir", str(folder), "--protocol", "synthetic_acdc",
           "--labeled", "L2", "--subset", "c1", "--out", str(out)]
    problem = "unexpected label values" if case == "label_out_of_range" else CASES[case][1]
    _fails_in_one_line(cmd, target, problem, tmp_path / "out")


@pytest.mark.parametrize("case", ["not_nifti", "constant", "label_out_of_range"])
def test_experiment_runner(corrupted_dataset, case, tmp_path):
    folder, target = corrupted_dataset(case)
    out = tmp_path / "experiment"
    cmd = ["-m", "custom.experiments", "--dataset-dir", str(folder), "--protocol", "synthetic_acdc", "--fractions",
           "L2", "--methods", "supervised", "--profile", "tiny", "--out", str(out)]
    problem = "unexpected label values" if case == "label_out_of_range" else CASES[case][1]
    _fails_in_one_line(cmd, target, problem, out)
