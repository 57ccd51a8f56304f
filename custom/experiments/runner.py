"""Run pre-training and fine-tuning bundles as subprocesses, resumably, and collect their evaluation results.

Each run lives in its own folder (used as the bundle's ``bundle_root``) with ``train.log`` / ``eval.log``, the
bundle outputs (``models/``, ``eval/``), ``timing.json`` and, once finished, ``result.json``. A folder with
``result.json`` is skipped; one with ``models/last_checkpoint.pt`` but no result is resumed from that checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from monai.bundle import ConfigParser

from custom import paths
from custom.atomic import write_json_atomic
from custom.experiments.plan import REPO_ROOT, Profile, RunSpec

__all__ = ["BundleRun", "RunFailed", "bundle_command", "child_env", "read_summary", "run_logged"]


class RunFailed(RuntimeError):
    """A bundle subprocess exited with an error; the message names the run and its log."""


class Interrupted(SystemExit):
    """The runner got SIGTERM/SIGINT; the child has saved its state and exited. Carries the child's wall time."""

    def __init__(self, code: int, seconds: float) -> None:
        super().__init__(code)
        self.seconds = seconds


def _format_value(value: Any) -> str:
    """A command-line value that ``fire`` (behind ``monai.bundle run``) parses back into ``value``."""
    if isinstance(value, (bool, type(None))):
        return repr(value)
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _config_files(configs: Sequence[str]) -> list[str]:
    """Config paths as given, relative ones taken from the repository root."""
    return [str(p if Path(p).is_absolute() else REPO_ROOT / p) for p in configs]


def bundle_command(action: str, configs: Sequence[str], overrides: Mapping[str, Any], logging_file: str | None) -> list[str]:
    """``python -m monai.bundle run <action> --config_file [...] --key value ...`` as an argument list."""
    files = _config_files(configs)
    cmd = [sys.executable, "-m", "monai.bundle", "run", action, "--config_file", json.dumps(files)]
    if logging_file:
        cmd += ["--logging_file", logging_file]
    for key, value in overrides.items():
        cmd += [f"--{key}", _format_value(value)]
    return cmd


def read_summary(path: Path) -> dict[str, dict[str, float]]:
    """``summary.csv`` of :class:`custom.handlers.VolumeMetricsSaver` as ``{metric: {mean, std, n}}``."""
    with open(path, newline="") as f:
        return {row["metric"]: {"mean": float(row["mean"]), "std": float(row["std"]), "n": int(row["n"])} for row in csv.DictReader(f)}


class _Child:
    """The running subprocess: SIGTERM/SIGINT of the runner are forwarded to it (it saves its state and exits), and
    the runner exits with 128 + signal once it has. The handler only forwards and records: waiting happens in
    :func:`run_logged` (``Popen.wait`` cannot be re-entered from a signal handler)."""

    process: subprocess.Popen | None = None
    signum: int | None = None

    @classmethod
    def forward(cls, signum: int, frame: Any) -> None:
        cls.signum = signum
        if cls.process is not None and cls.process.poll() is None:
            cls.process.send_signal(signal.SIGTERM)
        else:
            sys.exit(128 + signum)


def install_signal_forwarding() -> None:
    signal.signal(signal.SIGTERM, _Child.forward)
    signal.signal(signal.SIGINT, _Child.forward)


def child_env() -> dict[str, str]:
    """Environment of the bundle subprocesses: ``custom`` importable even when not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_logged(cmd: list[str], log: Path, env: Mapping[str, str] | None = None) -> float:
    """Run ``cmd`` with stdout/stderr appended to ``log``; returns wall seconds; raises RunFailed on error."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        _Child.process = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env or child_env())
        deadline = None
        while (rc := _Child.process.poll()) is None:
            if _Child.signum is not None:
                deadline = deadline or time.monotonic() + 300  # the child finishes its iteration and saves
                if time.monotonic() > deadline:
                    _Child.process.kill()
            time.sleep(0.2)
        _Child.process = None
    if _Child.signum is not None:
        raise Interrupted(128 + _Child.signum, time.perf_counter() - start)
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RunFailed(f"{log}: exit code {rc}: " + " | ".join(tail))
    return time.perf_counter() - start


