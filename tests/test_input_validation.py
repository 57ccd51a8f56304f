"""Bad input gives one clear error naming the file and the problem, and writes nothing."""

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from custom.data.datalist import DatasetError, glob_images
from custom.data.io import AtomicNibabelWriter
from custom.data.transforms import volume_preprocessing
from custom.errors import find_input_error
from custom.finetuning.dual_decoder import DualDecoderUNet

INFERENCE = Path(__file__).resolve().parents[1] / "bundles" / "ideal_finetune" / "configs" / "inference.yaml"


def _save(array, path, affine=None):
    nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 8.0, 1.0]) if affine is None else affine), str(path))
    return path


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    good = _save(rng.random((40, 44, 5)).astype(np.float32), tmp_path / "good.nii.gz")
    nan = rng.random((40, 44, 5)).astype(np.float32)
    nan[3, 3, 1] = np.nan
    raw = good.read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.nii.gz").write_text("not an image")
    return {
        "good": good,
        "truncated": tmp_path / "truncated.nii.gz",
        "not_nifti": tmp_path / "text.nii.gz",
        "slice_2d": _save(rng.random((40, 44)).astype(np.float32), tmp_path / "slice.nii.gz"),
        "cine_4d": _save(rng.random((40, 44, 5, 3)).astype(np.float32), tmp_path / "cine.nii.gz"),
        "nan": _save(nan, tmp_path / "nan.nii.gz"),
        "constant": _save(np.full((40, 44, 5), 3.0, np.float32), tmp_path / "constant.nii.gz"),
        "label_shape": _save(np.zeros((40, 44, 4), np.uint8), tmp_path / "label_shape.nii.gz"),
        "label_values": _save(np.full((40, 44, 5), 205, np.uint16), tmp_path / "label_raw.nii.gz"),
        "missing": tmp_path / "missing.nii.gz",
    }


CASES = {
    "truncated": ("image", "truncated", "cannot read as NIfTI"),
    "not_nifti": ("image", "not_nifti", "cannot read as NIfTI"),
    "slice_2d": ("image", "slice_2d", "expected a 3D volume"),
    "cine_4d": ("image", "cine_4d", "4D cine volume"),
    "nan": ("image", "nan", "NaN or infinite"),
    "constant": ("image", "constant", "constant"),
    "label_shape": ("label", "label_shape", "does not match image shape"),
    "label_values": ("label", "label_values", "label values outside 0..3"),
    "missing": ("image", "missing", "file not found"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_preprocessing_names_the_file_and_the_problem(files, case):
    key, name, problem = CASES[case]
    item = {"image": str(files["good"])}
    if key == "label":
        item["label"] = str(files[name])
    else:
        item["image"] = str(files[name])
    with pytest.raises(Exception) as info:
        volume_preprocessing(keys=list(item), spatial_size=64, max_label=3)(item)
    error = find_input_error(info.value)
    assert isinstance(error, DatasetError), info.value
    assert str(files[name]) in str(error) and problem in str(error)
    assert "\n" not in str(error)


def test_atomic_writer_leaves_only_complete_files(tmp_path):
    writer = AtomicNibabelWriter()
    writer.set_data_array(torch.zeros(1, 4, 4, 2), channel_dim=0)
    writer.set_metadata({"affine": np.eye(4)})
    writer.write(tmp_path / "out_seg.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["out_seg.nii.gz"]
    assert nib.load(tmp_path / "out_seg.nii.gz").shape == (4, 4, 2)


def test_glob_images_skips_existing_outputs(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pattern = str(files["good"].parent / "good.nii.gz")
    assert glob_images(pattern, skip_existing_in=out) == [{"image": pattern}]
    (out / "good_seg.nii.gz").write_bytes(b"done")
    assert glob_images(pattern, skip_existing_in=out) == []
    with pytest.raises(DatasetError, match="no input image matches"):
        glob_images(str(tmp_path / "nothing*.nii.gz"))


def _failed_bundle_inference(tmp_path, checkpoint_backbone, image):
    """Run bundle inference (ResNet-18, 64 px) with a checkpoint of ``checkpoint_backbone`` on ``image`` as a
    subprocess that must fail; returns its ``error:`` lines and stderr after checking there is no traceback
    and no output was written."""
    root = tmp_path / "bundle"
    (root / "models").mkdir(parents=True)
    torch.save(DualDecoderUNet(checkpoint_backbone).state_dict(), root / "models" / "model.pt")
    out = tmp_path / "predictions"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(INFERENCE), "--bundle_root", str(root),
           "--backbone", "resnet18", "--spatial_size", "64", "--input_glob", str(image), "--output_dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")], proc.stderr


@pytest.mark.slow
def test_bundle_inference_reports_one_line_and_writes_nothing(files, tmp_path):
    errors, _ = _failed_bundle_inference(tmp_path, "resnet18", files["truncated"])
    assert len(errors) == 1 and str(files["truncated"]) in errors[0] and "cannot read as NIfTI" in errors[0]


def test_checkpoint_of_another_architecture_is_one_clear_error(tmp_path):
    from ignite.engine import Engine

    from custom.errors import InputError
    from custom.handlers import CheckedCheckpointLoader

    path = tmp_path / "model.pt"
    torch.save(DualDecoderUNet("resnet18", out_channels=4).state_dict(), path)
    engine = Engine(lambda e, b: None)
    with pytest.raises(InputError, match=r"model\.pt: checkpoint of another architecture \(4 shape mismatches, e\.g\. decoder1\.head\.weight"):
        CheckedCheckpointLoader(str(path), {"model": DualDecoderUNet("resnet18", out_channels=3)})(engine)
    with pytest.raises(InputError, match=r"model\.pt: checkpoint of another architecture \(\d+ missing tensors"):
        CheckedCheckpointLoader(str(path), {"model": DualDecoderUNet("resnet34", out_channels=4)})(engine)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"junk\.pt: not a readable checkpoint"):
        CheckedCheckpointLoader(str(tmp_path / "junk.pt"), {"model": DualDecoderUNet("resnet18")})(engine)
    with pytest.raises(InputError, match=r"absent\.pt: checkpoint not found"):
        CheckedCheckpointLoader(str(tmp_path / "absent.pt"), {"model": DualDecoderUNet("resnet18")})(engine)


@pytest.mark.slow
def test_bundle_inference_with_a_checkpoint_of_another_backbone_fails_in_one_line(files, tmp_path):
    errors, stderr = _failed_bundle_inference(tmp_path, "resnet34", files["good"])
    assert len(errors) == 1 and "model.pt: checkpoint of another architecture" in errors[0], stderr[-2000:]
