"""Interruption, resume and determinism of the fine-tuning bundle (subprocesses, ResNet-18 at 64 px)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from monai.bundle import run

CONFIG = Path(__file__).resolve().parents[1] / "bundles" / "ideal_finetune" / "configs" / "train.yaml"
TINY = ["--backbone", "resnet18", "--spatial_size", "64", "--batch_size", "2", "--unlabeled_batch_size", "2",
        "--epoch_length", "4", "--val_interval", "100", "--max_iterations", "20"]

pytestmark = pytest.mark.slow


def _start(root: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIG),
           "--bundle_root", str(root), *TINY, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended before writing {path}:\n{proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"no {path} after {timeout} s")
        time.sleep(0.2)


def _iteration(path: Path) -> int:
    return torch.load(path, weights_only=True)["trainer"]["iteration"]


def _wait_for_iteration(path: Path, proc: subprocess.Popen, at_least: int, timeout: float = 300) -> None:
    """Wait until the checkpoint on disk (written atomically) is at ``at_least`` iterations or more."""
    _wait_for(path, proc, timeout)
    deadline = time.time() + timeout
    while _iteration(path) < at_least:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not reach iteration {at_least}")
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_interrupted_run_resumes_to_the_same_iteration_count(tmp_path, sig):
    ckpt = tmp_path / "models" / "last_checkpoint.pt"
    proc = _start(tmp_path)
    _wait_for(ckpt, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
        assert "SIGTERM received: state saved" in out
    else:
        assert proc.returncode == -signal.SIGKILL
    interrupted_at = _iteration(ckpt)  # the file on disk is complete whatever the moment of the kill
    assert 4 <= interrupted_at < 20
    assert not list(ckpt.parent.glob(".*.tmp")) or sig == signal.SIGKILL

    resumed = _start(tmp_path, "--resume_from", str(ckpt))
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert f"resumed from {ckpt} at iteration {interrupted_at}" in out
    assert _iteration(ckpt) == 20


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    """SIGKILL leaves the last epoch-boundary checkpoint; resuming from it restores weights, optimiser, schedule,
    global RNGs and the augmentations' random states, and each epoch starts a new data pass, so the resumed run
    ends bit-identical to one that was never interrupted (same seed, same thread count)."""
    full = _start(tmp_path / "full")
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out[-3000:]

    ckpt = tmp_path / "killed" / "models" / "last_checkpoint.pt"
    proc = _start(tmp_path / "killed")
    _wait_for_iteration(ckpt, proc, at_least=8)  # past the first epoch boundary (epochs of 4 iterations)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)
    killed_at = _iteration(ckpt)
    assert 8 <= killed_at < 20 and killed_at % 4 == 0
    resumed = _start(tmp_path / "killed", "--resume_from", str(ckpt))
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    # it really resumed: it ran only the remaining iterations (a fresh run with the same seed would reach the same
    # weights by running all 20, so the weights alone cannot tell)
    assert f"iterations {killed_at}..20" in out and f"training finished: {20 - killed_at} iterations" in out, out[-3000:]

    a = torch.load(tmp_path / "full" / "models" / "last_checkpoint.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert a["trainer"]["iteration"] == b["trainer"]["iteration"] == 20
    for k in a["network"]:
        assert torch.equal(a["network"][k], b["network"][k]), k
    assert a["lr_scheduler"] == b["lr_scheduler"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    assert a["rng"]["transforms"].keys() == b["rng"]["transforms"].keys() and len(a["rng"]["transforms"]) >= 5


def test_same_seed_gives_identical_training(tmp_path):
    overrides = dict(backbone="resnet18", spatial_size=64, batch_size=2, unlabeled_batch_size=2, max_iterations=3,
                     epoch_length=3, val_interval=100)
    states = []
    for name in ("a", "b"):
        run("training", config_file=str(CONFIG), bundle_root=str(tmp_path / name), **overrides)
        states.append(torch.load(tmp_path / name / "models" / "last_checkpoint.pt", weights_only=True)["network"])
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    other = tmp_path / "c"
    run("training", config_file=str(CONFIG), bundle_root=str(other), seed=1, **overrides)
    changed = torch.load(other / "models" / "last_checkpoint.pt", weights_only=True)["network"]
    assert any(not torch.equal(states[0][k], changed[k]) for k in changed if changed[k].is_floating_point())


def test_best_metric_survives_a_resume(tmp_path):
    """The resumable state carries the best validation score, so the first validation after a resume does not
    overwrite a better models/model.pt."""
    from ignite.engine import Engine
    from monai.handlers import CheckpointSaver

    from custom.handlers import KeyMetricState

    def saver():
        net = torch.nn.Linear(2, 2)
        return net, CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt")

    def validate(s, dice):
        engine = Engine(lambda e, b: None)
        engine.state.metrics, engine.state.key_metric_name = {"val_mean_dice": dice}, "val_mean_dice"
        engine.state.epoch = engine.state.iteration = 1
        s._key_metric_checkpoint(engine)

    net, before = saver()
    validate(before, 0.7)
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({"best_model": KeyMetricState(before).state_dict()}, tmp_path / "state.pt")

    net, after = saver()  # the resumed process: new weights, new saver
    KeyMetricState(after).load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True)["best_model"])
    validate(after, 0.5)
    kept = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(best[k], kept[k]) for k in best)  # the worse model did not replace the best one
    validate(after, 0.9)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], net.weight)
    assert KeyMetricState(None).state_dict() == {"saved": []}


def test_resumed_run_continues_the_weight_average(tmp_path):
    """With `weight_average_decay` the average is part of the resumable state: a run stopped after its first epoch and
    resumed ends with the same averaged weights as one that was never stopped (a fresh average would restart from
    the resumed weights)."""
    from ignite.engine import Events
    from monai.bundle import create_workflow

    overrides = dict(backbone="resnet18", spatial_size=64, batch_size=2, unlabeled_batch_size=2, max_iterations=4,
                     epoch_length=2, val_interval=100, weight_average_decay=0.5)
    run("training", config_file=str(CONFIG), bundle_root=str(tmp_path / "full"), **overrides)

    stopped = create_workflow(config_file=str(CONFIG), run_id="training", bundle_root=str(tmp_path / "resumed"),
                              **overrides)
    stopped.parser.get_parsed_content("train#trainer").add_event_handler(
        Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    stopped.run()
    stopped.finalize()
    ckpt = tmp_path / "resumed" / "models" / "last_checkpoint.pt"
    assert _iteration(ckpt) == 2
    run("training", config_file=str(CONFIG), bundle_root=str(tmp_path / "resumed"), resume_from=str(ckpt), **overrides)

    a = torch.load(tmp_path / "full" / "models" / "last_checkpoint.pt", weights_only=True)
    b = torch.load(ckpt, weights_only=True)
    assert b["trainer"]["iteration"] == 4
    for k in a["averaged_network"]:
        assert torch.equal(a["averaged_network"][k], b["averaged_network"][k]), k
