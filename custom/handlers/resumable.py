"""The resumable state of a run as one handler: what the bundle configs attach."""

from __future__ import annotations

import os
from typing import Any, Mapping

from ignite.engine import Engine

from custom.handlers.checkpoint import AtomicCheckpointSaver, ResumeFromCheckpoint
from custom.handlers.signals import SaveOnSignal

__all__ = ["ResumableState"]


class ResumableState:
    """The resumable state of a run: saved atomically (:class:`AtomicCheckpointSaver`) every ``save_interval`` epochs,
    at the end and on SIGTERM/SIGINT (:class:`SaveOnSignal`), restored from ``resume_from`` when given
    (:class:`ResumeFromCheckpoint`).

    Attach it to the trainer after the trainer's own handlers, so that an epoch's checkpoint holds what they did at
    that epoch's end (scheduler step, validation, best metric).

    Args:
        save_dir: output folder of ``filename``.
        state: objects with ``state_dict()`` / ``load_state_dict()``: network(s), optimizer, lr scheduler, trainer;
            None values (an optional part that is off, such as the weight average) are left out.
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
        state = {key: value for key, value in state.items() if value is not None}
        self.saver = AtomicCheckpointSaver(save_dir, state, save_interval=save_interval, filename=filename)
        self.save_on_signal = SaveOnSignal(self.saver)
        self.resume = ResumeFromCheckpoint(resume_from, state, map_location=map_location) if resume_from else None

    def attach(self, engine: Engine) -> None:
        """Register the saves and, when resuming, restore the state now: call before ``engine.run()``."""
        self.saver.attach(engine)
        self.save_on_signal.attach(engine)
        if self.resume is not None:
            self.resume.attach(engine)
