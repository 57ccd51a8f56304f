"""Runs the real fine-tuning bundle configs for a few iterations on the built-in data (64 px, ResNet-18)."""

import csv
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import run

from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.paths import datalist_path, default_dataset

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "ideal_finetune"
CONFIGS = BUNDLE / "configs"
SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "monai" / "meta_schema_20240725.json"
TINY = dict(backbone="resnet18", spatial_size=64, batch_size=2, unlabeled_batch_size=2, max_iterations=4,
            epoch_length=2, val_interval=1)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    run("training", config_file=[str(CONFIGS / "train.yaml")], bundle_root=str(root), **TINY)
    return root


def test_training_writes_best_and_last_checkpoints(trained):
    best = trained / "models" / "model.pt"
    assert best.is_file()
    state = torch.load(best, weights_only=True)
    net = DualDecoderUNet("resnet18")
    net.load_state_dict(state)  # a plain state dict of the whole dual-decoder network
    resumable = torch.load(trained / "models" / "last_checkpoint.pt", weights_only=True)
    assert set(resumable) == {"network", "optimizer", "lr_scheduler", "trainer", "best_model", "rng"}
    assert resumable["trainer"]["iteration"] == 4
    (score, _), = resumable["best_model"]["saved"]  # the best validation score so far, kept across a resume
    assert 0.0 <= score <= 1.0
    assert not list((trained / "models").glob(".*.tmp")), "atomic writes leave no temporary files"
    assert list(trained.glob("runs/events.out.tfevents.*")), "TensorBoard events missing"


def test_model_selection_last_keeps_the_final_network(tmp_path):
    """`model_selection: last`: models/model.pt is the network of the last iteration (the one in the resumable
    checkpoint written at the end), whatever the validation Dice said."""
    run("training", config_file=[str(CONFIGS / "train.yaml")], bundle_root=str(tmp_path), **TINY,
        model_selection="last")
    model = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    resumable = torch.load(tmp_path / "models" / "last_checkpoint.pt", weights_only=True)
    assert resumable["trainer"]["iteration"] == 4
    assert resumable["best_model"]["saved"] == []  # the validation saver kept nothing
    assert set(model) == set(resumable["network"])
    for k, v in resumable["network"].items():
        assert torch.equal(model[k], v), k


def test_supervised_training_needs_no_unlabeled_split(tmp_path):
    """`unsup_weight: 0` trains from a datalist without an 'unlabeled' split (the 100 % labeled set has none);
    with the pseudo-label term on, the missing split is an error that names the datalist."""
    datalist = json.loads(Path(datalist_path("synthetic_acdc_L2_c1.json")).read_text())
    datalist.pop("unlabeled")
    path = tmp_path / "no_unlabeled.json"
    path.write_text(json.dumps(datalist))
    common = dict(config_file=[str(CONFIGS / "train.yaml")], dataset_dir=default_dataset("acdc"), datalist=str(path),
                  **TINY)
    run("training", bundle_root=str(tmp_path / "supervised"), unsup_weight=0.0, **common)
    resumable = torch.load(tmp_path / "supervised" / "models" / "last_checkpoint.pt", weights_only=True)
    assert resumable["trainer"]["iteration"] == 4
    with pytest.raises(RuntimeError) as failed:  # MONAI wraps the error of a config expression
        run("training", bundle_root=str(tmp_path / "ideal"), **common)
    assert str(failed.value.__cause__).endswith("no_unlabeled.json: split 'unlabeled' is missing or empty")


def test_weight_average_decay_validates_and_saves_the_weight_average(trained, tmp_path):
    """`weight_average_decay` > 0: models/model.pt is the exponential moving average of the weights (kept in the
    resumable checkpoint as `averaged_network`), not the weights of the last step; training itself is unchanged."""
    run("training", config_file=[str(CONFIGS / "train.yaml")], bundle_root=str(tmp_path), **TINY,
        model_selection="last", weight_average_decay=0.5)
    model = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    resumable = torch.load(tmp_path / "models" / "last_checkpoint.pt", weights_only=True)
    assert set(resumable) == {"network", "averaged_network", "optimizer", "lr_scheduler", "trainer", "best_model", "rng"}
    averaged, last = resumable["averaged_network"], resumable["network"]
    assert set(model) == set(averaged) == set(last)
    assert all(torch.equal(model[k], averaged[k]) for k in model)
    weights = [k for k in last if last[k].is_floating_point() and "running" not in k]
    assert any(not torch.equal(averaged[k], last[k]) for k in weights)
    # the same seed without the average (the `trained` run) trains the same network
    without = torch.load(trained / "models" / "last_checkpoint.pt", weights_only=True)["network"]
    assert all(torch.equal(last[k], without[k]) for k in last)


