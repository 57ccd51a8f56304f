"""The unlabeled terms of the teacher-student baselines (custom.engines.baselines.losses)."""

import torch
import torch.nn.functional as F

from custom.engines.baselines.losses import consistency_mse, hard_label_ce


def test_hard_label_ce_leaves_out_unconfident_pixels():
    q = torch.tensor([[0.9, 0.55], [0.1, 0.45]]).view(1, 2, 1, 2)  # pixel 0: class 0 at 0.9; pixel 1: 0.55
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0]]).view(1, 2, 1, 2)
    ce = F.cross_entropy(logits, torch.zeros(1, 1, 2, dtype=torch.long), reduction="none").flatten()
    torch.testing.assert_close(hard_label_ce([logits], q), ce.mean())
    torch.testing.assert_close(hard_label_ce([logits], q, confidence_threshold=0.6), ce[0] / 2)
    torch.testing.assert_close(hard_label_ce([logits, logits], q, 0.6), ce[0])
    torch.testing.assert_close(consistency_mse([q, q], q), torch.tensor(0.0))


def test_consistency_mse_is_the_sum_of_per_map_means():
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(2, 3, 4, 5, generator=g), 1)
    p1, p2 = (torch.softmax(torch.randn(2, 3, 4, 5, generator=g), 1) for _ in range(2))
    expected = ((p1 - q) ** 2).mean() + ((p2 - q) ** 2).mean()
    torch.testing.assert_close(consistency_mse([p1, p2], q), expected)


def test_binary_hard_label_ce_is_the_channel_mean_of_bce_to_the_one_hot():
    g = torch.Generator().manual_seed(1)
    q = torch.softmax(torch.randn(2, 3, 4, 4, generator=g), 1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    onehot = F.one_hot(q.argmax(1), 3).movedim(-1, 1).float()
    mask = (q.max(1).values >= 0.5).float()
    per_pixel = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(1)
    torch.testing.assert_close(hard_label_ce([logits], q, 0.5, binary=True), (per_pixel * mask).mean())
