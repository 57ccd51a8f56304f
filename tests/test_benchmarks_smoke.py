"""Every benchmark script runs end to end with ``--quick`` (resnet18, 64 px, 2 iterations) and prints its headline.

The four scripts start together as subprocesses (one thread each), so the module costs about as long as the
slowest script; the timings they print are meaningless at these sizes.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = {
    "train_step.py": r"train_step ratio plain/bundle \(>1: bundle faster\): 64 px \d+\.\d+x",
    "pretrain_step.py": r"pretrain_step ratio plain/bundle \(>1: bundle faster\): 64 px \d+\.\d+x",
    "dense_loss.py": r"dense_loss ratio naive/chunked peak memory at stride 8: (\d+\.\d+|nan)x",
    "inference.py": r"inference ratio plain/bundle \(>1: bundle faster\): 64 px \d+\.\d+x",
}
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def runs():
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCHMARKS / name), "--quick", "--device", "cpu"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in SCRIPTS
    }
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=TIMEOUT_S)
            results[name] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_quick_run_prints_its_ratio(runs, name):
    code, out, err = runs[name]
    assert code == 0, f"{name} exited {code}:\n{err[-3000:]}"
    headline = [line for line in out.splitlines() if line.startswith("Headline:")]
    assert len(headline) == 1, out[-3000:]
    assert re.search(SCRIPTS[name], headline[0]), headline[0]
    assert "| CPU |" in out and "| torch threads |" in out, "the machine table is missing"
