"""scripts/gpu_paper_check.sh end to end on the CPU with the tiny profile (real ACDC copy, labeled set L1 only)."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ACDC = REPO.parent / "shared" / "data" / "acdc"

pytestmark = [pytest.mark.slow, pytest.mark.realdata,
              pytest.mark.skipif(not ACDC.is_dir(), reason="real ACDC copy not found at ../shared/data/acdc")]


def test_gpu_paper_check_writes_the_results_of_both_methods(tmp_path):
    env = {**os.environ, "FRACTIONS": "L1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_paper_check.sh"), str(ACDC), str(tmp_path / "out"), "tiny"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "out" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["ideal", "supervised"]
    assert all(r["fraction"] == "L1" and r["eval_volumes"] == "20" for r in rows)  # 10 held-out patients, ED + ES
    assert (tmp_path / "out" / "results.md").is_file()
    assert "gpu_paper_check:" in proc.stdout
