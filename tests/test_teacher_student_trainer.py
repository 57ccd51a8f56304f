"""Mean Teacher and self-training baselines (custom.engines.baselines) and their fine-tuning bundle overlays."""

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from torch.utils.data import DataLoader

from custom.engines.baselines import MeanTeacherTrainer, SelfTrainingTrainer, TeacherStudentTrainer
from custom.handlers import AtomicCheckpointSaver, ResumeFromCheckpoint
from custom.finetuning.cross_pseudo import CrossPseudoLabelLoss
from custom.finetuning.dual_decoder import DualDecoderUNet
from slice_data import CountingSlices

BASELINES = {"ema": MeanTeacherTrainer, "snapshot": SelfTrainingTrainer}  # by teacher_mode
SIZE = 32  # smallest size the network takes (stride 32)
DECODER = (32, 16, 16, 8, 8)  # small decoders keep the unit tests fast


def _net():
    return DualDecoderUNet("resnet18", out_channels=4, decoder_channels=DECODER)


def _trainer(teacher, iterations=3, seed=0, net=None, max_epochs=None, **kwargs):
    """One labeled and one unlabeled batch of 2 slices each, repeated every iteration (deterministic order)."""
    torch.manual_seed(seed)
    net = net if net is not None else _net()
    labeled, unlabeled = CountingSlices(2, True, SIZE), CountingSlices(2, False, SIZE, seed=1)
    kwargs.setdefault("noise_std", 0.0)
    trainer = BASELINES[teacher](
        device="cpu",
        max_epochs=max_epochs or 1,
        epoch_length=1 if max_epochs else iterations,
        train_data_loader=DataLoader(labeled, batch_size=2, shuffle=False),
        unlabeled_data_loader=DataLoader(unlabeled, batch_size=2, shuffle=False),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=CrossPseudoLabelLoss(),
        precision="fp32",
        **kwargs,
    )
    return trainer, net, labeled, unlabeled


def _record(trainer):
    outputs, states = [], []

    def keep(engine):
        outputs.append({k: v for k, v in engine.state.output.items() if k in ("loss", "loss_sup", "loss_unsup", "lambda_u")})
        states.append({k: v.clone() for k, v in engine.network.state_dict().items()})

    trainer.add_event_handler(Events.ITERATION_COMPLETED, keep)
    return outputs, states


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_ema_update_is_decay_times_teacher_plus_one_minus_decay_times_student():
    trainer, net, _, _ = _trainer("ema", iterations=1, ema_decay=0.9)
    old = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    _assert_same_state(old, net.state_dict())  # the teacher starts as a copy of the network
    trainer.run()
    student = net.state_dict()
    for name, param in trainer.teacher.named_parameters():
        torch.testing.assert_close(param, 0.9 * old[name] + 0.1 * student[name], msg=name)
    running = "decoder1.blocks.0.conv.1.running_mean"
    torch.testing.assert_close(trainer.teacher.state_dict()[running], 0.9 * old[running] + 0.1 * student[running])
    assert trainer.teacher.state_dict()["decoder1.blocks.0.conv.1.num_batches_tracked"] == 1  # copied, not averaged
    assert not torch.equal(trainer.teacher.decoder1.head.weight, net.decoder1.head.weight)


def test_teacher_is_frozen_in_eval_mode_and_gets_no_gradients():
    for mode in ("ema", "snapshot"):
        trainer, net, _, _ = _trainer(mode, iterations=2, noise_std=0.1)
        outputs, _ = _record(trainer)
        trainer.run()
        assert all(float(o["loss_unsup"]) > 0 for o in outputs), mode
        assert not trainer.teacher.training
        assert all(not p.requires_grad and p.grad is None for p in trainer.teacher.parameters())
        assert all(p.grad is not None for p in net.decoder1.parameters())
        teacher_ids = {id(p) for p in trainer.teacher.parameters()}
        assert not teacher_ids & {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}


