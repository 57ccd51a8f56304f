"""Resumable training state: written atomically, restored with ``weights_only=True``, saved on SIGTERM/SIGINT.

MONAI's ``CheckpointSaver`` writes in place (a kill during ``torch.save`` leaves a truncated file) and does not keep
RNG states. :class:`AtomicCheckpointSaver` writes to a temporary file beside the target and renames it, so the
file on disk is always a complete checkpoint; :class:`ResumeFromCheckpoint` restores it, RNG states included;
:class:`SaveOnSignal` turns SIGTERM/SIGINT into "finish this iteration, save, exit with 128 + signal";
:class:`ResumableState` is the three as one handler, what the bundle configs attach.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import signal
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import Transform
from torch.utils.data import Dataset
from monai.handlers import CheckpointLoader

from custom import distributed
from custom.atomic import save_torch_atomic
from custom.distributed import unwrap_network
from custom.errors import InputError

__all__ = [
    "rng_state",
    "set_rng_state",
    "AtomicCheckpointSaver",
    "ResumeFromCheckpoint",
    "SaveOnSignal",
    "ResumableState",
    "CheckedCheckpointLoader",
    "KeyMetricState",
]

logger = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    return {
        "python": random.getstate(),
        "numpy": _pack_random_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_unpack_random_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _random_states(root: Any, path: str, found: dict[str, np.random.RandomState], seen: set[int]) -> None:
    """Collect the ``R`` of every MONAI ``Randomizable`` reachable from ``root`` (a dataset or transform)."""
    if id(root) in seen:
        return
    seen.add(id(root))
    if isinstance(root, (list, tuple)):
        for i, item in enumerate(root):
            if isinstance(item, (Transform, list, tuple)):
                _random_states(item, f"{path}[{i}]", found, seen)
        return
    if not isinstance(root, (Transform, Dataset)):
        return
    if isinstance(getattr(root, "R", None), np.random.RandomState):
        found[path] = root.R
    for key, value in vars(root).items():
        if isinstance(value, (Transform, Dataset, list, tuple)):
            _random_states(value, f"{path}.{key}", found, seen)


def transform_random_states(engine: Any) -> dict[str, np.random.RandomState]:
    """The random states of the data augmentation of a trainer's loaders (``data_loader`` and, when present,
    ``unlabeled_data_loader``), keyed by attribute path. With ``num_workers=0`` these live in the main process and
    decide every augmentation; with workers, MONAI's ``DataLoader`` reseeds them per pass from the torch RNG."""
    found: dict[str, np.random.RandomState] = {}
    seen: set[int] = set()
    for name in ("data_loader", "unlabeled_data_loader"):
        dataset = getattr(getattr(engine, name, None), "dataset", None)
        if dataset is not None:
            _random_states(dataset, name, found, seen)
    return found


