"""Resumable training state on disk: written atomically, restored with ``weights_only=True``.

MONAI's ``CheckpointSaver`` writes in place (a kill during ``torch.save`` leaves a truncated file) and does not keep
RNG states. :class:`AtomicCheckpointSaver` writes to a temporary file beside the target and renames it, so the
file on disk is always a complete checkpoint, RNG states included (:mod:`custom.handlers.rng_state`);
:class:`ResumeFromCheckpoint` restores it. :class:`~custom.handlers.resumable.ResumableState` attaches both with
:class:`~custom.handlers.signals.SaveOnSignal`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from ignite.engine import Engine, Events

from custom import distributed
from custom.atomic import save_torch_atomic
from custom.distributed import unwrap_network
from custom.errors import InputError
from custom.handlers.rng_state import set_training_rng_state, training_rng_state

__all__ = ["AtomicCheckpointSaver", "ResumeFromCheckpoint"]

logger = logging.getLogger(__name__)


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
        state = {name: unwrap_network(obj).state_dict() for name, obj in self.save_dict.items()}
        state["rng"] = training_rng_state(engine)
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
            set_training_rng_state(state["rng"], engine)
        logger.info("resumed from %s at iteration %d", self.path, engine.state.iteration)