def test_snapshot_is_taken_at_pseudo_label_start_and_kept():
    trainer, net, _, unlabeled = _trainer("snapshot", iterations=4, pseudo_label_start=2, unsup_weight=0.5)
    outputs, states = _record(trainer)
    trainer.run()
    assert [float(o["loss_unsup"]) for o in outputs[:2]] == [0.0, 0.0]  # supervised only before the start
    assert [o["lambda_u"] for o in outputs] == [0.0, 0.0, 0.5, 0.5]
    assert all(float(o["loss_unsup"]) > 0 for o in outputs[2:])
    assert unlabeled.reads == 2 * 2  # unlabeled data read only from the start on
    _assert_same_state(trainer.teacher.state_dict(), states[1])  # the network after 2 iterations
    assert not torch.equal(states[3]["decoder1.head.weight"], states[1]["decoder1.head.weight"])


def test_relabel_interval_refreshes_the_snapshot():
    trainer, _, _, _ = _trainer("snapshot", iterations=5, pseudo_label_start=1, relabel_interval=2)
    _, states = _record(trainer)
    snapshots = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: snapshots.append(e.teacher.decoder1.head.weight.clone()))
    trainer.run()
    # snapshots at the start of iterations 2 and 4: the network after iterations 1 and 3
    for i, after in zip(range(5), [None, 0, 0, 2, 2]):
        if after is not None:
            torch.testing.assert_close(snapshots[i], states[after]["decoder1.head.weight"], rtol=0, atol=0)
    _assert_same_state(trainer.teacher.state_dict(), states[2])


def test_self_training_without_start_reads_no_unlabeled_data():
    trainer, _, _, unlabeled = _trainer("snapshot", iterations=2, pseudo_label_start=10)
    trainer.run()
    assert unlabeled.reads == 0 and float(trainer.state.output["loss_unsup"]) == 0.0


@pytest.mark.parametrize("mode", ["ema", "snapshot"])
def test_unlabeled_loss_matches_the_formula_on_a_fixed_batch(mode):
    start = {"pseudo_label_start": 0} if mode == "snapshot" else {}
    trainer, net, labeled, unlabeled = _trainer(mode, iterations=1, unsup_weight=0.7, **start)
    teacher = copy.deepcopy(net).eval()  # both teachers equal the network at the first iteration
    student = copy.deepcopy(net).train()
    outputs, _ = _record(trainer)
    trainer.run()
    x_l, m, x_u = labeled.images, labeled.labels, unlabeled.images
    with torch.no_grad():
        l1, l2 = student(torch.cat([x_l, x_u]))
        t1, t2 = teacher(x_u)
        q = (torch.softmax(t1, 1) + torch.softmax(t2, 1)) / 2
        u1, u2 = l1[2:], l2[2:]
        if mode == "ema":
            expected = F.mse_loss(torch.softmax(u1, 1), q) + F.mse_loss(torch.softmax(u2, 1), q)
        else:
            y = q.argmax(1)
            expected = F.cross_entropy(u1, y) + F.cross_entropy(u2, y)
        sup = F.cross_entropy(l1[:2], m[:, 0].long()) + F.cross_entropy(l2[:2], m[:, 0].long())
    out = outputs[0]
    torch.testing.assert_close(out["loss_unsup"], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out["loss_sup"], sup, rtol=1e-4, atol=1e-6)
    assert out["lambda_u"] == 0.7
    torch.testing.assert_close(out["loss"], out["loss_sup"] + 0.7 * out["loss_unsup"])


def test_bad_arguments_are_rejected():
    net = _net()
    with pytest.raises(ValueError, match="teacher must be"):
        TeacherStudentTrainer("cpu", 1, [], net, torch.optim.SGD(net.parameters(), 0.1), CrossPseudoLabelLoss())
    with pytest.raises(ValueError, match="ema_decay"):
        MeanTeacherTrainer("cpu", 1, [], net, torch.optim.SGD(net.parameters(), 0.1), CrossPseudoLabelLoss(),
                           ema_decay=1.5)


_RESUME = {"snapshot": dict(pseudo_label_start=2), "ema": dict(ema_decay=0.5)}


@pytest.fixture(scope="module")
def uninterrupted():
    """(teacher, student) state dicts after 4 uninterrupted iterations, per mode, computed once."""
    done = {}

    def get(mode):
        if mode not in done:
            trainer, net, _, _ = _trainer(mode, max_epochs=4, **_RESUME[mode])
            trainer.run()
            done[mode] = trainer.teacher.state_dict(), net.state_dict()
        return done[mode]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("mode,stop", [("snapshot", 1), ("snapshot", 2), ("snapshot", 3), ("ema", 2)],
                         ids=["snapshot-before-start", "snapshot-at-start", "snapshot-after-start", "ema"])
