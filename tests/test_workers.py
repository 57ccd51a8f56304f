"""DataLoader worker counts chosen from the machine, and a bundle run that uses workers."""

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from custom.data import workers
from custom.data.workers import default_num_workers
from custom.engines.precision import cpu_has_native_bf16

CONFIGS = Path(__file__).resolve().parents[1] / "bundles"


def test_no_workers_on_cpu(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 64)
    assert default_num_workers("cpu") == 0
    assert default_num_workers(torch.device("cpu")) == 0


@pytest.mark.parametrize(
    "cores, local_world_size, expected",
    [(16, None, 4), (3, None, 2), (1, None, 0), (16, "2", 4), (16, "8", 1), (8, "8", 0)],
)
def test_cuda_workers_share_the_cores_of_the_node(monkeypatch, cores, local_world_size, expected):
    monkeypatch.setattr(workers, "usable_cores", lambda: cores)
    if local_world_size is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_world_size)
    assert default_num_workers("cuda:0") == expected


@pytest.mark.parametrize("bundle", ["ideal_finetune", "ideal_pretrain"])
def test_bundle_configs_resolve_workers_from_the_device(bundle):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / bundle / "configs" / "train.yaml"))
    parser["device"] = "$torch.device('cpu')"
    assert parser.get_parsed_content("num_workers") == 0
    assert parser.get_parsed_content("train#dataloader#persistent_workers") is False
    # the fine-tuning network is channels-last only where that is faster; pre-training always (faster in fp32 too)
    expected = bundle == "ideal_pretrain" or cpu_has_native_bf16()
    assert parser.get_parsed_content("channels_last") is expected


@pytest.mark.slow
def test_finetune_bundle_trains_with_persistent_workers(tmp_path):
    """Two workers on the CPU (not the default there): every labeled pass (each engine epoch starts one) reuses the
    same two worker processes instead of starting new ones."""
    import os

    from ignite.engine import Events
    from monai.bundle import create_workflow

    workflow = create_workflow(config_file=[str(CONFIGS / "ideal_finetune" / "configs" / "train.yaml")], run_id="training",
                               bundle_root=str(tmp_path), backbone="resnet18", spatial_size=64, batch_size=2,
                               unlabeled_batch_size=2, max_iterations=6, epoch_length=3, val_interval=2, num_workers=2)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    loader = workflow.parser.get_parsed_content("train#dataloader")
    seen = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        iterator = loader._iterator  # kept by the DataLoader only with persistent workers
        seen.append((engine.state.epoch, id(iterator), tuple(w.pid for w in iterator._workers)))

    workflow.run()
    workflow.finalize()
    assert [epoch for epoch, _, _ in seen] == [1, 1, 1, 2, 2, 2]  # two labeled passes
    assert len({(it, pids) for _, it, pids in seen}) == 1  # one iterator, the same two processes throughout
    pids = seen[0][2]
    assert len(pids) == 2 and os.getpid() not in pids
    state = torch.load(tmp_path / "models" / "last_checkpoint.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 6
