# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""
Unlabeled terms of the teacher-student baselines: student maps against a teacher's class probabilities.

For ``J`` student maps (both decoders of the dual-decoder network) and the teacher's probabilities
``q`` (B, C, H, W), detached:

- Mean Teacher consistency (:func:`consistency_mse`), on student probabilities ``p_j``:

  .. math::
      L_u = \\sum_j \\frac{1}{B C H W} \\sum_{b, c, x} (p_{j,bcx} - q_{bcx})^2

- self-training hard pseudo-labels (:func:`hard_label_ce`), on student logits ``l_j``, with
  ``y_x = argmax_c q_{cx}`` and the confidence mask ``m_x = [max_c q_{cx} >= t]``:

  .. math::
      L_u = \\sum_j \\frac{1}{B H W} \\sum_{b, x} m_{bx} \\, CE(l_{j,bx}, y_{bx})

No gradient reaches the teacher through either term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["consistency_mse", "hard_label_ce"]


def consistency_mse(student_probs: Sequence[torch.Tensor], teacher_probs: torch.Tensor) -> torch.Tensor:
    """
    ``sum_j mean((p_j - q)^2)``, the usual segmentation form of the Mean Teacher consistency.

    Args:
        student_probs: student probability maps ``p_j``, each ``(B, C, H, W)``.
        teacher_probs: teacher probabilities ``q``, ``(B, C, H, W)`` (detached here).

    Returns:
        fp32 scalar; the mean runs over batch, classes and pixels.
    """
    q = teacher_probs.detach().float()
    return sum(F.mse_loss(p.float(), q) for p in student_probs)


def hard_label_ce(
    student_logits: Sequence[torch.Tensor],
    teacher_probs: torch.Tensor,
    confidence_threshold: float = 0.0,
    binary: bool = False,
) -> torch.Tensor:
    """
    ``sum_j mean(mask * CE(l_j, argmax q))``: cross-entropy of every student map to the teacher's hard labels.

    ``mask = max_c q >= confidence_threshold`` (all pixels for 0); the mean runs over all ``B * H * W`` pixels,
    masked ones counting as 0, so the term shrinks when the teacher is unsure (FixMatch convention).

    Args:
        student_logits: student logits ``l_j``, each ``(B, C, H, W)``.
        teacher_probs: teacher probabilities ``q``, ``(B, C, H, W)`` (detached here).
        confidence_threshold: pixels whose ``max_c q`` is below it add nothing, in [0, 1].
        binary: per-channel BCE against ``one_hot(argmax q)`` (averaged over channels) instead of softmax CE,
            for sigmoid networks.

    Returns:
        fp32 scalar.
    """
    with torch.no_grad():
        confidence, target = teacher_probs.detach().float().max(dim=1)
        mask = (confidence >= confidence_threshold).float()
        onehot = F.one_hot(target, teacher_probs.shape[1]).movedim(-1, 1).float() if binary else None
    total = teacher_probs.new_zeros((), dtype=torch.float32)
    for logits in student_logits:
        logits = logits.float()
        if binary:
            per_pixel = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(dim=1)
        else:
            per_pixel = F.cross_entropy(logits, target, reduction="none")
        total = total + (per_pixel * mask).mean()
    return total
