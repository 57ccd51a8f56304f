"""Cross pseudo-label supervision of IDEAL's fine-tuning stage (paper eq. 3, Fig. 2b).

Labeled slices: ``CE(p1, m) + CE(p2, m)`` (optionally + Dice). Unlabeled slices: ``CE(p1, y2) + CE(p2, y1)``
where ``y_j`` is the hard pseudo-label of decoder j, detached so no gradient reaches the branch that made it.

Two pseudo-label modes:

- ``"argmax"`` (default): softmax outputs, ``y = one_hot(argmax)``, cross-entropy. Correct for mutually
  exclusive classes such as the ACDC structures.
- ``"sigmoid_threshold"``: the paper's literal description: sigmoid outputs thresholded at ``threshold`` into
  one-hot maps, per-channel binary cross-entropy. A pixel can then end up with no active channel or with
  several. ``resolve_conflicts=True`` (default) gives such pixels the one-hot of the most probable channel, so
  the targets stay a partition; ``False`` keeps the literal thresholded maps (all-zero or multi-hot targets).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

__all__ = ["CrossPseudoLabelLoss", "hard_pseudo_labels", "sigmoid_rampup", "PSEUDO_LABEL_MODES"]

PSEUDO_LABEL_MODES = ("argmax", "sigmoid_threshold")


def hard_pseudo_labels(
    logits: torch.Tensor, mode: str = "argmax", threshold: float = 0.5, resolve_conflicts: bool = True
) -> torch.Tensor:
    """Detached one-hot pseudo-labels (B, C, H, W) float from logits (B, C, H, W)."""
    with torch.no_grad():
        logits = logits.detach().float()
        num_classes = logits.shape[1]
        winner = F.one_hot(logits.argmax(dim=1), num_classes).movedim(-1, 1).float()
        if mode == "argmax":
            return winner
        if mode != "sigmoid_threshold":
            raise ValueError(f"mode must be one of {PSEUDO_LABEL_MODES}, got {mode!r}")
        on = (torch.sigmoid(logits) > threshold).float()
        if not resolve_conflicts:
            return on
        single = on.sum(dim=1, keepdim=True) == 1
        return torch.where(single, on, winner)


def sigmoid_rampup(step: int, rampup_steps: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = step / rampup_steps`` clipped to [0, 1] (Laine & Aila 2017); 1 when no ramp."""
    if rampup_steps <= 0:
        return 1.0
    t = min(max(step, 0), rampup_steps) / rampup_steps
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


class CrossPseudoLabelLoss(nn.Module):
    """Supervised and cross pseudo-label terms for two decoders.

    Args:
        mode: ``"argmax"`` or ``"sigmoid_threshold"``, see the module docstring.
        threshold: sigmoid threshold of the ``sigmoid_threshold`` mode.
        resolve_conflicts: in ``sigmoid_threshold`` mode, give pixels with zero or several active channels
            the one-hot of the most probable channel.
        dice_weight: weight of an added soft Dice loss in the supervised term (0 disables it).
    """

    def __init__(
        self, mode: str = "argmax", threshold: float = 0.5, resolve_conflicts: bool = True, dice_weight: float = 0.0
    ) -> None:
        super().__init__()
        if mode not in PSEUDO_LABEL_MODES:
            raise ValueError(f"mode must be one of {PSEUDO_LABEL_MODES}, got {mode!r}")
        self.mode, self.threshold, self.resolve_conflicts = mode, threshold, resolve_conflicts
        self.dice_weight = dice_weight
        sigmoid = mode == "sigmoid_threshold"
        self.dice = DiceLoss(include_background=False, to_onehot_y=False, sigmoid=sigmoid, softmax=not sigmoid)

    def _ce(self, logits: torch.Tensor, target_onehot: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.mode == "argmax":
            return F.cross_entropy(logits, target_onehot.argmax(dim=1))
        return F.binary_cross_entropy_with_logits(logits, target_onehot)

    def supervised(self, logits1: torch.Tensor, logits2: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """logits (B, C, H, W); label (B, 1, H, W) class indices -> ``CE(p1, m) + CE(p2, m)`` [+ Dice terms]."""
        target = F.one_hot(label[:, 0].long(), logits1.shape[1]).movedim(-1, 1).float()
        loss = self._ce(logits1, target) + self._ce(logits2, target)
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * (self.dice(logits1.float(), target) + self.dice(logits2.float(), target))
        return loss

    def unsupervised(self, logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
        """``CE(p1, y2) + CE(p2, y1)`` with detached hard pseudo-labels; logits (B, C, H, W)."""
        y1 = hard_pseudo_labels(logits1, self.mode, self.threshold, self.resolve_conflicts)
        y2 = hard_pseudo_labels(logits2, self.mode, self.threshold, self.resolve_conflicts)
        return self._ce(logits1, y2) + self._ce(logits2, y1)

    def forward(
        self,
        logits1: torch.Tensor,
        logits2: torch.Tensor,
        label: torch.Tensor,
        logits1_u: torch.Tensor | None = None,
        logits2_u: torch.Tensor | None = None,
        weight_u: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Returns ``{"loss", "loss_sup", "loss_unsup"}``; ``loss = loss_sup + weight_u * loss_unsup``."""
        sup = self.supervised(logits1, logits2, label)
        if logits1_u is None or logits2_u is None or weight_u == 0:
            unsup = sup.new_zeros(())
        else:
            unsup = self.unsupervised(logits1_u, logits2_u)
        return {"loss": sup + weight_u * unsup, "loss_sup": sup.detach(), "loss_unsup": unsup.detach()}
