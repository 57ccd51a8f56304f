import math

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from torch.utils.data import DataLoader

from custom.pretraining.trainer import ContrastivePretrainTrainer
from custom.handlers import PretrainedWeightsSaver
from custom.pretraining import GlobalInfoNCELoss, LocalInfoNCELoss
from custom.finetuning.dual_decoder import DualDecoderUNet
from custom.networks.encoder import load_encoder_weights
from custom.pretraining.network import ContrastivePretrainNet

SIZE = 32  # resnet18 at 32 px with the stride-8 map: a 4 x 4 grid of cells, fast on a CPU


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run faster on one thread than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_images(n: int = 8, size: int = SIZE, seed: int = 1) -> torch.Tensor:
    """Distinguishable images: coarse random fields, bilinearly upsampled, (n, 1, size, size) in [0, 1]."""
    coarse = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def make_trainer(iterations: int, seed: int = 0, epochs: int = 1, **kwargs) -> tuple[ContrastivePretrainTrainer, list]:
    torch.manual_seed(0)
    network = ContrastivePretrainNet("resnet18", dense_channels=32, global_channels=32, hidden_channels=64,
                                     feature_level=2)
    loader = DataLoader([{"image": x} for x in smooth_images()], batch_size=4, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    kwargs.setdefault("precision", "fp32")
    trainer = ContrastivePretrainTrainer(
        device="cpu",
        max_epochs=epochs,
        epoch_length=iterations,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), lr=1e-3),
        local_loss_function=LocalInfoNCELoss(temperature=0.1),
        global_loss_function=GlobalInfoNCELoss(temperature=0.1),
        seed=seed,
        **kwargs,
    )
    outputs: list[dict] = []

    def record(engine):
        out = engine.state.output
        outputs.append({k: float(out[k]) for k in ("loss", "loss_global", "loss_local", "valid_fraction")})

    trainer.add_event_handler(Events.ITERATION_COMPLETED, record)
    return trainer, outputs


def test_loss_decreases_and_parameters_change():
    trainer, outputs = make_trainer(iterations=20)
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    trainer.run()
    assert len(outputs) == 20
    for out in outputs:
        assert all(math.isfinite(v) for v in out.values())
        assert 0 < out["valid_fraction"] <= 1
        assert out["loss"] == pytest.approx(out["loss_global"] + out["loss_local"], rel=1e-5)
    first = sum(o["loss"] for o in outputs[:5]) / 5
    last = sum(o["loss"] for o in outputs[-5:]) / 5
    assert last < first
    after = trainer.network.state_dict()
    for prefix in ("encoder.conv1.", "encoder.layer2.", "dense_head.", "global_head."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(prefix)), prefix
    assert set(trainer.state.output) >= {"image", "loss", "loss_global", "loss_local", "valid_fraction"}


def test_deterministic_with_the_same_seed():
    runs = []
    for seed in (0, 0, 1):
        trainer, outputs = make_trainer(iterations=3, seed=seed)
        trainer.run()
        runs.append((outputs, trainer.network.state_dict()))
    (out_a, state_a), (out_b, state_b), (out_c, _) = runs
    assert out_a == out_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert [o["loss"] for o in out_a] != [o["loss"] for o in out_c]


def test_views_depend_on_seed_and_iteration_only():
    trainer, _ = make_trainer(iterations=1, seed=3)
    draw = lambda it: torch.rand(4, generator=trainer.iteration_generator(it))  # noqa: E731
    assert torch.equal(draw(5), draw(5)) and not torch.equal(draw(5), draw(6))
    other, _ = make_trainer(iterations=1, seed=4)
    assert not torch.equal(draw(5), torch.rand(4, generator=other.iteration_generator(5)))


def test_feature_argmax_mode_and_bf16():
    trainer, outputs = make_trainer(iterations=2, correspondence_mode="feature_argmax", channels_last=False)
    trainer.run()
    assert all(o["valid_fraction"] == 1.0 and math.isfinite(o["loss"]) for o in outputs)
    trainer, outputs = make_trainer(iterations=1, precision="bf16")
    trainer.run()
    assert math.isfinite(outputs[0]["loss"])


def test_loss_weights():
    trainer, outputs = make_trainer(iterations=1, local_weight=0.0, global_weight=2.0)
    trainer.run()
    assert outputs[0]["loss_local"] == 0 and outputs[0]["loss"] == pytest.approx(2 * outputs[0]["loss_global"])
    with pytest.raises(ValueError, match="weights"):
        make_trainer(iterations=1, local_weight=0.0, global_weight=0.0)
    with pytest.raises(ValueError, match="correspondence_mode"):
        make_trainer(iterations=1, correspondence_mode="nearest")


def test_weights_saver_exports_the_encoder(tmp_path):
    trainer, _ = make_trainer(iterations=1, epochs=2)
    PretrainedWeightsSaver(tmp_path, trainer.network, save_interval=1).attach(trainer)
    trainer.run()
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    encoder = torch.load(tmp_path / "encoder.pt", weights_only=True)
    state = trainer.network.state_dict()
    assert set(model) == set(state) and all(torch.equal(model[k], state[k]) for k in state)
    assert set(encoder) == {k for k in state if k.startswith("encoder.")}

    net = DualDecoderUNet("resnet18")
    loaded = load_encoder_weights(net.encoder, tmp_path / "encoder.pt")
    assert len(loaded) == len(encoder)
    target = net.encoder.state_dict()
    assert all(torch.equal(target[k.removeprefix("encoder.")], v) for k, v in encoder.items())
