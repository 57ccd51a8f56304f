"""Stop a training run cleanly on SIGTERM/SIGINT: finish the iteration, save the resumable state, exit."""

from __future__ import annotations

import signal
from typing import Any

import torch
from ignite.engine import Engine, Events

from custom import distributed
from custom.handlers.checkpoint import AtomicCheckpointSaver

__all__ = ["SaveOnSignal"]


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
