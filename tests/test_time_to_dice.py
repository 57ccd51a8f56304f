"""benchmarks/time_to_dice.py: the log parsing and the time-to-target rule, then one ``--quick`` run end to end."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from time_to_dice import bundle_curve, minutes_to_reach  # noqa: E402

LOG = """
$ python -m monai.bundle run training ...
2026-12-02 07:56:27,215 - INFO - training: device cpu, precision bf16, backbone resnet18
2026-12-02 07:57:31,863 - ignite.engine.engine.SupervisedEvaluator - INFO - Got new best metric of val_mean_dice: 0.45471
2026-12-02 07:57:31,863 - INFO - Epoch[2] Metrics -- val_mean_dice: 0.4547
2026-12-02 07:57:31,900 - INFO - Key metric: val_mean_dice best value: 0.4547 at epoch: 2
2026-12-02 07:59:16,195 - INFO - Epoch[4] Metrics -- val_mean_dice: 0.3724
2026-12-02 08:01:26,672 - INFO - Epoch[6] Metrics -- val_mean_dice: 0.6000
2026-12-02 08:01:27,000 - INFO - training finished: 600 iterations in 5 min
"""


def test_bundle_curve_times_points_from_the_process_start(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG)
    # the process started train_s before the "training finished" line: 08:01:27 - 330 s = 07:55:57
    curve = bundle_curve(log, train_s=330.0)
    assert [d for _, d in curve] == [0.4547, 0.3724, 0.6]  # the "new best" and "best value" lines are not points
    assert curve[0][0] == pytest.approx((60 + 34.863) / 60, abs=1e-6)
    assert curve[2][0] == pytest.approx((5 * 60 + 29.672) / 60, abs=1e-6)


def test_bundle_curve_refuses_an_unfinished_run(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(LOG.replace("training finished", "still going"))
    with pytest.raises(SystemExit, match="no 'training finished' line"):
        bundle_curve(log, train_s=1.0)


def test_minutes_to_reach_is_the_first_point_at_or_above_the_target():
    curve = [(1.0, 0.3), (2.0, 0.55), (3.0, 0.5), (4.0, 0.7)]
    assert minutes_to_reach(curve, 0.5) == 2.0
    assert minutes_to_reach(curve, 0.7) == 4.0
    assert minutes_to_reach(curve, 0.71) is None


@pytest.mark.slow
def test_quick_run_writes_the_figure_and_a_finite_headline(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "time_to_dice.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    headline = [line for line in proc.stdout.splitlines() if line.startswith("Headline:")]
    assert len(headline) == 1, proc.stdout[-3000:]
    assert re.search(r"final validation Dice (\d\.\d{3}) \((\d+\.\d) min", headline[0]), headline[0]
    for method in ("supervised", "ideal", "ideal incl. pre-training"):
        assert re.search(rf"{re.escape(method)} (\d+\.\d\dx|not reached in \d+\.\d min)", headline[0]), headline[0]
    assert (tmp_path / "time_to_dice.png").stat().st_size > 10_000
    result = json.loads((tmp_path / "time_to_dice.json").read_text())
    curves = result["curves"]
    assert len(curves["plain loop"]) == 2  # 6 iterations, validated every 3
    assert len(curves["supervised"]) == 2 and len(curves["ideal"]) == 2  # tiny profile: 2 epochs, val every epoch
    pretrain_offset = curves["ideal incl. pre-training"][0][0] - curves["ideal"][0][0]
    assert pretrain_offset > 0
    for points in curves.values():
        minutes = [m for m, _ in points]
        assert minutes == sorted(minutes) and minutes[0] > 0
        assert all(math.isfinite(d) and 0.0 <= d <= 1.0 for _, d in points)
    assert 0.0 <= result["plain_loop_test_dice"] <= 1.0