def _pack_random_state(state: tuple) -> dict[str, Any]:
    """A ``RandomState.get_state()`` tuple as tensors and plain types (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = state
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "gauss": float(gauss)}


def _unpack_random_state(n: Mapping[str, Any]) -> tuple:
    return (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])


def _state_dicts(objects: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, obj in objects.items():
        obj = unwrap_network(obj)
        out[name] = obj.state_dict()
    return out


class AtomicCheckpointSaver:
    """Saves ``{name: obj.state_dict()}`` of ``save_dict`` plus RNG states to ``save_dir/filename``, atomically.

    Args:
        save_dir: output folder.
        save_dict: objects with ``state_dict()``: network(s), optimizer, lr scheduler, the trainer engine.
        save_interval: save every this many epochs (``epoch_level``) or iterations; also at the end of the run.
        epoch_level: interval unit.
        filename: the checkpoint file, overwritten by each save (resume with ``resume_from: <save_dir>/<filename>``).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        save_interval: int = 1,
        epoch_level: bool = True,
        filename: str = "last_checkpoint.pt",
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}")
        self.path = Path(save_dir) / filename
        self.save_dict, self.save_interval, self.epoch_level = dict(save_dict), save_interval, epoch_level
        self._saved_at: int | None = None

    def attach(self, engine: Engine) -> None:
        event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
        engine.add_event_handler(event(every=self.save_interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def save(self, engine: Engine | None = None) -> Path:
        if not distributed.is_rank0():
            return self.path
        if engine is not None and engine.state.iteration == self._saved_at:
            return self.path  # e.g. the last epoch end and COMPLETED
        state = _state_dicts(self.save_dict)
        state["rng"] = rng_state()
        if engine is not None:
            transforms = transform_random_states(engine)
            state["rng"]["transforms"] = {k: _pack_random_state(r.get_state()) for k, r in transforms.items()}
        save_torch_atomic(state, self.path)
        self._saved_at = engine.state.iteration if engine is not None else None
        it = engine.state.iteration if engine is not None else "?"
        logger.info("saved resumable checkpoint at iteration %s to %s", it, self.path)
        return self.path


class ResumeFromCheckpoint:
    """Restores an :class:`AtomicCheckpointSaver` file (``weights_only=True``) into objects and the trainer.

    The trainer continues at the saved iteration up to its configured ``max_epochs``, with the global RNGs and the
    random states of the data augmentation restored. The trainers start a new pass over their data loaders at
    every engine epoch (:class:`~custom.engines.base.MixedPrecisionTrainer`), so a run resumed from an
    epoch-boundary checkpoint (the periodic ones) continues exactly as the uninterrupted run would have, on CPU bit
    for bit (tested). A mid-epoch checkpoint (SIGTERM/SIGINT) resumes in the same iteration count and schedule,
    but its data pass restarts, so it is not bit-identical.

    Args:
        load_path: the checkpoint; a missing file is an error naming it.
        load_dict: the same objects as the saver's ``save_dict``.
        map_location: device for the tensors.
    """

    def __init__(self, load_path: str | os.PathLike, load_dict: Mapping[str, Any], map_location: Any = "cpu") -> None:
        self.path, self.load_dict, self.map_location = Path(load_path), dict(load_dict), map_location
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: checkpoint to resume from not found")

    def attach(self, engine: Engine) -> None:
        """Restore now: call before ``engine.run()``, so Ignite resumes mid-epoch at the saved iteration."""
        self.load(engine)

    def load(self, engine: Engine) -> None:
        try:
            state = torch.load(self.path, map_location=self.map_location, weights_only=True)
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            raise InputError(f"{self.path}: not a loadable checkpoint ({type(e).__name__}: {first})") from None
        missing = sorted(k for k, obj in self.load_dict.items() if k not in state and not getattr(obj, "optional", False))
        if missing:
            raise InputError(f"{self.path}: checkpoint lacks {', '.join(missing)} (has {', '.join(sorted(state))})")
        for name, obj in self.load_dict.items():
            obj = unwrap_network(obj)
            if name not in state:
                logger.warning("%s: no %r in the checkpoint; it starts afresh", self.path, name)
                continue
            if isinstance(obj, Engine):
                total = (obj.state.epoch_length or 1) * (obj.state.max_epochs or 0)
                if total and state[name]["iteration"] >= total:
                    raise InputError(f"{self.path}: the run is already complete (iteration {state[name]['iteration']} of "
                                     f"{total}); nothing to resume (raise max_iterations to train longer)")
                # continue the interrupted run: same iteration count, same max_epochs
                obj.state.iteration = state[name]["iteration"]
                obj.state.epoch = state[name]["iteration"] // (obj.state.epoch_length or 1)
            else:
                obj.load_state_dict(state[name])
        if "rng" in state:
            set_rng_state(state["rng"])
            live = transform_random_states(engine)
            saved = state["rng"].get("transforms", {})
            for key, packed in saved.items():
                if key in live:
                    live[key].set_state(_unpack_random_state(packed))
            if not distributed.is_rank0():
                # the checkpoint holds rank 0's streams: give the other ranks their own (not bit-exact, but ranks must
                # not draw identical augmentations)
                rank, it = distributed.rank(), int(engine.state.iteration)
                seed = (1_000_003 * it + 7919 * rank) % (2**31)
                random.seed(seed)
                np.random.seed(seed)
                torch.manual_seed(seed)
                for i, r in enumerate(live.values()):
                    r.seed((seed + i) % (2**32))
            if set(saved) != set(live):
                logger.warning("augmentation random states differ from the checkpoint's (%d saved, %d now): "
                               "the resumed run's augmentations will differ", len(saved), len(live))
        logger.info("resumed from %s at iteration %d", self.path, engine.state.iteration)


class KeyMetricState:
    """The best-key-metric record of a MONAI ``CheckpointSaver`` (``save_key_metric``) as ``state_dict`` /
    ``load_state_dict``, for the resumable state: after a resume, ``model.pt`` is replaced only by a model that beats
    the best validation score of the whole run, not by the first one validated after the resume.

    Args:
        saver: the ``CheckpointSaver``; None (e.g. disabled on non-zero ranks) makes this a no-op.
    """

    optional = True  # checkpoints written before it existed still resume

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    def _checkpoint(self) -> Any:
        return getattr(self.saver, "_key_metric_checkpoint", None)

    def state_dict(self) -> dict[str, Any]:
        ckpt = self._checkpoint()
        return {"saved": [] if ckpt is None else [(float(item.priority), str(item.filename)) for item in ckpt._saved]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ckpt = self._checkpoint()
        if ckpt is not None:
            # Ignite's own (load_)state_dict key changed across versions ("saved" / "_saved"); the list is stable
            ckpt._saved = [type(ckpt).Item(float(p), str(f)) for p, f in state.get("saved", [])]


class SaveOnSignal:
    """On SIGTERM/SIGINT: finish the current iteration, save ``saver``, exit with status 128 + signal number.

    Under ``torch.distributed`` the flag is all-reduced (MAX) after every iteration, so all processes stop at the same
    iteration (one process leaving early would block the others in the next gradient all-reduce, and only rank 0
    writes the checkpoint).
    """

    def __init__(self, saver: AtomicCheckpointSaver, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.saver, self.signals = saver, signals
        self._received: int | None = None
        self._previous: dict[int, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._install)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        engine.add_event_handler(Events.COMPLETED, self._restore)

    def _install(self, engine: Engine) -> None:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _restore(self, engine: Engine | None = None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._received = signum

    def _check(self, engine: Engine) -> None:
        if distributed.is_distributed():
            flag = torch.tensor([self._received or 0], dtype=torch.int64)
            if torch.distributed.get_backend() == "nccl":
                flag = flag.cuda()
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self._received = int(flag.item()) or None
        if self._received is None:
            return
        self.saver.save(engine)
        self._restore()
        name = signal.Signals(self._received).name
        engine.logger.warning("%s received: state saved at iteration %d, exiting", name, engine.state.iteration)
        raise SystemExit(128 + self._received)


class ResumableState:
    """The resumable state of a run: saved atomically (:class:`AtomicCheckpointSaver`) every ``save_interval`` epochs,
    at the end and on SIGTERM/SIGINT (:class:`SaveOnSignal`), restored from ``resume_from`` when given
    (:class:`ResumeFromCheckpoint`).

    Attach it to the trainer after the trainer's own handlers, so that an epoch's checkpoint holds what they did at
    that epoch's end (scheduler step, validation, best metric).

    Args:
        save_dir: output folder of ``filename``.
        state: objects with ``state_dict()`` / ``load_state_dict()``: network(s), optimizer, lr scheduler, trainer.
        save_interval: epochs between saves.
        filename: the checkpoint file, overwritten by each save.
        resume_from: a checkpoint of this state to continue from; None or "" starts afresh. A missing file is an
            error naming it, raised here.
        map_location: device for the restored tensors.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        state: Mapping[str, Any],
        save_interval: int = 1,
        filename: str = "last_checkpoint.pt",
        resume_from: str | os.PathLike | None = None,
        map_location: Any = "cpu",
    ) -> None:
        self.saver = AtomicCheckpointSaver(save_dir, state, save_interval=save_interval, filename=filename)
        self.save_on_signal = SaveOnSignal(self.saver)
        self.resume = ResumeFromCheckpoint(resume_from, state, map_location=map_location) if resume_from else None

    def attach(self, engine: Engine) -> None:
        """Register the saves and, when resuming, restore the state now: call before ``engine.run()``."""
        self.saver.attach(engine)
        self.save_on_signal.attach(engine)
        if self.resume is not None:
            self.resume.attach(engine)


def _mismatch_summary(message: str) -> str:
    """The gist of ``load_state_dict``'s error: counts of missing/unexpected keys and the first size mismatch."""
    parts = []
    for label, pattern in (("missing", r"Missing key\(s\) in state_dict: (.*?)(?:\.\s*$|\.\s*\n|\n)"),
                           ("unexpected", r"Unexpected key\(s\) in state_dict: (.*?)(?:\.\s*$|\.\s*\n|\n)")):
        found = re.search(pattern, message, flags=re.S)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            parts.append(f"{len(keys)} {label} tensors, e.g. {keys[0]}" if keys else f"{label} tensors")
    sizes = re.findall(r"size mismatch for ([^:]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint, "
                       r"the shape in current model is torch\.Size\((\[[^\]]*\])\)", message)
    if sizes:
        name, theirs, ours = sizes[0]
        parts.append(f"{len(sizes)} shape mismatches, e.g. {name} {theirs} in the file vs {ours} in the network")
    return "; ".join(parts) or message.strip().splitlines()[0][:300]


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's :class:`~monai.handlers.CheckpointLoader` (``weights_only=True``) whose failures are one-line
    :class:`~custom.errors.InputError` s naming the file and the problem: missing file, unreadable file, or weights of
    another architecture (other backbone, class count or decoder: counts of missing/unexpected/mis-shaped tensors)."""

    def __call__(self, engine: Engine) -> None:
        path = os.fspath(self.load_path)
        if not os.path.isfile(path):
            raise InputError(f"{path}: checkpoint not found")
        try:
            super().__call__(engine)
        except RuntimeError as e:
            message = str(e)
            if "state_dict" in message or "size mismatch" in message:
                raise InputError(f"{path}: checkpoint of another architecture ({_mismatch_summary(message)}); "
                                 "check backbone / num_classes against the training run") from None
            raise InputError(f"{path}: not a readable checkpoint ({message.strip().splitlines()[0][:200]})") from None
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, AttributeError) as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first})") from None
