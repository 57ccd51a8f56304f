"""Run the real pre-training bundle config for a few iterations and check what the fine-tuning bundle consumes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.networks.encoder import load_encoder_weights

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "ideal_pretrain" / "configs"
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
TINY = ["--backbone", "resnet18", "--spatial_size", "64", "--batch_size", "4", "--epoch_length", "2"]


def run_bundle(bundle_root: Path, *overrides: str) -> str:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.yaml"),
           *TINY, "--bundle_root", str(bundle_root), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # tiny convolutions: one thread beats two contended ones
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_pretrain_bundle_exports_a_loadable_encoder(tmp_path):
    log = run_bundle(tmp_path, "--max_iterations", "4")
    models = tmp_path / "models"
    assert torch.load(models / "last_checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 4
    assert any((tmp_path / "runs").glob("events.out.tfevents.*"))
    assert "encoder.pt" in log

    encoder = torch.load(models / "encoder.pt", map_location="cpu", weights_only=True)
    model = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert encoder and all(k.startswith("encoder.") for k in encoder)
    assert {k for k in model if k.startswith("encoder.")} == set(encoder)
    assert any(k.startswith("dense_head.") for k in model) and any(k.startswith("global_head.") for k in model)

    net = DualDecoderUNet("resnet18")
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    loaded = load_encoder_weights(net.encoder, models / "encoder.pt")
    after = net.encoder.state_dict()
    assert len(loaded) == len(encoder) == len(after)
    assert all(torch.equal(after[k.removeprefix("encoder.")], v) for k, v in encoder.items())
    assert any(not torch.equal(before[k], after[k]) for k in after)

    # resume: the last checkpoint restores network, optimizer, scheduler and the trainer's iteration
    log = run_bundle(tmp_path, "--max_iterations", "6", "--resume_from", str(models / "last_checkpoint.pt"))
    assert "resumed from" in log and "at iteration 4" in log
    assert "Epoch[3] Complete" in log and "Epoch[2] Complete" not in log
    assert torch.load(models / "last_checkpoint.pt", weights_only=True)["trainer"]["iteration"] == 6

    # inference.yaml: the trained dense head's unit-length embeddings of a NIfTI volume, one grid per slice
    import nibabel as nib
    import numpy as np

    from custom.paths import default_dataset

    volume = Path(default_dataset("acdc")) / "patient017" / "patient017_frame01.nii.gz"
    out = tmp_path / "embeddings"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.yaml"),
           "--bundle_root", str(tmp_path), "--backbone", "resnet18", "--spatial_size", "64",
           "--input_glob", str(volume), "--output_dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    emb = np.load(out / "patient017_frame01_embedding.npy")
    assert emb.shape == (nib.load(str(volume)).shape[2], 128, 2, 2)  # stride 32 at 64 px
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    assert np.abs(emb[0] - emb[-1]).max() > 1e-3  # apex and base slices embed differently


@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"offline metadata schema not found at {SCHEMA}")
@pytest.mark.filterwarnings("ignore:No hash value provided")
def test_metadata_is_valid():
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
