"""The experiment runner: planning, hold-out, tables, and a real tiny run (resumable, rerun skips, kill -9 resumes)."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from custom.errors import InputError
from custom.experiments.plan import (REPO_ROOT, Method, holdout_cases, load_methods, load_profile, plan_runs,
                                     with_extra_validation, with_holdout)
from custom.experiments.runner import bundle_command
from custom.experiments.tables import result_rows, results_markdown

# a six-patient protocol over the built-in synthetic data keeps the bundle runs short
PROTOCOL = {
    "name": "mini_acdc",
    "description": "six synthetic patients",
    "layout": "acdc",
    "labels": {"background": 0, "RV": 1, "MYO": 2, "LV": 3},
    "all_cases": {"first": 1, "last": 6},
    "test": [6],
    "validation": [5],
    "labeled": {"L1": {"fraction": 0.25, "c1": [1]}, "L2": {"fraction": 0.5, "c1": [1, 2]}},
}
TINY = """
description: test profile
pretrain:
  configs: [bundles/ideal_pretrain/configs/train.yaml]
  overrides: {backbone: resnet18, spatial_size: 64, batch_size: 4, max_iterations: 2, epoch_length: 1,
              hidden_channels: 32, embedding_channels: 16}
finetune:
  configs: [bundles/ideal_finetune/configs/train.yaml, bundles/ideal_finetune/configs/cpu.yaml]
  overrides: {spatial_size: 64, batch_size: 2, unlabeled_batch_size: 2, max_iterations: %d, epoch_length: %d,
              val_interval: %d}
