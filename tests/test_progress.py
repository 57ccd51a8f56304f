"""The training banner, duration estimate and ETA lines of custom.handlers.TrainingProgress."""

from __future__ import annotations

import logging
import re
import time

from ignite.engine import Engine

from custom.handlers.progress import TrainingProgress, format_duration


def test_format_duration():
    assert format_duration(40) == "40 s"
    assert format_duration(12 * 60 + 10) == "12 min"
    assert format_duration(65 * 60) == "1 h 05 min"


def test_banner_estimate_eta_and_end(caplog):
    engine = Engine(lambda e, b: None)
    TrainingProgress({"backbone": "resnet18", "size": "128 px"}, estimate_after=3, log_interval=5,
                     progress_bar=False).attach(engine)
    with caplog.at_level(logging.INFO, logger="train_log"):
        engine.run(range(10), max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "train_log"]
    assert lines[0] == "training: backbone resnet18, size 128 px; iterations 0..20"
    assert lines[1].startswith("estimated duration on this machine: ") and "remaining 17 iterations" in lines[1]
    eta = [line for line in lines if line.startswith("iteration ")]
    assert [line.split(",")[0] for line in eta] == ["iteration 5/20", "iteration 10/20", "iteration 15/20", "iteration 20/20"]
    assert "ETA" in eta[0]
    assert lines[-1].startswith("training finished: 20 iterations in ")


def test_evaluator_reports_volumes(caplog):
    engine = Engine(lambda e, b: None)
    TrainingProgress(task="evaluating", unit="volumes", estimate_after=2, log_interval=2,
                     progress_bar=False).attach(engine)
    with caplog.at_level(logging.INFO, logger="train_log"):
        engine.run(range(4), max_epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "train_log"]
    assert lines[0] == "evaluating: volumes 0..4"
    assert "remaining 2 volumes" in lines[1] and "s/volume so far)" in lines[1]  # no "validation not included"
    assert [line.split(",")[0] for line in lines if line.startswith("volume ")] == ["volume 4/4"]
    assert lines[-1].startswith("evaluating finished: 4 volumes in ")


def test_a_new_phase_is_estimated_again_from_its_own_rate(caplog):
    def step(engine, batch):
        time.sleep(0.002 if engine.state.iteration <= 10 else 0.02)  # the second phase is 10x dearer

    engine = Engine(step)
    TrainingProgress(estimate_after=3, log_interval=5, progress_bar=False, phase_starts=[10]).attach(engine)
    with caplog.at_level(logging.INFO, logger="train_log"):
        engine.run(range(20), max_epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "train_log"]
    first = next(line for line in lines if line.startswith("estimated duration"))
    assert "from iteration 10 on an iteration costs more: estimated again then" in first
    again = [line for line in lines if line.startswith("estimated again")]
    assert len(again) == 1 and "remaining 7 iterations" in again[0]  # 3 iterations after iteration 10
    per_iteration = lambda line: float(re.search(r"\(([0-9.]+) s/iteration", line).group(1))  # noqa: E731
    assert per_iteration(again[0]) > 4 * per_iteration(first)
    # the ETA lines of the dearer phase use its own rate, not the average since the start (which is ~2x lower)
    eta_15 = next(line for line in lines if line.startswith("iteration 15/20"))
    rate_15 = float(re.search(r"([0-9.]+) s/iteration", eta_15).group(1))
    assert rate_15 > 0.75 * per_iteration(again[0])
