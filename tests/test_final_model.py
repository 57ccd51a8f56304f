"""FinalModelSaver and the fine-tuning bundle's ``model_selection`` key (which file becomes models/model.pt)."""

from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser

from custom.errors import find_input_error
from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.handlers import FinalModelSaver, keeps_last_model

FINETUNE = Path(__file__).resolve().parents[1] / "bundles" / "ideal_finetune" / "configs"


def _training_engine(network: torch.nn.Module, fail_at: int | None = None) -> Engine:
    """An engine whose every iteration changes ``network``'s weights (and raises at iteration ``fail_at``)."""

    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise RuntimeError("interrupted")
        with torch.no_grad():
            for p in network.parameters():
                p.add_(1.0)

    return Engine(step)


def test_saves_the_network_of_the_last_iteration(tmp_path):
    network = torch.nn.Conv2d(1, 2, 3)
    engine = _training_engine(network)
    FinalModelSaver(tmp_path / "models", network).attach(engine)
    engine.run([0, 1, 2], max_epochs=2)
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert set(state) == {"weight", "bias"}  # a plain state dict, as MONAI's CheckpointSaver writes one object
    for k, v in network.state_dict().items():
        assert torch.equal(state[k], v)  # the weights after all 6 updates, not an earlier copy
    assert not list((tmp_path / "models").glob(".*")), "atomic writes leave no temporary files"


def test_an_interrupted_run_leaves_the_model_file_alone(tmp_path):
    network = torch.nn.Conv2d(1, 2, 3)
    (tmp_path / "model.pt").write_bytes(b"earlier model")
    engine = _training_engine(network, fail_at=3)
    FinalModelSaver(tmp_path, network).attach(engine)
    with pytest.raises(RuntimeError, match="interrupted"):
        engine.run([0, 1, 2], max_epochs=2)
    assert (tmp_path / "model.pt").read_bytes() == b"earlier model"


def test_model_selection_values():
    assert keeps_last_model("last") is True
    assert keeps_last_model("validation") is False
    with pytest.raises(ValueError, match="model_selection must be one of"):
        keeps_last_model("final")


@pytest.mark.parametrize("selection, final_saver, best_saver", [("validation", False, True), ("last", True, False)])
def test_bundle_writes_model_pt_with_exactly_one_saver(tmp_path, selection, final_saver, best_saver):
    parser = ConfigParser()
    parser.read_config([str(FINETUNE / "train.yaml"), str(FINETUNE / "cpu.yaml")])
    parser.update({"model_selection": selection, "bundle_root": str(tmp_path), "device": "$torch.device('cpu')"})
    train_handlers = parser.get_parsed_content("train#handlers")
    assert any(isinstance(h, FinalModelSaver) for h in train_handlers) == final_saver
    (saver,) = [h for h in parser.get_parsed_content("validate#handlers") if type(h).__name__ == "CheckpointSaver"]
    assert (saver._key_metric_checkpoint is not None) == best_saver
    if final_saver:
        (final,) = [h for h in train_handlers if isinstance(h, FinalModelSaver)]
        assert final.path == tmp_path / "models" / "model.pt"
        assert isinstance(final.network, DualDecoderUNet)


def test_bundle_rejects_an_unknown_model_selection(tmp_path):
    parser = ConfigParser()
    parser.read_config(str(FINETUNE / "train.yaml"))
    parser.update({"model_selection": "final", "bundle_root": str(tmp_path)})
    with pytest.raises(Exception) as raised:
        parser.get_parsed_content("train#handlers")
    found = find_input_error(raised.value)
    assert found is not None and "model_selection must be one of ('validation', 'last'), got 'final'" in str(found)