"""


def test_every_method_is_a_known_configuration():
    methods, pretraining = load_methods()
    assert {"supervised", "global_cl", "local_only_pretrain", "cps_scratch", "mean_teacher", "self_train", "ideal"} <= set(methods)
    assert pretraining["global"]["w_local"] == 0 and pretraining["ideal"]["w_local"] > 0
    assert methods["supervised"].pretraining is None and methods["supervised"].finetune_overrides["unsup_weight"] == 0
    assert methods["ideal"].pretraining == "ideal" and methods["ideal"].finetune_overrides["unsup_weight"] > 0
    for m in methods.values():
        for config in m.finetune_configs:
            assert (REPO_ROOT / config).is_file(), config


def test_profiles_load_and_unknown_profile_is_an_input_error():
    for name in ("tiny", "cpu", "paper"):
        profile = load_profile(name)
        assert profile.pretrain_configs and profile.finetune_configs
        parser = ConfigParser()  # the iterations a run gets: the profile's config files, then its overrides
        parser.read_config([str(REPO_ROOT / c) for c in profile.finetune_configs])
        parser.update(dict(profile.finetune_overrides))
        assert parser["max_iterations"] > 0
    assert load_profile("paper").finetune_overrides["backbone"] == "resnet50"
    with pytest.raises(InputError, match="unknown"):
        load_profile("gpu9000")


def test_plan_varies_methods_fastest():
    a, b = Method("a", ""), Method("b", "")
    names = [s.name for s in plan_runs([a, b], ["L1", "L2"], ["c1"], [0, 1])]
    assert names[:4] == ["a/L1_c1_seed0", "b/L1_c1_seed0", "a/L2_c1_seed0", "b/L2_c1_seed0"]
    assert len(names) == 8 and len(set(names)) == 8


def test_holdout_avoids_every_labeled_subset_and_is_deterministic():
    pool = [f"patient{i:03d}" for i in range(1, 101)]
    held = holdout_cases("acdc_paper", pool, 10)
    assert held == holdout_cases("acdc_paper", pool, 10) and len(set(held)) == 10
    labeled = {2, 22, 42, 62, 95, 3, 23, 43, 63, 94}
    assert not {int(c[-3:]) for c in held} & labeled
    with pytest.raises(InputError, match="outside every labeled subset"):
        holdout_cases("acdc_paper", pool[:4], 3)


def test_with_holdout_moves_patients_out_of_every_split():
    dl = {"name": "x", "training": [{"case": "p1", "image": "1", "label": "1l"}],
          "unlabeled": [{"case": "p2", "image": "2"}, {"case": "p3", "image": "3"}],
          "validation": [], "pretraining": [{"case": c, "image": c} for c in ("p1", "p2", "p3")], "test": []}
    labeled = [{"case": c, "image": c, "label": c + "l"} for c in ("p1", "p2", "p3")]
    out = with_holdout(dl, ["p3"], labeled)
    assert [i["case"] for i in out["unlabeled"]] == ["p2"]
    assert [i["case"] for i in out["pretraining"]] == ["p1", "p2"]
    assert out["test"] == [{"case": "p3", "image": "p3", "label": "p3l"}] and out["held_out"] == ["p3"]
    with pytest.raises(InputError, match="no labeled training item"):
        with_holdout(dl, ["p1"], labeled)


def test_bundle_command_passes_overrides_as_cli_flags():
    cmd = bundle_command("training", ["bundles/ideal_finetune/configs/train.yaml"], {"unsup_weight": 0.0, "resume_from": None, "save_predictions": True, "label_values": [0, 205]}, None)
    assert cmd[1:5] == ["-m", "monai.bundle", "run", "training"]
    assert json.loads(cmd[cmd.index("--config_file") + 1]) == [str(REPO_ROOT / "bundles/ideal_finetune/configs/train.yaml")]
    assert cmd[cmd.index("--unsup_weight") + 1] == "0.0" and cmd[cmd.index("--resume_from") + 1] == "None"
    assert cmd[cmd.index("--save_predictions") + 1] == "True" and cmd[cmd.index("--label_values") + 1] == "[0, 205]"


def test_results_table_has_mean_and_std_over_subsets():
    def record(method, subset, dice):
        m = {f"{k}_{s}": {"mean": dice, "std": 0.1, "n": 4} for k in ("dice", "asd", "hd", "hd95") for s in ("RV", "MYO", "LV", "mean")}
        return {"method": method, "fraction": "L1", "fraction_percent": 1.25, "subset": subset, "seed": 0, "profile": "cpu",
                "iterations": 200, "train_min": 10.0, "eval_min": 1.0, "eval_split": "test", "metrics": m}

    rows = result_rows([record("ideal", "c1", 0.5), record("ideal", "c2", 0.7), record("supervised", "c1", 0.4)], ["RV", "MYO", "LV"])
    assert rows[0]["dice_mean"] == 0.5 and rows[0]["eval_volumes"] == 4
    md = results_markdown(rows, ["supervised", "ideal"], ["L1", "L2"], ["RV", "MYO", "LV"], "## t", {"L1": 0.738})
    assert "| ideal | 0.600 ± 0.141 (2) | not run |" in md
    assert "| supervised | 0.400 (1) | not run |" in md
    assert "0.738" in md and "not measured here" in md
    assert "Test-time views: none (not recorded: evaluated before 0.5.0)." in md
    rows[0]["test_time_views"] = "dihedral"  # a run evaluated after 0.5.0 beside older ones
    md = results_markdown(rows, ["supervised", "ideal"], ["L1", "L2"], ["RV", "MYO", "LV"], "## t")
    assert "Test-time views: not the same in all runs" in md and "dihedral in 1 run(s)" in md
    assert "Model selection: validation (not recorded" in md
    for row in rows:
        row["model_selection"] = "last"
    assert "Model selection: last." in results_markdown(rows, ["ideal"], ["L1"], ["RV", "MYO", "LV"], "## t")


def _experiment(tmp: Path, iterations: int, epoch_length: int, val_interval: int, methods: list[str], fractions: list[str]) -> list[str]:
    protocol, profile = tmp / "mini_acdc.json", tmp / "tiny_test.yaml"
    protocol.write_text(json.dumps(PROTOCOL))
    profile.write_text(TINY % (iterations, epoch_length, val_interval))
    return ["--protocol", str(protocol), "--profile", str(profile), "--out", str(tmp / "out"),
            "--methods", *methods, "--fractions", *fractions]


def test_extra_validation_moves_unlabeled_patients_into_validation():
    dl = {"name": "x", "training": [{"case": "p1", "image": "1", "label": "1l"}],
          "unlabeled": [{"case": "p2", "image": "2"}, {"case": "p3", "image": "3"}],
          "validation": [{"case": "p4", "image": "4", "label": "4l"}],
          "pretraining": [{"case": c, "image": c} for c in ("p1", "p2", "p3", "p4")], "test": []}
    labeled = [{"case": c, "image": c, "label": c + "l"} for c in ("p1", "p2", "p3")]
    out = with_extra_validation(dl, ["p2"], labeled)
    assert [i["case"] for i in out["unlabeled"]] == ["p3"] and out["training"] == dl["training"]
    assert out["validation"] == [dl["validation"][0], {"case": "p2", "image": "p2", "label": "p2l"}]
    assert out["pretraining"] == dl["pretraining"] and out["extra_validation"] == ["p2"]


def test_runner_extra_validation_keeps_the_test_split(tmp_path):
    """--extra-validation takes patients that neither a labeled subset nor the hold-out takes; the test split is the
    one of the run without it, and the datalist records the option."""
    from custom.data.synthetic import generate_acdc
    from custom.experiments.cli import main

    dataset = generate_acdc(tmp_path / "acdc", cases=6, seed=0)
    protocol = tmp_path / "six.json"
    protocol.write_text(json.dumps(PROTOCOL))
    common = ["--dataset-dir", str(dataset), "--protocol", str(protocol), "--fractions", "L1", "--holdout", "1",
              "--report-only"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert main([*common, "--out", str(tmp_path / "extra"), "--extra-validation", "1"]) == 0
    plain, extra = (json.loads((tmp_path / out / "datalists" / "L1_c1_seed0.json").read_text())
                    for out in ("plain", "extra"))
    assert extra["test"] == plain["test"] and plain["held_out"] == ["patient003"]
    assert extra["extra_validation"] == ["patient004"] and extra["experiment"]["extra_validation"] == 1
    assert "extra_validation" not in plain["experiment"]
    assert {i["case"] for i in extra["validation"]} == {"patient005", "patient004"}
    assert all(i.get("label") for i in extra["validation"])
    assert "patient004" not in {i["case"] for i in extra["unlabeled"]} | {i["case"] for i in extra["training"]}
    assert "patient004" in {i["case"] for i in extra["pretraining"]}
    with pytest.raises(InputError, match="--extra-validation 2: only 1 training-pool patients"):
        main([*common, "--out", str(tmp_path / "too_many"), "--extra-validation", "2"])


def test_runner_reports_missing_cases_once(tmp_path, caplog):
    from custom.data.synthetic import generate_acdc
    from custom.experiments.cli import main

    # three patients present, the protocol names six: patient004-006 are missing from the folder
    dataset = generate_acdc(tmp_path / "acdc", cases=3, seed=0)
    protocol = tmp_path / "six.json"
    labeled = {**PROTOCOL["labeled"], "L100": {"fraction": 1.0, "c1": "all"}}
    protocol.write_text(json.dumps({**PROTOCOL, "name": "six_acdc", "test": [5], "validation": [4], "labeled": labeled}))
    argv = ["--dataset-dir", str(dataset), "--protocol", str(protocol), "--out", str(tmp_path / "out"),
            "--fractions", "L1", "L2", "--allow-missing", "--holdout", "1", "--report-only"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    warnings = [r.getMessage() for r in caplog.records if "missing from" in r.getMessage()]
    assert warnings == [f"3 case(s) of {protocol} missing from {dataset}: patient004, patient005, patient006"]
    for f in ("L1", "L2"):
        datalist = json.loads((tmp_path / "out" / "datalists" / f"{f}_c1_seed0.json").read_text())
        assert datalist["held_out"] == ["patient003"] and {i["case"] for i in datalist["test"]} == {"patient003"}
        assert datalist["missing"] == ["patient004", "patient005", "patient006"]


@pytest.mark.slow
def test_runner_writes_results_and_a_rerun_skips_finished_runs(tmp_path, capsys):
    from custom.experiments.cli import main

    argv = _experiment(tmp_path, 2, 2, 1, ["supervised", "ideal"], ["L1", "L2"])
    assert main(argv) == 0
    printed = capsys.readouterr().out
    # runs done / total, and an ETA while runs are left: 3, 2, 1 left after the first three, none after the last
    assert [f"; {k} run(s) left, ETA " in printed for k in (3, 2, 1)] == [True] * 3 and " 0 run(s) left" not in printed
    assert re.search(r"\[4/4\] [^\n]*mean Dice [0-9.]+, [0-9.]+ min training\n", printed)
    out = tmp_path / "out"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["method"], r["fraction"]) for r in rows) == [("ideal", "L1"), ("ideal", "L2"), ("supervised", "L1"), ("supervised", "L2")]
    for r in rows:
        assert 0.0 <= float(r["dice_mean"]) <= 1.0 and float(r["hd95_LV"]) >= 0 and r["iterations"] == "2"
        assert r["eval_volumes"] == "2"  # patient006, ED + ES
        assert r["test_time_views"] == "dihedral"  # evaluate.yaml's default, recorded with every result
        assert r["model_selection"] == "validation"  # train.yaml's default, recorded with every result
    md = (out / "results.md").read_text()
    assert "| supervised |" in md and "| ideal |" in md and "L2 (50 %)" in md
    assert "Paired against `supervised`" in md and re.search(r"\| ideal/L2_c1_seed0 \| [0-9.]+ \| [0-9.]+ \| [-+]", md)
    assert (out / "dice_vs_fraction.png").stat().st_size > 10_000
    assert (out / "qualitative_L1.png").stat().st_size > 10_000
    log = (out / "runs/ideal/L1_c1_seed0/train.log").read_text()
    assert "loaded" in log and "pretrain/ideal/models/encoder.pt" in log  # fine-tuned from the pre-trained encoder
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("result.json")}

    capsys.readouterr()
    start = time.perf_counter()
    assert main(argv) == 0
    assert time.perf_counter() - start < 20
    assert capsys.readouterr().out.count("done before, skipped") == 4
    assert {p: p.stat().st_mtime_ns for p in out.rglob("result.json")} == stamps


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_interrupted_experiment_resumes_its_run_to_the_full_iteration_count(tmp_path, sig):
    argv = _experiment(tmp_path, 8, 1, 4, ["supervised"], ["L1"])
    run = tmp_path / "out/runs/supervised/L1_c1_seed0"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "custom.experiments", *argv], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (run / "models/last_checkpoint.pt").is_file():
            assert proc.poll() is None and time.time() < deadline, "no checkpoint before the run ended"
            time.sleep(0.2)
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)  # the runner and its training subprocess, mid-run
        else:
            proc.send_signal(signal.SIGTERM)  # the runner only: it forwards to the training run, which saves
        sent = time.time()
        proc.wait(timeout=120)
        if sig == signal.SIGTERM:
            assert proc.returncode == 128 + signal.SIGTERM and time.time() - sent < 60
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (run / "result.json").exists()
    assert json.loads((run / "timing.json").read_text())["trained"] is False

    from custom.experiments.cli import main

    assert main(argv) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["iterations"] == 8 and result["train_attempts"] == 2
    assert "--resume_from" in (run / "train.log").read_text()


def test_eta_prices_each_pending_run_by_its_method():
    """The runner's ETA: a method's own timed runs, else runs of the same kind (with or without an unlabeled
    term), else the others scaled by UNLABELED_COST; the first ideal run after supervised ones is not priced as one."""
    from custom.experiments.cli import UNLABELED_COST, _estimate_s, _eta

    assert not Method("supervised", "", finetune_overrides={"unsup_weight": 0.0}).uses_unlabeled
    assert Method("ideal", "").uses_unlabeled  # train.yaml's default unsup_weight is 1
    timed = [("supervised", False, 600.0), ("supervised", False, 1200.0)]
    assert _estimate_s(timed, "supervised", False) == 900.0
    assert _estimate_s(timed, "local_only_pretrain", False) == 900.0
    assert _estimate_s(timed, "ideal", True) == 900.0 * UNLABELED_COST
    timed.append(("ideal", True, 3000.0))
    assert _estimate_s(timed, "ideal", True) == 3000.0 and _estimate_s(timed, "cps_scratch", True) == 3000.0
    assert _eta(timed, [("ideal", True), ("supervised", False)]).startswith("; 2 run(s) left, ETA 65 min (about ")
    assert _eta(timed, []) == "" and _eta([], [("ideal", True)]) == ""
