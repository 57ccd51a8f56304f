"""What a training run will do, and how far it is: a start banner, then a progress bar or ETA log lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Mapping, Sequence

from ignite.engine import Engine, Events

__all__ = ["TrainingProgress", "format_duration"]


def _logger() -> logging.Logger:
    # looked up at use, not at import: a logger that exists when a bundle applies its logging.conf is disabled by it
    return logging.getLogger("train_log")


def format_duration(seconds: float) -> str:
    """``"1 h 05 min"``, ``"12 min"``, ``"40 s"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


class TrainingProgress:
    """Logs a one-line plan when the run starts (``what``: device, precision, backbone, size, iterations), the
    estimated duration once ``estimate_after`` iterations are timed, then progress: an Ignite ``ProgressBar`` with ETA
    when stderr is a terminal, else one log line every ``log_interval`` iterations with iterations/s and the ETA.
    Attached to an evaluator (``task="evaluating"``, ``unit="volumes"``) it reports volumes instead.

    Args:
        what: the facts of the banner, e.g. ``{"backbone": "resnet18", "size": 128}``.
        task: the banner's first word and the end line's (``"training finished: ..."``).
        unit: what one engine iteration is, plural (``"iterations"``, ``"volumes"``).
        phase_starts: iterations at which the cost of an iteration changes (the end of the supervised warm-up: the
            unlabeled batch is read and forwarded from then on); ``estimate_after`` iterations into each phase the
            duration is estimated again from that phase's rate, since the first estimate only saw the cheaper one,
            and the ETA lines from then on use the rate since the phase started.
        estimate_after: iterations timed before the duration estimate (the first ones are slower: warm-up).
        log_interval: iterations between the plain log lines.
        progress_bar: True/False, or None to use a bar exactly when stderr is a terminal.
    """

    def __init__(self, what: Mapping[str, Any] | None = None, estimate_after: int = 10, log_interval: int = 50,
                 progress_bar: bool | None = None, task: str = "training", unit: str = "iterations",
                 phase_starts: Sequence[int] = ()) -> None:
        self.what = dict(what or {})
        self.task, self.unit = task, unit
        self._one = unit[:-1] if unit.endswith("s") else unit
        self.phase_starts = sorted(int(i) for i in phase_starts)
        self._phase: tuple[int, float] | None = None  # (first iteration, start time) of the phase being timed
        self.estimate_after, self.log_interval = max(1, int(estimate_after)), max(1, int(log_interval))
        self.progress_bar = sys.stderr.isatty() if progress_bar is None else bool(progress_bar)
        self._t0: float | None = None
        self._i0 = 0
        self._rate_since: tuple[int, float] = (0, 0.0)  # (iteration, time) the ETA's rate is measured from

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        if self.progress_bar:
            from ignite.contrib.handlers import ProgressBar

            ProgressBar(persist=False).attach(engine)

    def _total(self, engine: Engine) -> int:
        return int(engine.state.max_epochs * (engine.state.epoch_length or 0))

    def _started(self, engine: Engine) -> None:
        facts = ", ".join(f"{k} {v}" for k, v in self.what.items())
        start = engine.state.iteration
        _logger().info("%s: %s%s %d..%d", self.task, facts + "; " if facts else "", self.unit, start, self._total(engine))
        self._t0, self._i0 = time.perf_counter(), start
        self._rate_since = (start, self._t0)

    def _rate(self, engine: Engine) -> float:
        """Iterations per second since the start, or since the current phase started."""
        since, t = self._rate_since
        return (engine.state.iteration - since) / max(time.perf_counter() - t, 1e-9)

    def _iteration_completed(self, engine: Engine) -> None:
        iteration = engine.state.iteration
        done, left = iteration - self._i0, self._total(engine) - iteration
        if iteration in self.phase_starts and done > 0 and left > 0:
            self._phase = (iteration, time.perf_counter())
        elif self._phase is not None and iteration - self._phase[0] == self.estimate_after:
            self._rate_since = self._phase
            rate = self._rate(engine)
            _logger().info("estimated again after %d %s of the next phase: %s for the remaining %d %s (%.2f s/%s)",
                           self.estimate_after, self.unit, format_duration(left / rate), left, self.unit, 1 / rate,
                           self._one)
            self._phase = None
        if done == self.estimate_after:
            rate = self._rate(engine)
            later = [i for i in self.phase_starts if i > iteration]
            _logger().info("estimated duration on this machine: %s for the remaining %d %s (%.2f s/%s so far%s%s)",
                           format_duration(left / rate), left, self.unit, 1 / rate, self._one,
                           ", validation not included" if self.task == "training" else "",
                           f"; from iteration {later[0]} on an iteration costs more: estimated again then" if later else "")
        elif not self.progress_bar and done % self.log_interval == 0:
            rate = self._rate(engine)
            _logger().info("%s %d/%d, %.2f s/%s, ETA %s", self._one, iteration, self._total(engine),
                           1 / rate, self._one, format_duration(left / rate))

    def _completed(self, engine: Engine) -> None:
        if self._t0 is not None:
            _logger().info("%s finished: %d %s in %s", self.task, engine.state.iteration - self._i0, self.unit,
                           format_duration(time.perf_counter() - self._t0))
