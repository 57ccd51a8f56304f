import math

import pytest
import torch
import torch.nn.functional as F

from custom.finetuning.cross_pseudo import CrossPseudoLabelLoss, hard_pseudo_labels, sigmoid_rampup


def _logits(seed, shape=(2, 4, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def test_supervised_term_equals_formula():
    l1, l2 = _logits(0), _logits(1)
    label = torch.randint(0, 4, (2, 1, 5, 6), generator=torch.Generator().manual_seed(2))
    loss = CrossPseudoLabelLoss().supervised(l1, l2, label)
    # per-pixel -log softmax of the true class, averaged, for both decoders
    ref = sum(-torch.log_softmax(l, 1).gather(1, label.long()).mean() for l in (l1, l2))
    torch.testing.assert_close(loss, ref)


def test_unsupervised_term_equals_formula_argmax():
    l1, l2 = _logits(0), _logits(1)
    loss = CrossPseudoLabelLoss("argmax").unsupervised(l1, l2)
    ref = F.cross_entropy(l1, l2.argmax(1)) + F.cross_entropy(l2, l1.argmax(1))
    torch.testing.assert_close(loss, ref)


def test_unsupervised_term_sigmoid_threshold_literal():
    l1, l2 = _logits(0), _logits(1)
    loss = CrossPseudoLabelLoss("sigmoid_threshold", resolve_conflicts=False).unsupervised(l1, l2)
    y1, y2 = (torch.sigmoid(l1) > 0.5).float(), (torch.sigmoid(l2) > 0.5).float()
    ref = F.binary_cross_entropy_with_logits(l1, y2) + F.binary_cross_entropy_with_logits(l2, y1)
    torch.testing.assert_close(loss, ref)


def test_sigmoid_conflicts_resolved_to_partition():
    logits = _logits(3, (4, 4, 8, 8))
    y = hard_pseudo_labels(logits, "sigmoid_threshold", resolve_conflicts=True)
    assert torch.all(y.sum(1) == 1)
    literal = hard_pseudo_labels(logits, "sigmoid_threshold", resolve_conflicts=False)
    single = literal.sum(1) == 1
    assert (~single).any(), "test data should contain empty or overlapping pixels"
    assert torch.equal(y.permute(0, 2, 3, 1)[single], literal.permute(0, 2, 3, 1)[single])
    winner = F.one_hot(logits.argmax(1), 4).permute(0, 3, 1, 2).float()
    assert torch.equal(y.permute(0, 2, 3, 1)[~single], winner.permute(0, 2, 3, 1)[~single])


@pytest.mark.parametrize("mode", ["argmax", "sigmoid_threshold"])
def test_pseudo_labels_are_detached(mode):
    l1 = _logits(0).requires_grad_()
    l2 = _logits(1).requires_grad_()
    loss_fn = CrossPseudoLabelLoss(mode)
    loss_fn.unsupervised(l1, l2).backward()
    # gradient w.r.t. l1 must equal that of CE(l1, const target) alone: the target y1 made from l1 carries none
    l1b = l1.detach().clone().requires_grad_()
    y2 = hard_pseudo_labels(l2, mode)
    loss_fn._ce(l1b, y2).backward()
    torch.testing.assert_close(l1.grad, l1b.grad)
    assert not hard_pseudo_labels(l1, mode).requires_grad


def test_forward_weighting_and_dice_option():
    l1, l2, lu1, lu2 = (_logits(i) for i in range(4))
    label = torch.randint(0, 4, (2, 1, 5, 6))
    fn = CrossPseudoLabelLoss()
    out = fn(l1, l2, label, lu1, lu2, weight_u=0.3)
    torch.testing.assert_close(out["loss"], out["loss_sup"] + 0.3 * out["loss_unsup"])
    assert fn(l1, l2, label)["loss_unsup"] == 0
    with_dice = CrossPseudoLabelLoss(dice_weight=1.0).supervised(l1, l2, label)
    assert with_dice > fn.supervised(l1, l2, label)


def test_sigmoid_rampup():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_supervised_ce_dice_mix_equals_formula():
    l1, l2 = _logits(0), _logits(1)
    label = torch.randint(0, 4, (2, 1, 5, 6), generator=torch.Generator().manual_seed(2))
    loss = CrossPseudoLabelLoss(ce_weight=0.5, dice_weight=0.5, dice_batch=True).supervised(l1, l2, label)

    def batch_dice_loss(logits):  # soft Dice over the whole batch, foreground classes only
        p = logits.softmax(1)
        oh = F.one_hot(label[:, 0], 4).permute(0, 3, 1, 2).float()
        inter, den = (p * oh).sum((0, 2, 3)), (p + oh).sum((0, 2, 3))
        return (1 - (2 * inter + 1e-5) / (den + 1e-5))[1:].mean()

    ref = sum(0.5 * F.cross_entropy(l, label[:, 0]) + 0.5 * batch_dice_loss(l) for l in (l1, l2))
    torch.testing.assert_close(loss, ref)


def test_confidence_mask_drops_unsure_pixels():
    l1, l2 = _logits(0) * 3, _logits(1) * 3
    loss = CrossPseudoLabelLoss(confidence_threshold=0.8).unsupervised(l1, l2)
    m1 = (l1.softmax(1).max(1).values >= 0.8).float()
    m2 = (l2.softmax(1).max(1).values >= 0.8).float()
    assert 0 < m1.mean() < 1 and 0 < m2.mean() < 1, "test data should mix sure and unsure pixels"
    ref = (F.cross_entropy(l1, l2.argmax(1), reduction="none") * m2).mean() + (
        F.cross_entropy(l2, l1.argmax(1), reduction="none") * m1).mean()
    torch.testing.assert_close(loss, ref)
    assert loss < CrossPseudoLabelLoss().unsupervised(l1, l2)


def test_ensemble_pseudo_labels():
    l1, l2 = _logits(0), _logits(1)
    loss = CrossPseudoLabelLoss(pseudo_label_source="ensemble").unsupervised(l1, l2)
    y = ((l1.softmax(1) + l2.softmax(1)) / 2).argmax(1)
    torch.testing.assert_close(loss, F.cross_entropy(l1, y) + F.cross_entropy(l2, y))
    with pytest.raises(ValueError, match="pseudo_label_source"):
        CrossPseudoLabelLoss(pseudo_label_source="other")
    with pytest.raises(ValueError, match="confidence_threshold"):
        CrossPseudoLabelLoss(confidence_threshold=1.0)


def test_unsup_weight_schedule_warmup_then_ramp():
    from custom.finetuning.cross_pseudo import unsup_weight_schedule

    assert unsup_weight_schedule(0, 1.0, warmup_steps=10, rampup_steps=20) == 0.0
    assert unsup_weight_schedule(9, 1.0, 10, 20) == 0.0
    assert unsup_weight_schedule(10, 0.5, 10, 20) == pytest.approx(0.5 * math.exp(-5))
    assert unsup_weight_schedule(20, 0.5, 10, 20) == pytest.approx(0.5 * math.exp(-5 * 0.25))
    assert unsup_weight_schedule(30, 0.5, 10, 20) == 0.5 and unsup_weight_schedule(99, 0.5, 10, 20) == 0.5
    assert unsup_weight_schedule(50, 0.0, 10, 20) == 0.0


def test_masked_dice_pseudo_term_equals_formula():
    from custom.finetuning.cross_pseudo import masked_dice_loss

    l1, l2 = _logits(0) * 3, _logits(1) * 3
    fn = CrossPseudoLabelLoss(confidence_threshold=0.8, unsup_ce_weight=0.0, unsup_dice_weight=1.0)

    def ref_dice(logits, other):
        p = logits.softmax(1)
        y = F.one_hot(other.argmax(1), 4).permute(0, 3, 1, 2).float()
        m = (other.softmax(1).max(1).values >= 0.8).float()[:, None]
        inter, den = (p * y * m).sum((0, 2, 3)), (p * m).sum((0, 2, 3)) + (y * m).sum((0, 2, 3))
        return (1 - (2 * inter + 1e-5) / (den + 1e-5))[1:].mean()

    torch.testing.assert_close(fn.unsupervised(l1, l2), ref_dice(l1, l2) + ref_dice(l2, l1))
    # masked-out pixels count for no class: a target and prediction that differ only there give ~0
    probs = F.one_hot(torch.randint(0, 4, (2, 5, 6)), 4).permute(0, 3, 1, 2).float()
    target = probs.clone()
    target[:, :, 0] = torch.roll(target[:, :, 0], 1, dims=1)
    mask = torch.ones(2, 5, 6)
    mask[:, 0] = 0
    assert masked_dice_loss(probs, target, mask) < 1e-4 < masked_dice_loss(probs, target)


def test_masked_dice_present_only_ignores_absent_classes():
    from custom.finetuning.cross_pseudo import masked_dice_loss

    target = torch.zeros(2, 4, 5, 6)
    target[:, 0] = 1
    target[:, 0, :2, :2], target[:, 3, :2, :2] = 0, 1  # only class 3 is present (besides background)
    probs = torch.full((2, 4, 5, 6), 0.25)
    all_classes = masked_dice_loss(probs, target)
    present = masked_dice_loss(probs, target, present_only=True)
    inter, den = (probs[:, 3] * target[:, 3]).sum(), probs[:, 3].sum() + target[:, 3].sum()
    torch.testing.assert_close(present, 1 - (2 * inter + 1e-5) / (den + 1e-5))
    assert present < all_classes  # absent classes 1, 2 (predicted 0.25 everywhere) no longer count


def test_teacher_logits_give_the_pseudo_labels_and_the_student_logits_the_loss():
    student1, student2, teacher1, teacher2 = (_logits(s) for s in range(4))
    loss = CrossPseudoLabelLoss("argmax").unsupervised(student1, student2, teacher1, teacher2)
    ref = F.cross_entropy(student1, teacher2.argmax(1)) + F.cross_entropy(student2, teacher1.argmax(1))
    torch.testing.assert_close(loss, ref)
    terms = CrossPseudoLabelLoss("argmax")(student1, student2, torch.zeros(2, 1, 5, 6), student1, student2,
                                           weight_u=1.0, teacher1_u=teacher1, teacher2_u=teacher2)
    torch.testing.assert_close(terms["loss_unsup"], ref)
