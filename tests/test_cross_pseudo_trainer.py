import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from custom.finetuning.trainer import CrossPseudoLabelTrainer
from custom.finetuning.cross_pseudo import CrossPseudoLabelLoss
from custom.finetuning.dual_decoder import DualDecoderUNet
from slice_data import CountingSlices


def _trainer(unsup_weight, iterations=3, rampup=0):
    torch.manual_seed(0)
    net = DualDecoderUNet("resnet18", out_channels=4)
    labeled, unlabeled = CountingSlices(4, True), CountingSlices(6, False)
    trainer = CrossPseudoLabelTrainer(
        device="cpu",
        max_epochs=1,
        epoch_length=iterations,
        train_data_loader=DataLoader(labeled, batch_size=2, shuffle=True),
        unlabeled_data_loader=DataLoader(unlabeled, batch_size=2, shuffle=True),
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        loss_function=CrossPseudoLabelLoss(),
        unsup_weight=unsup_weight,
        rampup_iterations=rampup,
        precision="fp32",
    )
    return trainer, net, labeled, unlabeled


def test_iteration_logs_all_terms_and_updates_both_decoders():
    trainer, net, _, unlabeled = _trainer(unsup_weight=1.0, iterations=4, rampup=4)
    before1 = net.decoder1.head.weight.clone()
    before2 = net.decoder2.head.weight.clone()
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    trainer.run()
    assert len(seen) == 4
    assert all(o["loss_unsup"] > 0 for o in seen)
    assert [round(o["lambda_u"], 6) for o in seen] == [round(torch.exp(torch.tensor(-5 * (1 - t / 4) ** 2)).item(), 6) for t in range(4)]
    for o in seen:
        torch.testing.assert_close(o["loss"], o["loss_sup"] + o["lambda_u"] * o["loss_unsup"])
        assert o["lr"] == 1e-3
    assert unlabeled.reads >= 8  # 4 iterations x 2 unlabeled slices, cycling past the end of the loader
    assert not torch.equal(before1, net.decoder1.head.weight)
    assert not torch.equal(before2, net.decoder2.head.weight)


def test_supervised_only_never_reads_unlabeled_data():
    trainer, _, labeled, unlabeled = _trainer(unsup_weight=0.0)
    trainer.run()
    assert unlabeled.reads == 0 and labeled.reads > 0
    assert float(trainer.state.output["loss_unsup"]) == 0.0


def test_weak_to_strong_takes_pseudo_labels_from_the_weak_view_and_the_loss_on_the_strong_view():
    from custom.finetuning.strong_view import StrongView

    trainer, net, _, unlabeled = _trainer(unsup_weight=1.0, iterations=2)
    trainer.strong_view = StrongView(cutmix_prob=1.0)
    calls = []
    original = trainer.loss_function.forward

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    trainer.loss_function.forward = spy
    inputs = []
    net.register_forward_hook(lambda m, args, out: inputs.append(args[0].detach().clone()))
    trainer.run()
    assert len(calls) == 2 and len(inputs) == 4  # per iteration: weak (no gradient) + [labeled; strong]
    weak, joint = inputs[0], inputs[1]
    assert weak.shape[0] == 2 and joint.shape[0] == 4
    assert not torch.equal(joint[2:], weak)  # the loss saw a perturbed copy of the unlabeled slices
    args, kwargs = calls[0]
    assert kwargs["teacher1_u"] is not None and not kwargs["teacher1_u"].requires_grad
    assert kwargs["teacher1_u"].shape == args[3].shape
    assert float(trainer.state.output["loss_unsup"]) > 0


def test_pasted_labeled_boxes_are_taught_with_their_labels():
    from custom.finetuning.strong_view import StrongView

    trainer, net, _, _ = _trainer(unsup_weight=1.0, iterations=1)
    trainer.strong_view = StrongView(intensity_prob=0.0, blur_prob=0.0, cutmix_prob=1.0)
    trainer.paste_labeled = True
    calls = []
    original = trainer.loss_function.forward
    trainer.loss_function.forward = lambda *a, **k: calls.append((a, k)) or original(*a, **k)
    trainer.run()
    (args, kwargs), = calls
    labels, teacher = args[2], kwargs["teacher1_u"]
    # every pixel of the labeled batch's classes appears as a certain target inside some pasted box
    certain = teacher.softmax(1).max(1).values > 0.999
    assert certain.any()
    assert set(teacher.argmax(1)[certain].unique().tolist()) <= set(labels.unique().tolist())
