"""``python -m custom.export``: a self-contained bundle folder that runs inference without this repository."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from custom.export import ExportError, export_bundle, main
from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.pretraining.network import ContrastivePretrainNet

REPO = Path(__file__).resolve().parents[1]
FINETUNE = REPO / "bundles" / "ideal_finetune"
PRETRAIN = REPO / "bundles" / "ideal_pretrain"

# Runs `python -m monai.bundle ...` (argv after the script) with this repository made unimportable: its paths are
# dropped from sys.path and the editable install's finders from sys.meta_path / sys.path_hooks, then `custom` must
# come from the current directory (the exported bundle). After the run, no loaded module may come from the repository.
LAUNCHER = textwrap.dedent(
    """
    import os, runpy, sys

    repo, bundle = os.path.realpath(sys.argv[1]), os.path.realpath(os.getcwd())

    def under(path, root):
        path = os.path.realpath(path or os.curdir)
        return path == root or path.startswith(root + os.sep)

    def editable(obj):
        return "__editable__" in (getattr(obj, "__module__", "") or "")

    sys.path[:] = [p for p in sys.path if not under(p, repo)]
    sys.meta_path[:] = [f for f in sys.meta_path if not editable(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not editable(h)]
    sys.path_importer_cache.clear()
    import custom
    assert under(custom.__file__, bundle), f"custom imported from {custom.__file__}, not from {bundle}"
    print("custom from", custom.__file__, flush=True)
    sys.argv = ["monai.bundle", *sys.argv[2:]]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    leaked = sorted(m.__name__ for m in list(sys.modules.values()) if under(getattr(m, "__file__", None) or "/", repo))
    assert not leaked, f"modules loaded from {repo}: {leaked}"
    """
)


def _weights(path: Path, net: torch.nn.Module) -> Path:
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow
def test_exported_finetune_bundle_runs_inference_without_the_repository(tmp_path, capsys):
    torch.manual_seed(0)
    weights = _weights(tmp_path / "weights.pt", DualDecoderUNet("resnet18"))
    out = tmp_path / "export" / "ideal_finetune"
    assert main([str(FINETUNE), str(out), "--weights", str(weights), "--zip"]) == 0
    printed = capsys.readouterr().out
    assert f"exported {out}" in printed and "models/model.pt" in printed and f"{out}.zip" in printed

    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for expected in ("configs/metadata.json", "configs/inference.yaml", "configs/train.yaml", "docs/README.md",
                     "LICENSE", "models/model.pt", "custom/__init__.py", "custom/paths.py",
                     "custom/export.py", "custom/finetuning/dual_decoder.py", "datalists/synthetic_acdc_L2_c1.json",
                     "datalists/protocols/acdc_paper.json"):
        assert expected in files, expected
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or f.split("/")[0] in ("runs", "data")]
    assert (out / "models" / "model.pt").read_bytes() == weights.read_bytes()
    assert not list(out.parent.glob(".*")), "no temporary folder left behind"
    with zipfile.ZipFile(f"{out}.zip") as z:
        names = set(z.namelist())
    assert {f"ideal_finetune/{f}" for f in files} <= names

    from custom.data.synthetic import generate_acdc

    image = generate_acdc(tmp_path / "acdc", cases=1) / "patient001" / "patient001_frame01.nii.gz"
    pred_dir = tmp_path / "pred"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONPATH=str(out), PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", LAUNCHER, str(REPO), "run", "--config_file", "configs/inference.yaml",
           "--backbone", "resnet18", "--spatial_size", "64", "--input_glob", str(image), "--output_dir", str(pred_dir)]
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    assert f"custom from {out.resolve()}" in proc.stdout, log

    seg, src = nib.load(pred_dir / "patient001_frame01_seg.nii.gz"), nib.load(image)
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 3}
    assert not (out / "data").exists(), "inference on given inputs must not generate the built-in dataset"


def test_export_pretrain_bundle_adds_encoder_weights(tmp_path):
    torch.manual_seed(0)
    weights = _weights(tmp_path / "weights.pt", ContrastivePretrainNet("resnet18"))
    out = tmp_path / "ideal_pretrain"
    result = export_bundle(PRETRAIN, out, weights=weights)
    assert result.bundle_dir == out.resolve() and result.zip_path is None
    model = torch.load(out / "models" / "model.pt", weights_only=True)
    encoder = torch.load(out / "models" / "encoder.pt", weights_only=True)
    assert set(encoder) == {k for k in model if k.startswith("encoder.")} and encoder
    assert json.loads((out / "configs" / "metadata.json").read_text())["name"] == "IDEAL contrastive pre-training"
    assert (out / "configs" / "inference.yaml").is_file() and (out / "custom" / "paths.py").is_file()


def test_export_errors_name_the_problem(tmp_path, capsys):
    bundle = tmp_path / "bundle"  # the configs without any models/ folder
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text((FINETUNE / "configs" / "metadata.json").read_text())

    assert main([str(bundle), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and str(bundle / "models" / "model.pt") in err and "not found" in err
    assert not (tmp_path / "out").exists()

    with pytest.raises(ExportError, match="not a bundle folder"):
        export_bundle(tmp_path, tmp_path / "out", weights=tmp_path / "missing.pt")
    with pytest.raises(ExportError, match="missing.pt: trained weights not found"):
        export_bundle(bundle, tmp_path / "out", weights=tmp_path / "missing.pt")

    nested = tmp_path / "last_checkpoint.pt"
    torch.save({"network": {"w": torch.zeros(1)}, "trainer": {"iteration": 3}}, nested)
    with pytest.raises(ExportError, match="not a plain state dict"):
        export_bundle(bundle, tmp_path / "out", weights=nested)

    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_bundle(bundle, busy, weights=weights)
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_bundle(bundle, empty, weights=weights).files  # an existing empty folder is fine
    assert (empty / "custom" / "paths.py").is_file()
    (tmp_path / "zipped.zip").write_text("x")
    with pytest.raises(ExportError, match="zip file already exists"):
        export_bundle(bundle, tmp_path / "zipped", weights=weights, make_zip=True)
    assert not (tmp_path / "zipped").exists()
    with pytest.raises(ExportError, match="inside"):
        export_bundle(bundle, bundle / "configs" / "export", weights=weights)