def test_resume_restores_the_teacher(tmp_path, mode, stop, uninterrupted):
    """An interrupted run resumed from its checkpoint ends with the same teacher and student as an uninterrupted one."""
    full_teacher, full_student = uninterrupted(mode)

    def checkpointed(trainer, net):
        return {"network": net, "optimizer": trainer.optimizer, "trainer": trainer, "teacher": trainer.teacher}

    first, first_net, _, _ = _trainer(mode, max_epochs=stop, **_RESUME[mode])
    saver = AtomicCheckpointSaver(tmp_path, checkpointed(first, first_net))
    saver.attach(first)
    first.run()
    saved = torch.load(tmp_path / "last_checkpoint.pt", weights_only=True)
    assert saved["trainer"]["iteration"] == stop and "teacher" in saved

    resumed, resumed_net, _, _ = _trainer(mode, max_epochs=4, seed=5, **_RESUME[mode])  # other initial weights
    ResumeFromCheckpoint(tmp_path / "last_checkpoint.pt", checkpointed(resumed, resumed_net)).attach(resumed)
    resumed.run()
    assert resumed.state.iteration == 4
    _assert_same_state(resumed.teacher.state_dict(), full_teacher)
    _assert_same_state(resumed_net.state_dict(), full_student)


# --- the bundle overlays: a few iterations at 64 px, ResNet-18, on the built-in synthetic data ---------------------

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "ideal_finetune" / "configs"
TINY = dict(backbone="resnet18", spatial_size=64, batch_size=2, unlabeled_batch_size=2, max_iterations=4,
            epoch_length=2, val_interval=2)  # one validation, at the end


def _run_overlay(name, root, **overrides):
    from monai.bundle import create_workflow

    files = [str(CONFIGS / "train.yaml"), str(CONFIGS / "cpu.yaml"), str(CONFIGS / "baselines" / f"{name}.yaml")]
    workflow = create_workflow(config_file=files, run_id="training", bundle_root=str(root), **{**TINY, **overrides})
    trainer = workflow.parser.get_parsed_content("train#trainer")
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(float(e.state.output["loss_unsup"])))
    workflow.run()
    workflow.finalize()
    resumable = torch.load(root / "models" / "last_checkpoint.pt", weights_only=True)
    assert set(resumable) == {"network", "optimizer", "lr_scheduler", "trainer", "best_model", "teacher", "rng"}
    assert resumable["trainer"]["iteration"] == 4
    assert resumable["teacher"].keys() == resumable["network"].keys()
    assert (root / "models" / "model.pt").is_file()  # validation of the student ensemble ran
    return trainer, outputs, resumable


@pytest.mark.slow
def test_mean_teacher_overlay_runs_and_checkpoints_the_teacher(tmp_path):
    trainer, outputs, resumable = _run_overlay("mean_teacher", tmp_path)
    assert trainer.teacher_mode == "ema" and trainer.ema_decay == 0.99 and trainer.noise_std == 0.1
    # the same supervised warm-up as the CPS default (trained_iterations // 4 = 1 iteration), then consistency
    assert trainer.warmup_iterations == 1
    assert len(outputs) == 4 and outputs[0] == 0.0 and all(u > 0 for u in outputs[1:])
    k = "decoder1.head.weight"
    assert not torch.equal(resumable["teacher"][k], resumable["network"][k])


@pytest.mark.slow
def test_self_train_overlay_starts_pseudo_labels_halfway_and_checkpoints_the_teacher(tmp_path):
    trainer, outputs, resumable = _run_overlay("self_train", tmp_path)
    assert trainer.teacher_mode == "snapshot" and trainer.pseudo_label_start == 2  # trained_iterations // 2
    assert outputs[:2] == [0.0, 0.0] and all(u > 0 for u in outputs[2:])
    k = "decoder1.head.weight"
    assert not torch.equal(resumable["teacher"][k], resumable["network"][k])  # student moved on after the snapshot