class BundleRun:
    """One bundle run in ``folder``: train (resuming an interrupted run), then optionally evaluate.

    Args:
        folder: the run's folder, passed to the bundle as ``bundle_root``.
        bundle: ``"ideal_finetune"`` or ``"ideal_pretrain"`` (for its ``logging.conf``).
        configs: config files of the training run (repository-relative or absolute).
        overrides: bundle overrides (``dataset_dir``, ``datalist``, ``seed``, ...).
        eval_configs: config files of the evaluation run (None: no evaluation).
        eval_overrides: extra overrides of the evaluation run.
    """

    def __init__(
        self,
        folder: Path,
        bundle: str,
        configs: Sequence[str],
        overrides: Mapping[str, Any],
        eval_configs: Sequence[str] | None = None,
        eval_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.configs, self.overrides = list(configs), {**overrides, "bundle_root": str(self.folder)}
        self.eval_configs, self.eval_overrides = eval_configs, dict(eval_overrides or {})
        self.logging_file = paths.bundle_config(bundle, "logging.conf")

    @property
    def result_file(self) -> Path:
        return self.folder / "result.json"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "models" / "last_checkpoint.pt"

    def done(self) -> bool:
        return self.result_file.is_file()

    def _timing(self) -> dict[str, Any]:
        path = self.folder / "timing.json"
        return json.loads(path.read_text()) if path.is_file() else {"train_s": 0.0, "eval_s": 0.0, "train_attempts": 0, "trained": False}

    def _save_timing(self, timing: Mapping[str, Any]) -> None:
        write_json_atomic(dict(timing), self.folder / "timing.json")

    def _trainer_state(self) -> dict[str, Any]:
        if not self.checkpoint.is_file():
            return {}
        # mmap: only the small trainer entry is read, not the network and optimiser tensors (hundreds of MB)
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return dict(state.get("trainer") or {})

    def iterations(self) -> int | None:
        """Iterations completed according to the resumable checkpoint."""
        trainer = self._trainer_state()
        return int(trainer["iteration"]) if "iteration" in trainer else None

    def _checkpoint_complete(self) -> bool:
        t = self._trainer_state()
        return bool(t) and t.get("epoch_length") is not None and t["iteration"] >= t["epoch_length"] * t["max_epochs"]

    def train(self, log: Any = print) -> dict[str, Any]:
        timing = self._timing()
        if not timing["trained"] and self._checkpoint_complete():
            # training ended (e.g. SIGTERM in its last iteration) but was not recorded: resuming would start over
            timing["trained"] = True
            self._save_timing(timing)
        if timing["trained"]:
            return timing
        overrides = dict(self.overrides)
        if self.checkpoint.is_file():
            overrides["resume_from"] = str(self.checkpoint)
            log(f"  resuming from {self.checkpoint} (iteration {self.iterations()})")
        timing["train_attempts"] += 1
        self._save_timing(timing)
        start, trained = time.perf_counter(), False
        try:
            run_logged(bundle_command("training", self.configs, overrides, self.logging_file), self.folder / "train.log")
            trained = True
        finally:  # failed and interrupted attempts count towards the training time too
            timing = self._timing()
            timing["train_s"] += time.perf_counter() - start
            timing["trained"] = trained
            self._save_timing(timing)
        return timing

    def evaluate(self) -> dict[str, dict[str, float]]:
        timing = self._timing()
        overrides = {**self.overrides, **self.eval_overrides}
        seconds = run_logged(bundle_command("evaluating", self.eval_configs or [], overrides, self.logging_file), self.folder / "eval.log")
        timing["eval_s"] += seconds
        self._save_timing(timing)
        return read_summary(self.folder / "eval" / "summary.csv")

    def eval_setting(self, key: str) -> Any:
        """``key`` as the evaluation sees it: this run's overrides, else the layered evaluation configs."""
        overrides = {**self.overrides, **self.eval_overrides}
        if key in overrides:
            return overrides[key]
        parser = ConfigParser()
        parser.read_config(_config_files(self.eval_configs))
        return parser.get(key)

    def run(self, extra: Mapping[str, Any], log: Any = print) -> dict[str, Any]:
        """Train and evaluate unless done; returns (and writes atomically) ``result.json``."""
        if self.done():
            return json.loads(self.result_file.read_text())
        timing = self.train(log)
        summary = self.evaluate() if self.eval_configs else {}
        result = {
            **extra,
            "iterations": self.iterations(),
            "train_min": round(timing["train_s"] / 60, 2),
            "eval_min": round(self._timing()["eval_s"] / 60, 2),
            "train_attempts": timing["train_attempts"],
            "test_time_views": self.eval_setting("test_time_views") if self.eval_configs else None,
            "model_selection": self.eval_setting("model_selection") if self.eval_configs else None,
            "metrics": summary,
        }
        write_json_atomic(result, self.result_file)
        return result


def label_overrides(labels: Mapping[str, int] | None) -> tuple[dict[str, Any], dict[str, int]]:
    """Bundle overrides for a protocol's label set and the evaluation ``structures`` ({name: class index}).

    Labels other than 0..C-1 (MMWHS: 0, 205, ..., 850) are mapped to classes in the order of their raw values, via
    ``num_classes`` and ``label_values`` (training and evaluation alike)."""
    if not labels:
        return {}, {"RV": 1, "MYO": 2, "LV": 3}
    ordered = sorted(labels.items(), key=lambda kv: kv[1])
    structures = {name: i for i, (name, _) in enumerate(ordered) if i > 0}
    raw = [v for _, v in ordered]
    overrides: dict[str, Any] = {"num_classes": len(raw)}
    if raw != list(range(len(raw))):
        overrides["label_values"] = raw
    return overrides, structures


def finetune_run(folder: Path, spec: RunSpec, profile: Profile, dataset_dir: str, datalist: Path, eval_split: str,
                 encoder: Path | None, labels: Mapping[str, int] | None = None) -> BundleRun:
    """The fine-tuning :class:`BundleRun` of ``spec`` under ``profile`` (``labels``: the protocol's label set)."""
    extra, structures = label_overrides(labels)
    configs = [*profile.finetune_configs, *spec.method.finetune_configs]
    overrides: dict[str, Any] = {
        "dataset_dir": dataset_dir,
        "datalist": str(datalist),
        "seed": spec.seed,
        **extra,
        **profile.finetune_overrides,
        **spec.method.finetune_overrides,
    }
    if encoder is not None:
        overrides["pretrained_encoder"] = str(encoder)
    return BundleRun(
        folder, "ideal_finetune", configs, overrides,
        eval_configs=[*configs, "bundles/ideal_finetune/configs/evaluate.yaml"],
        eval_overrides={"eval_split": eval_split, "save_predictions": True, "structures": structures},
    )


def pretrain_run(folder: Path, kind: str, kind_overrides: Mapping[str, Any], profile: Profile, dataset_dir: str,
                 datalist: Path, seed: int) -> BundleRun:
    """The pre-training :class:`BundleRun` of one pre-training kind (its encoder: ``models/encoder.pt``)."""
    overrides = {"dataset_dir": dataset_dir, "datalist": str(datalist), "seed": seed, **profile.pretrain_overrides, **kind_overrides}
    return BundleRun(folder, "ideal_pretrain", profile.pretrain_configs, overrides)