def test_resume_continues_to_the_configured_iteration(trained, tmp_path):
    """The resumed run starts from the checkpoint's weights and counter and runs only iterations 5 and 6."""
    from ignite.engine import Events
    from monai.bundle import create_workflow

    source = torch.load(trained / "models" / "last_checkpoint.pt", weights_only=True)
    workflow = create_workflow(config_file=[str(CONFIGS / "train.yaml")], run_id="training", bundle_root=str(tmp_path),
                               resume_from=str(trained / "models" / "last_checkpoint.pt"), **{**TINY, "max_iterations": 6})
    trainer = workflow.parser.get_parsed_content("train#trainer")
    ran, first_weights = [], {}

    @trainer.on(Events.ITERATION_STARTED)
    def record(engine):
        if not first_weights:
            first_weights.update({k: v.detach().clone() for k, v in engine.network.state_dict().items()})
        ran.append(engine.state.iteration)

    workflow.run()
    workflow.finalize()
    assert ran == [5, 6]
    assert all(torch.equal(first_weights[k], source["network"][k]) for k in source["network"])
    final = torch.load(tmp_path / "models" / "last_checkpoint.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 6
    assert any(not torch.equal(final["network"][k], source["network"][k]) for k in source["network"])


def test_evaluate_writes_per_case_metrics(trained, caplog):
    with caplog.at_level(logging.INFO, logger="train_log"):
        run("evaluating", config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")],
            bundle_root=str(trained), eval_split="validation", **TINY)
    progress = [r.getMessage() for r in caplog.records if r.name == "train_log"]
    with open(trained / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    datalist = json.loads((Path(__file__).resolve().parents[1] / "datalists" / "synthetic_acdc_L2_c1.json").read_text())
    assert len(rows) == len(datalist["validation"])
    n = len(rows)
    assert progress[0] == f"evaluating: volumes 0..{n}" and progress[-1].startswith(f"evaluating finished: {n} volumes")
    for row in rows:
        for s in ("RV", "MYO", "LV"):
            assert 0.0 <= float(row[f"dice_{s}"]) <= 1.0
            assert np.isfinite(float(row[f"hd95_{s}"]))
    assert (trained / "eval" / "summary.csv").is_file()


def test_evaluation_scores_the_saved_weights_even_with_weight_average_decay_set(trained):
    """evaluate.yaml loads model.pt into the network it scores: a training setting `weight_average_decay` > 0 left in
    the command must not make it score a second average (a copy taken before the weights were loaded)."""
    from monai.bundle import create_workflow

    workflow = create_workflow(config_file=[str(CONFIGS / "train.yaml"), str(CONFIGS / "evaluate.yaml")],
                               run_id="evaluating", bundle_root=str(trained), eval_split="validation",
                               weight_average_decay=0.9, **TINY)
    network = workflow.parser.get_parsed_content("network")
    assert workflow.parser.get_parsed_content("validate#network").network is network
    assert workflow.parser.get_parsed_content("validate#handlers#0").load_dict["model"] is network


def test_inference_round_trips_shape_and_affine(trained, tmp_path):
    image = Path(default_dataset("acdc")) / "patient017" / "patient017_frame01.nii.gz"
    run(config_file=str(CONFIGS / "inference.yaml"), bundle_root=str(trained), input_glob=str(image),
        output_dir=str(tmp_path), backbone="resnet18", spatial_size=64, save_disagreement=True)
    seg = nib.load(tmp_path / "patient017_frame01_seg.nii.gz")
    src = nib.load(image)
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 3}
    disagreement = nib.load(tmp_path / "patient017_frame01_disagreement.nii.gz")
    assert disagreement.shape == src.shape
    assert set(np.unique(np.asarray(disagreement.dataobj)).tolist()) <= {0, 1}


def test_pretrained_encoder_override_changes_encoder(tmp_path):
    torch.manual_seed(3)
    source = DualDecoderUNet("resnet18")
    ckpt = tmp_path / "encoder.pt"
    torch.save({f"encoder.{k}": v for k, v in source.encoder.state_dict().items()}, ckpt)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser.update({"backbone": "resnet18", "pretrained_encoder": str(ckpt), "device": "$torch.device('cpu')"})
    net = parser.get_parsed_content("network")
    torch.testing.assert_close(net.encoder.conv1.weight, source.encoder.conv1.weight)


@pytest.mark.skipif(not SCHEMA.is_file(), reason="offline Model Zoo schema not found at ../shared/monai")
def test_metadata_verifies_against_model_zoo_schema():
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))


def test_schedule_follows_max_epochs_and_unlabeled_glob_replaces_the_datalist():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.yaml"), str(CONFIGS / "cpu.yaml")])
    parser["train#trainer#max_epochs"] = 4  # what MONAI Label's train request overrides
    assert parser.get_parsed_content("trained_iterations") == 4 * 100
    assert parser.get_parsed_content("lr_scheduler#total_iters") == 400
    assert parser.get_parsed_content("warmup_iterations") == 100
    assert parser.get_parsed_content("rampup_iterations") == 100

    folder = Path(default_dataset("acdc"))
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser["unlabeled_glob"] = str(folder / "patient00[12]" / "*.nii.gz")
    items = parser.get_parsed_content("train#unlabeled_dataset#data")
    assert items and all(not i["image"].endswith("_gt.nii.gz") for i in items)
    assert {Path(i["image"]).parent.name for i in items} == {"patient001", "patient002"}


def test_weak_to_strong_option_trains_from_the_config(tmp_path):
    """`weak_to_strong: true` builds the StrongView and the trainer uses it once the pseudo-label term is on."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=[str(CONFIGS / "train.yaml")], workflow_type="train",
                              bundle_root=str(tmp_path), **TINY, weak_to_strong=True,
                              confidence_threshold=0.0)  # untrained decoders are never 90 % sure
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    assert type(trainer.strong_view).__name__ == "StrongView"
    unsup = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: unsup.append(float(e.state.output["loss_unsup"])))
    workflow.run()
    assert len(unsup) == 4 and unsup[0] == 0.0 and all(u > 0 for u in unsup[1:])  # warm-up = 1 of 4 iterations
