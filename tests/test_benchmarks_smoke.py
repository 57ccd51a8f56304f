"""Every benchmark script runs end to end with ``--quick`` (resnet18, 64 px, 2 iterations) and prints its headline.

The four scripts start together as subprocesses (one thread each), so the module costs about as long as the
slowest script; the timings they print are meaningless at these sizes.
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = {  # headline pattern with the ratio as group 1, and the smallest ratio that counts as a working script
    "train_step.py": (r"train_step ratio plain/bundle \(>1: bundle faster\): 64 px (\d+\.\d+)x", 0.05),
    "pretrain_step.py": (r"pretrain_step ratio plain/bundle \(>1: bundle faster\): 64 px (\d+\.\d+)x", 0.05),
    # the memory ratio is what the chunked loss is for: at 128 px, batch 8 it is ~20x; below 2x the chunking is broken
    "dense_loss.py": (r"dense_loss ratio naive/chunked peak memory at stride 8: (\d+\.\d+)x", 2.0),
    "inference.py": (r"inference ratio plain/bundle \(>1: bundle faster\): 64 px (\d+\.\d+)x", 0.05),
}
# --quick's 64 px, batch 2 is too small for the resident-memory probe to see the chunked loss's allocations
EXTRA_ARGS = {"dense_loss.py": ["--size", "128", "--batch", "8", "--dim", "32"]}
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def runs():
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCHMARKS / name), "--quick", "--device", "cpu", *EXTRA_ARGS.get(name, [])],
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
    pattern, smallest = SCRIPTS[name]
    match = re.search(pattern, headline[0])
    assert match, headline[0]  # a number: "nan" or "inf" do not match
    assert math.isfinite(float(match.group(1))) and float(match.group(1)) >= smallest, headline[0]
    assert "| CPU |" in out and "| torch threads |" in out, "the machine table is missing"


def test_inference_benchmark_compares_one_pass_with_the_plain_loop(runs):
    """The plain loop runs each slice once: the bundle side must too, whatever the bundle's own default views are."""
    code, out, _ = runs["inference.py"]
    assert code == 0 and "bundle test_time_views none," in out
