"""Multi-GPU configs (configs/multi_gpu_train.yaml): real torchrun launches of both bundles, 2 CPU processes on gloo.

The slow tests run the launch command of the docs (from the bundle folder, the configs given by relative paths) with
a test-only handler layered on top (``ddp_probe.RankProbe``, written to ``tmp_path``): every rank records each
iteration (its slices, the sampler epoch, the negatives' batch) and saves its weights at the end, so that the test
can compare the ranks. Tiny sizes: ResNet-18, 64 px, 2 slices per process, 2-4 iterations, a reduced datalist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

import custom.data.transforms  # noqa: F401  (train.yaml's expressions use it; in a run its components import it)
from custom.finetuning.trainer import CrossPseudoLabelTrainer
from custom.pretraining import GlobalInfoNCELoss, LocalInfoNCELoss
from custom.finetuning.cross_pseudo import CrossPseudoLabelLoss
from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.networks.encoder import load_encoder_weights
from custom.pretraining.network import ContrastivePretrainNet

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
TIMEOUT = 240

PROBE = '''
import json
from pathlib import Path

import torch
import torch.distributed as dist
from ignite.engine import Events


class RankProbe:
    """Test-only handler: per-rank iteration records and final weights, in out_dir/rank{r}.json|pt."""

    def __init__(self, out_dir, network):
        self.out_dir, self.network, self.records = Path(out_dir), network, []

    def attach(self, engine):
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def record(self, engine):
        batch, out = engine.state.batch, engine.state.output
        rec = {
            "rank": dist.get_rank(),
            "world_size": dist.get_world_size(),
            "iteration": engine.state.iteration,
            "loss": float(out["loss"]),
            "batch_size": int(out["image"].shape[0]),
            "slices": [f"{c}:{int(s)}" for c, s in zip(batch["case"], batch["slice"])],
            "sampler_epoch": engine.data_loader.sampler.epoch,
            "ddp": type(engine.network).__name__,
        }
        for name in ("loss_function", "global_loss_function"):
            rec[name] = getattr(getattr(engine, name, None), "last_num_images", None)
        unlabeled = getattr(engine, "unlabeled_data_loader", None)
        if unlabeled is not None:
            rec["unlabeled_sampler"] = type(unlabeled.sampler).__name__
            rec["unlabeled_sampler_epoch"] = unlabeled.sampler.epoch
        self.records.append(rec)

    def save(self, engine):
        net = self.network.module
        rank = dist.get_rank()
        torch.save({"params": {k: v.detach().cpu().contiguous() for k, v in net.named_parameters()},
                    "buffers": {k: v.detach().cpu().contiguous() for k, v in net.named_buffers()}},
                   self.out_dir / f"rank{rank}.pt")
        (self.out_dir / f"rank{rank}.json").write_text(json.dumps(self.records))
'''

PROBE_CONFIG = """
rank_probe:
  _target_: ddp_probe.RankProbe
  out_dir: '@bundle_root'
  network: '@network'
