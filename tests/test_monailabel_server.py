"""The exported ideal_finetune bundle in a real MONAI Label server (its own tier: ``pytest -m monailabel``).

MONAI Label needs its own torch/torchvision pair, so the server runs from a separate venv made (once, then reused) by
``scripts/monailabel_venv.sh`` at ``IDEAL_MONAILABEL_VENV`` (default ``~/.cache/ideal-monai/monailabel-venv``); point
that variable at a prebuilt venv to skip the install, or set ``IDEAL_SKIP_MONAILABEL=1`` to skip this tier.

The server test exports the bundle with random ResNet-18 weights into the ``monaibundle`` sample app that ships inside
the monailabel package (``monailabel apps --download`` copies it; nothing comes from GitHub or the Model Zoo), writes
4 synthetic short-axis volumes (2 of them labeled) into the studies folder, starts ``monailabel start_server`` on
127.0.0.1 and checks that ``POST /infer/ideal_finetune`` returns a label volume on the input's grid equal to
``python -m monai.bundle run`` inference (this environment, inference.yaml as it is) on the same volume and weights;
then ``POST /train/ideal_finetune`` trains 2 iterations (labeled volumes from the datastore, the unlabeled stream from
a datalist of the studies folder) and the server serves the new weights.
Two fast tests without the marker cover what the server needs from this package: ``KnownSpacingd`` with MONAI Label's
``image_path`` entry, and ``custom.export --set`` (the served configs take no command-line overrides).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai.data import MetaTensor

from custom.data.transforms import KnownSpacingd
from custom.export import ExportError, export_bundle, main
from custom.finetuning.dual_decoder import DualDecoderUNet

REPO = Path(__file__).resolve().parents[1]
FINETUNE = REPO / "bundles" / "ideal_finetune"
VENV_SCRIPT = REPO / "scripts" / "monailabel_venv.sh"
MODEL = "ideal_finetune"
INSTALL_TIMEOUT_S = 3600
START_TIMEOUT_S = 600
INFER_TIMEOUT_S = 600


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would let the repository's ``custom`` or site packages leak in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1", **extra)
    return env


def _venv_env(venv: Path) -> dict[str, str]:
    """:func:`_clean_env` with the venv activated (its ``bin/monailabel`` launcher runs ``python`` from PATH)."""
    env = _clean_env(VIRTUAL_ENV=str(venv))
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _tail(text: str, n: int = 6000) -> str:
    return text[-n:]


@pytest.fixture(scope="module")
def monailabel_venv() -> Path:
    """The MONAI Label venv: built by scripts/monailabel_venv.sh on first use, reused afterwards."""
    if os.environ.get("IDEAL_SKIP_MONAILABEL", "").lower() in ("1", "true", "yes"):
        pytest.skip("IDEAL_SKIP_MONAILABEL is set")
    env = _clean_env()
    env.setdefault("IDEAL_MONAILABEL_PYTHON", sys.executable)
    start = time.monotonic()
    proc = subprocess.run(["bash", str(VENV_SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=INSTALL_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"{VENV_SCRIPT} failed (exit {proc.returncode}):\n{_tail(proc.stderr)}")
    venv = Path(proc.stdout.strip().splitlines()[-1])
    print(f"[monailabel] venv {venv} ready in {time.monotonic() - start:.1f} s: {proc.stderr.strip().splitlines()[-1]}")
    assert (venv / "bin" / "monailabel").is_file(), proc.stderr
    return venv


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _load_nifti(data: bytes, path: Path) -> nib.Nifti1Image:
    """The NIfTI in ``data`` (gzip-compressed or not), written to ``path`` with the matching suffix."""
    path = path.with_name(path.name + (".nii.gz" if data[:2] == b"\x1f\x8b" else ".nii"))
    path.write_bytes(data)
    return nib.load(path)


def _dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = x.sum() + y.sum()
    return 1.0 if total == 0 else float(2 * (x & y).sum() / total)


class Server:
    """``monailabel start_server`` as a subprocess in its own process group; the log goes to a file."""

    def __init__(self, venv: Path, app: Path, studies: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        # the venv's `monailabel` launcher, as a user runs it (it runs `python` from the activated venv's PATH)
        cmd = ["monailabel", "start_server", "--app", str(app), "--studies", str(studies),
               "--host", "127.0.0.1", "--port", str(self.port), "--conf", "models", MODEL,
               "--conf", "zoo_source", "github", "--conf", "sam2", "false"]
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(cmd, cwd=app.parent, env=_venv_env(venv), stdout=self._log_file,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"MONAI Label server exited with {self.proc.returncode} before it was ready")
            try:
                return _get_json(f"{self.url}/info/", timeout=5)
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                time.sleep(1)
        raise AssertionError(f"MONAI Label server not ready after {timeout} s")

    def infer(self, image_id: str, path: Path) -> nib.Nifti1Image:
        """``POST /infer/<model>?image=<id>&output=image``: the label volume, saved at ``path`` (+ suffix)."""
        query = urllib.parse.urlencode({"image": image_id, "output": "image"})
        request = urllib.request.Request(f"{self.url}/infer/{MODEL}?{query}", method="POST",
                                         data=urllib.parse.urlencode({"params": "{}"}).encode())
        with urllib.request.urlopen(request, timeout=INFER_TIMEOUT_S) as r:
            return _load_nifti(r.read(), path)

    def train(self, params: dict, timeout: float) -> dict:
        """``POST /train/<model>`` (a background task, as the viewers start it), then poll ``GET /train/``."""
        request = urllib.request.Request(f"{self.url}/train/{MODEL}", method="POST", data=json.dumps(params).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            task_id = json.loads(r.read())["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = _get_json(f"{self.url}/train/")
            if task["id"] == task_id and task["status"] not in ("SUBMITTED", "RUNNING"):
                return task
            if self.proc.poll() is not None:
                raise AssertionError(f"MONAI Label server exited with {self.proc.returncode} during training")
            time.sleep(2)
        raise AssertionError(f"training not finished after {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)  # the server's own process group (start_new_session)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log_file.close()


def test_knownspacingd_keeps_monailabel_image_path():
    # MONAI Label's data dict: the loaded image, its meta dict, and the request's image_path string; plain Spacingd
    # (monai 1.6) calls .update() on every "image_*" entry and fails on the string
    image = MetaTensor(torch.rand(1, 8, 8, 2), affine=torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0])),
                       meta={"filename_or_obj": "/studies/case.nii.gz"})
    data = {"image": image, "image_path": "/studies/case.nii.gz", "image_meta_dict": {"original_channel_dim": -1}}
    out = KnownSpacingd(keys=["image"], pixdim=(1.0, 1.0, -1))(data)
    assert tuple(out["image"].shape) == (1, 15, 15, 2)
    assert out["image_path"] == "/studies/case.nii.gz"
    assert out["image_meta_dict"]["original_channel_dim"] == -1 and "affine" in out["image_meta_dict"]


def test_export_set_writes_network_settings_into_the_configs(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    out = tmp_path / "bundle"
    assert main([str(FINETUNE), str(out), "--weights", str(weights), "--set", "backbone=resnet18",
                 "--set", "pixdim=[1.25, 1.25]", "--set", "train:datalist=/studies/unlabeled.json"]) == 0
    printed = capsys.readouterr().out
    assert "set backbone in configs/" in printed and "set train:datalist in configs/train.yaml" in printed
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(out / "configs" / "inference.yaml"))
    assert parser["backbone"] == "resnet18" and parser["pixdim"] == [1.25, 1.25]
    source = ConfigParser()
    source.read_config(str(FINETUNE / "configs" / "inference.yaml"))
    assert parser["datalist"] == source["datalist"]  # only train.yaml was asked for
    parser.read_config(str(out / "configs" / "train.yaml"))
    assert parser["backbone"] == "resnet18" and parser["datalist"] == "/studies/unlabeled.json"
    assert (FINETUNE / "configs" / "inference.yaml").read_text() != (out / "configs" / "inference.yaml").read_text()
    for bad, match in ((["backbone"], "KEY=VALUE"), (["no_such_key=1"], "not a top-level key"),
                       (["nosuch:backbone=x"], "no configs/nosuch.yaml"), (["a b=1"], "CONFIG"),
                       (["network_def=x"], "multi-line value"), (["backbone=[1,"], "not valid YAML")):
        with pytest.raises(ExportError, match=match):
            export_bundle(FINETUNE, tmp_path / "bad", weights=weights, settings=bad)
        assert not (tmp_path / "bad").exists()


@pytest.mark.monailabel
def test_monailabel_server_infers_like_the_bundle_and_trains(tmp_path, monailabel_venv):
    timings: dict[str, float] = {}
    env = _venv_env(monailabel_venv)

    # the sample app ships inside the monailabel package: `apps --download` copies it (no network)
    start = time.monotonic()
    proc = subprocess.run(["monailabel", "apps", "--download", "--name", "monaibundle", "--output",
                           str(tmp_path / "apps")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    app = tmp_path / "apps" / "monaibundle"
    assert (app / "main.py").is_file(), proc.stdout + proc.stderr
    timings["app copy"] = time.monotonic() - start

    # studies: 2 synthetic patients (4 volumes), the 2 volumes of patient001 labeled (labels/final/<id>.nii.gz),
    # and a datalist whose 'unlabeled' split is every image of the studies folder
    from custom.data.synthetic import generate_acdc

    acdc = generate_acdc(tmp_path / "acdc", cases=2)
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for src in sorted(acdc.glob("patient*/patient*_frame??.nii.gz")):
        shutil.copy2(src, studies / src.name)
    for src in sorted(acdc.glob("patient001/patient001_frame??_gt.nii.gz")):
        shutil.copy2(src, studies / "labels" / "final" / src.name.replace("_gt", ""))
    images = sorted(studies.glob("*.nii.gz"))
    (studies / "unlabeled.json").write_text(json.dumps({"unlabeled": [{"image": p.name} for p in images]}))
    image = studies / "patient001_frame01.nii.gz"
    image_id = "patient001_frame01"

    # the bundle: random ResNet-18 weights; settings written into the configs (the server takes no CLI overrides):
    # the network, the unlabeled stream from the studies folder, and a 2-iteration training epoch
    torch.manual_seed(0)
    weights = tmp_path / "weights.pt"
    torch.save(DualDecoderUNet("resnet18").state_dict(), weights)
    bundle = app / "model" / MODEL
    settings = {"backbone": "resnet18", "train:datalist": json.dumps(str(studies / "unlabeled.json")),
                "train:dataset_dir": json.dumps(str(studies)), "batch_size": 2, "unlabeled_batch_size": 2,
                "epoch_length": 2, "max_iterations": 2, "val_interval": 1}
    result = export_bundle(FINETUNE, bundle, weights=weights, settings=settings)
    assert "configs/inference.yaml" in result.settings["backbone"]
    assert result.settings["train:datalist"] == ["configs/train.yaml"]

    # reference: the bundle's own inference in this environment, run from the exported folder
    start = time.monotonic()
    ref_dir = tmp_path / "ref"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
         "--input_glob", str(image), "--output_dir", str(ref_dir)],
        cwd=bundle, env=_clean_env(PYTHONPATH=str(bundle)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, _tail(proc.stdout + proc.stderr)
    timings["bundle inference"] = time.monotonic() - start
    reference = np.asarray(nib.load(ref_dir / f"{image_id}_seg.nii.gz").dataobj)
    assert not (bundle / "data").exists() and not (bundle / "eval").exists()

    server = Server(monailabel_venv, app, studies, tmp_path / "server.log")
    try:
        start = time.monotonic()
        info = server.wait_ready(START_TIMEOUT_S)
        timings["server start"] = time.monotonic() - start
        assert MODEL in info["models"], info["models"]
        model = info["models"][MODEL]
        assert model["labels"] == {"rv": 1, "myo": 2, "lv": 3}, model
        assert model["type"] == "segmentation", model
        assert MODEL in info["trainers"], info["trainers"]
        stats = _get_json(f"{server.url}/datastore/?output=stats")
        assert stats["total"] == len(images) and stats["completed"] == 2, stats

        start = time.monotonic()
        seg = server.infer(image_id, tmp_path / "monailabel_seg")
        timings["infer request"] = time.monotonic() - start

        # MONAI Label training: labeled items from the datastore (1 train / 1 validation), unlabeled from the datalist
        mtime = (bundle / "models" / "model.pt").stat().st_mtime_ns
        start = time.monotonic()
        task = server.train({"max_epochs": 1, "val_split": 0.5, "multi_gpu": False}, timeout=INFER_TIMEOUT_S)
        timings["train request"] = time.monotonic() - start
        assert task["status"] == "DONE", task
        log = server.text()
        assert f"slices from {len(images)} volumes" in log, "the unlabeled stream: every image of the studies folder"
        assert "Total Records for Training: 1" in log and "Total Records for Validation: 1" in log
        assert (bundle / "models" / "model.pt").stat().st_mtime_ns != mtime, "training saved no new model.pt"
        assert not (bundle / "data").exists(), "training must not fall back to the built-in synthetic dataset"

        after = server.infer(image_id, tmp_path / "monailabel_seg_trained")  # served with the new weights
        assert after.shape == seg.shape and "Reload model from cache" in server.text()
    except BaseException:
        print(f"---- MONAI Label server log ({server.log}) ----\n{_tail(server.text(), 20000)}")
        raise
    finally:
        server.stop()
    print("[monailabel] timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))

    src = nib.load(image)
    labels = np.asarray(seg.dataobj)
    assert labels.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    assert set(np.unique(labels).astype(int).tolist()) <= {0, 1, 2, 3}
    assert np.array_equal(labels, np.round(labels)), "labels must be integers"
    assert len(np.unique(reference)) > 1, "the reference prediction is a single label: the comparison would be empty"
    dice = {k: _dice(labels, reference, k) for k in (0, 1, 2, 3)}
    agreement = float((labels == reference).mean())
    print(f"[monailabel] agreement with monai.bundle run: {agreement:.5f} of voxels, Dice per label {dice}")
    assert all(d > 0.99 for d in dice.values()), dice
