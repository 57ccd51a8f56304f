"""Experiment tracking: both bundles with ``--tracking configs/mlflow.yaml`` write an MLflow run (SQLite store under
``<bundle_root>/runs``) with the hyper-parameters, every loss term and, for fine-tuning, the validation Dice; the
TensorBoard event files sit beside it. Tiny runs: ResNet-18, 64 px, 2 iterations, a reduced datalist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import run

REPO = Path(__file__).resolve().parents[1]
TINY = dict(backbone="resnet18", spatial_size=64, batch_size=2, max_iterations=2, epoch_length=2)
CASES = {
    "ideal_finetune": dict(
        overrides=dict(unlabeled_batch_size=2, val_interval=1),
        metrics={"loss", "loss_sup", "loss_unsup", "lambda_u", "val_mean_dice"},
    ),
    "ideal_pretrain": dict(overrides={}, metrics={"loss", "loss_global", "loss_local", "valid_fraction"}),
}


def _small_datalist(path: Path) -> str:
    datalist = json.loads((REPO / "datalists" / "synthetic_acdc_L2_c1.json").read_text())
    sizes = {"training": 1, "unlabeled": 1, "validation": 1, "pretraining": 1}
    datalist.update({k: datalist[k][:n] for k, n in sizes.items()})
    path.write_text(json.dumps(datalist))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(CASES))
def test_mlflow_tracking_records_a_run(bundle, tmp_path, monkeypatch):
    import mlflow  # in the test extra (mlflow-skinny + sqlalchemy + alembic): a missing install fails, never skips
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the settings' SQLite store, not a user's server
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    configs = REPO / "bundles" / bundle / "configs"
    case = CASES[bundle]
    run("training", config_file=[str(configs / "train.yaml")], tracking=str(configs / "mlflow.yaml"),
        bundle_root=str(tmp_path), datalist=_small_datalist(tmp_path / "dl.json"), **TINY, **case["overrides"])

    runs_dir = tmp_path / "runs"
    assert (runs_dir / "mlruns.db").is_file()
    assert list(runs_dir.glob("events.out.tfevents.*")), "TensorBoard event files missing"
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(bundle)
    assert experiment is not None
    (record,) = client.search_runs([experiment.experiment_id])
    assert record.info.status == "FINISHED"  # closed when training completed
    params = record.data.params
    assert params["backbone"] == "resnet18" and params["max_iterations"] == "2" and params["world_size"] == "1"
    assert params["epoch_length"] == "2"  # MONAI's default tracking params come along
    assert case["metrics"] <= set(record.data.metrics)
    history = client.get_metric_history(record.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2]
    assert all(m.value > 0 for m in history)
    # the executed config is the run's artifact, stored next to the database
    artifacts = [a.path for a in client.list_artifacts(record.info.run_id)]
    assert any(a.startswith("config_") and a.endswith(".json") for a in artifacts)
    assert list((runs_dir / "mlruns").rglob("config_*.json"))
