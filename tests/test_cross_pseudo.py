import math

import pytest
import torch
import torch.nn.functional as F

from custom.losses.cross_pseudo import CrossPseudoLabelLoss, hard_pseudo_labels, sigmoid_rampup


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