train#trainer#train_handlers: "$@train#handlers + [@rank_probe]"
"""


def _small_datalist(path: Path) -> Path:
    """The committed synthetic datalist cut down: 1 labeled, 2 unlabeled, 2 validation, 2 pre-training volumes."""
    datalist = json.loads((REPO / "datalists" / "synthetic_acdc_L2_c1.json").read_text())
    sizes = {"training": 1, "unlabeled": 2, "validation": 2, "pretraining": 2}
    datalist.update({k: datalist[k][:n] for k, n in sizes.items()})
    path.write_text(json.dumps(datalist))
    return path


def _torchrun() -> list[str]:
    exe = Path(sys.executable).parent / "torchrun"  # the console script of the torch that runs the tests
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def _launch(bundle: str, tmp_path: Path, *overrides: str) -> str:
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    (tmp_path / "probe.yaml").write_text(PROBE_CONFIG)
    root = tmp_path / "bundle"
    configs = f"['configs/train.yaml','configs/multi_gpu_train.yaml','{tmp_path / 'probe.yaml'}']"
    cmd = [*_torchrun(), "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run", "training",
           "--config_file", configs, "--bundle_root", str(root), "--datalist", str(_small_datalist(tmp_path / "dl.json")),
           "--backbone", "resnet18", "--spatial_size", "64", "--batch_size", "2", *overrides]
    # CPU processes on gloo even where GPUs exist; one thread each (the two processes share the cores)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, cwd=BUNDLES / bundle, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:  # e.g. a collective that only some processes reach: end the whole launch
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s:\n{log[-6000:]}")
    assert proc.returncode == 0, log[-6000:]
    return log


def _ranks(root: Path) -> tuple[list[list[dict]], list[dict]]:
    records = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [torch.load(root / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return records, weights


def _assert_same_params(weights: list[dict]) -> None:
    a, b = weights[0]["params"], weights[1]["params"]
    assert a.keys() == b.keys() and a
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"parameters differ across ranks: {different[:5]}"


@pytest.mark.slow
def test_finetune_torchrun_two_processes(tmp_path):
    # 2 epochs of 2 iterations; each epoch starts a new pass over the labeled loader (12 slices -> 6 per process ->
    # 3 batches) and the unlabeled one (24 slices -> 6 batches per process)
    log = _launch("ideal_finetune", tmp_path, "--unlabeled_batch_size", "2", "--max_iterations", "4",
                  "--epoch_length", "2", "--val_interval", "2")
    root = tmp_path / "bundle"
    records, weights = _ranks(root)

    # both processes trained, in one process group, with DDP and distributed samplers on both loaders
    for rank, recs in enumerate(records):
        assert [r["iteration"] for r in recs] == [1, 2, 3, 4]
        assert all(r["rank"] == rank and r["world_size"] == 2 and r["ddp"] == "DistributedDataParallel" for r in recs)
        assert all(r["unlabeled_sampler"] == "DistributedSampler" for r in recs)
        # every new pass sets the sampler epoch to the iteration it starts at (labeled: 0 and 2 at the epoch
        # starts; unlabeled: 1 and 3 at its first use in each epoch), the same on both processes
        assert [r["sampler_epoch"] for r in recs] == [0, 0, 2, 2]
        # the unlabeled loader is first read after the supervised warm-up (4 // 4 = 1 iteration): its first pass
        # starts at iteration 2 (the sampler still has its initial epoch 0 after iteration 1), the second at 3
        assert [r["unlabeled_sampler_epoch"] for r in recs] == [0, 2, 3, 3]
    for it in range(4):
        assert not set(records[0][it]["slices"]) & set(records[1][it]["slices"]), "ranks drew the same slices"
    _assert_same_params(weights)

    # writers ran on rank 0 only: one TensorBoard file per writer (train, validation), one best checkpoint
    assert len(list((root / "runs").glob("events.out.tfevents.*"))) == 2
    assert log.count("Key metric: val_mean_dice best value") == 1  # the validation StatsHandler of rank 0
    assert log.count("CrossPseudoLabelTrainer - INFO - Engine run finished") == 2  # but both processes trained
    # checkpoints hold the unwrapped network: they load into the single-process bundle's network as they are
    net = DualDecoderUNet("resnet18")
    best = torch.load(root / "models" / "model.pt", weights_only=True)
    net.load_state_dict(best)
    last = torch.load(root / "models" / "last_checkpoint.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 4
    net.load_state_dict(last["network"])
    for k, v in weights[0]["params"].items():  # validation ran after the last iteration: best == final weights
        assert torch.equal(best[k], v) and torch.equal(last["network"][k], v)


@pytest.mark.slow
def test_pretrain_torchrun_gathers_negatives_across_processes(tmp_path):
    _launch("ideal_pretrain", tmp_path, "--max_iterations", "2", "--epoch_length", "2")
    root = tmp_path / "bundle"
    records, weights = _ranks(root)

    for rank, recs in enumerate(records):
        assert [r["iteration"] for r in recs] == [1, 2]
        assert all(r["rank"] == rank and r["world_size"] == 2 and r["ddp"] == "DistributedDataParallel" for r in recs)
        # gather_negatives: both losses contrast against the images of both processes (2 x 2 per process)
        assert all(r["batch_size"] == 2 for r in recs)
        assert all(r["loss_function"] == 4 and r["global_loss_function"] == 4 for r in recs)
    for it in range(2):
        assert not set(records[0][it]["slices"]) & set(records[1][it]["slices"]), "ranks drew the same slices"
    _assert_same_params(weights)

    assert len(list((root / "runs").glob("events.out.tfevents.*"))) == 1
    model = torch.load(root / "models" / "model.pt", weights_only=True)
    encoder = torch.load(root / "models" / "encoder.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in model)
    ContrastivePretrainNet("resnet18").load_state_dict(model)
    assert len(load_encoder_weights(DualDecoderUNet("resnet18").encoder, root / "models" / "encoder.pt")) == len(encoder)
    for k, v in weights[0]["params"].items():
        assert torch.equal(model[k], v)


# ---- fast checks of the configs and of the trainer's sampler handling (no process group) ----

@pytest.mark.parametrize(
    "bundle, handler_ids",
    [
        ("ideal_finetune", {"train#handlers#2": "StatsHandler", "train#handlers#3": "TensorBoardStatsHandler",
                            "validate#handlers#0": "StatsHandler", "validate#handlers#1": "TensorBoardStatsHandler",
                            "validate#handlers#2": "CheckpointSaver"}),
        ("ideal_pretrain", {"train#handlers#1": "StatsHandler", "train#handlers#2": "TensorBoardStatsHandler"}),
    ],
)
def test_rank0_only_overrides_hit_the_writing_handlers(bundle, handler_ids):
    """With the multi-GPU config, exactly the writing handlers of train.yaml are disabled on ranks > 0."""
    configs = BUNDLES / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml")])
    disabled = {}
    for section in ("train#handlers", "validate#handlers"):
        for i, item in enumerate(parser.get(section, [])):
            if "_disabled_" in item and item["_disabled_"] == "@is_not_rank0":
                disabled[f"{section}#{i}"] = item["_target_"]
    assert disabled == handler_ids
    writers = {"StatsHandler", "TensorBoardStatsHandler", "CheckpointSaver"}
    for section in ("train#handlers", "validate#handlers"):
        for i, item in enumerate(parser.get(section, [])):
            assert (item["_target_"] in writers) == (f"{section}#{i}" in disabled), (section, i, item["_target_"])
    assert parser["train#dataloader#shuffle"] is False and parser["train#dataloader#sampler"] == "@train#sampler"
    if bundle == "ideal_pretrain":
        assert parser["gather_negatives"] is True


def test_supervised_multi_gpu_config_builds_no_unlabeled_stream():
    """`unsup_weight: 0` disables the unlabeled dataset, its DistributedSampler and its loader (a supervised run
    on the 100 % labeled set has no unlabeled split to shard)."""
    configs = BUNDLES / "ideal_finetune" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml")])
    parser["unsup_weight"] = 0.0
    parser["datalist"] = "/nonexistent/datalist.json"  # would raise if the unlabeled split were read
    for id in ("train#unlabeled_dataset", "train#unlabeled_sampler", "train#unlabeled_dataloader"):
        assert parser.get_parsed_content(id) is None, id


class _Items(torch.utils.data.Dataset):
    def __init__(self, n, labeled):
        self.n, self.labeled = n, labeled

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        item = {"image": torch.full((1, 8, 8), float(i))}
        if self.labeled:
            item["label"] = torch.zeros(1, 8, 8)
        return item


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(1, 4, 1)

    def forward(self, x):
        return self.a(x), self.b(x)


class _RecordingSampler(DistributedSampler):
    """Rank 0 of 2, without a process group; records the epoch of every pass."""

    def __init__(self, dataset):
        super().__init__(dataset, num_replicas=2, rank=0, shuffle=True, seed=0)
        self.passes = []

    def __iter__(self):
        self.passes.append(self.epoch)
        return super().__iter__()


def _sampled_loader(n, labeled, batch_size=1):
    sampler = _RecordingSampler(_Items(n, labeled))
    return DataLoader(sampler.dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


def test_trainer_sets_a_new_sampler_epoch_for_every_pass():
    labeled, unlabeled = _sampled_loader(4, True), _sampled_loader(6, False)  # 2 and 3 batches per pass
    net = _TwoHeads()
    trainer = CrossPseudoLabelTrainer("cpu", 2, labeled, net, torch.optim.SGD(net.parameters(), 0.1),
                                      CrossPseudoLabelLoss(), unlabeled_data_loader=unlabeled, epoch_length=3,
                                      precision="fp32", channels_last=False)
    trainer.run()
    assert trainer.state.iteration == 6
    # every engine epoch (3 iterations) starts a new pass, and an exhausted loader starts one too: labeled passes at
    # iterations 0, 2 (exhausted), 3 (epoch 2), 5 (exhausted), each with its own sampler epoch (MONAI's
    # set_epoch(engine epoch) alone would repeat them); unlabeled passes at iterations 1 and 4 (first use per epoch)
    assert labeled.sampler.passes == [0, 2, 3, 5]
    assert unlabeled.sampler.passes == [1, 4]


def test_trainer_rejects_loaders_without_a_full_batch_per_process():
    net = _TwoHeads()
    with pytest.raises(ValueError, match="train_data_loader yields no batch: 1 samples on each of 2 processes"):
        CrossPseudoLabelTrainer("cpu", 1, _sampled_loader(2, True, batch_size=2), net,
                                torch.optim.SGD(net.parameters(), 0.1), CrossPseudoLabelLoss(), precision="fp32")
    with pytest.raises(ValueError, match="unlabeled_data_loader yields no batch"):
        CrossPseudoLabelTrainer("cpu", 1, _sampled_loader(4, True), net, torch.optim.SGD(net.parameters(), 0.1),
                                CrossPseudoLabelLoss(), unlabeled_data_loader=_sampled_loader(2, False, batch_size=2),
                                precision="fp32")


def test_losses_report_the_images_of_the_negative_bank():
    torch.manual_seed(0)
    z = torch.randn(3, 8)
    twice = lambda x: torch.cat([x, x + 1.0], dim=0)  # noqa: E731 - a stand-in for a 2-process all_gather
    global_loss = GlobalInfoNCELoss()
    assert global_loss.last_num_images is None
    global_loss(z, z + 0.1)
    assert global_loss.last_num_images == 3
    global_loss = GlobalInfoNCELoss(gather_fn=twice, rank=0)
    global_loss(z, z + 0.1)
    assert global_loss.last_num_images == 6

    emb = torch.randn(3, 4, 2, 2)
    coords = torch.zeros(3, 2, 2, 2)
    valid = torch.ones(3, 2, 2, dtype=torch.bool)
    local_loss = LocalInfoNCELoss()
    local_loss(emb, emb, coords, valid, coords, valid)
    assert local_loss.last_num_images == 3
    local_loss = LocalInfoNCELoss(gather_fn=twice, rank=0)
    local_loss(emb, emb, coords, valid, coords, valid)
    assert local_loss.last_num_images == 6
