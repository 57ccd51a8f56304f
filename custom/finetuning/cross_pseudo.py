"""Cross pseudo-label supervision of IDEAL's fine-tuning stage (paper eq. 3, Fig. 2b).

Labeled slices: ``sum_j ce_weight * CE(p_j, m) + dice_weight * Dice(p_j, m)`` (the paper: CE only; the default of
the bundle: 0.5 CE + 0.5 soft Dice over the batch, foreground classes only). Unlabeled slices:
``CE(p1, y2) + CE(p2, y1)`` where ``y_j`` is the hard pseudo-label of decoder j, detached so no gradient reaches
the branch that made it.

Refinements beyond the paper, all off by default in this class (the bundle turns the first two on):

- ``confidence_threshold``: pixels whose pseudo-label probability is below it add nothing (the masked CE is
  averaged over all pixels, so the term shrinks while the decoders are unsure, as in FixMatch / UniMatch).
- ``unsup_dice_weight`` / ``unsup_ce_weight``: a masked soft Dice to the pseudo-labels instead of (or with) the CE.
  On real ACDC the masked CE alone shrank the structures towards background within 200 iterations at full weight
  (validation Dice 0.40 -> 0.00); the Dice is class-balanced (UniMatch's ACDC recipe uses it for unlabeled pixels).
- ``pseudo_label_source="ensemble"``: both decoders learn from the hard label of their averaged probabilities
  instead of each other's; ``"cross"`` is the paper's.

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

__all__ = ["CrossPseudoLabelLoss", "hard_pseudo_labels", "masked_dice_loss", "one_hot_labels", "sigmoid_rampup", "unsup_weight_schedule", "PSEUDO_LABEL_MODES",
           "PSEUDO_LABEL_SOURCES"]

PSEUDO_LABEL_MODES = ("argmax", "sigmoid_threshold")
PSEUDO_LABEL_SOURCES = ("cross", "ensemble")


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


def one_hot_labels(label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-index labels (B, 1, H, W) -> one-hot float (B, C, H, W)."""
    return F.one_hot(label[:, 0].long(), num_classes).movedim(-1, 1).float()


def masked_dice_loss(probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                     smooth: float = 1e-5, present_only: bool = False) -> torch.Tensor:
    """``1 - mean_c (2 sum(p_c y_c m) + s) / (sum(p_c m) + sum(y_c m) + s)`` over the foreground classes c >= 1, sums
    over the whole batch; probs and one-hot target (B, C, H, W), mask (B, H, W) or None. Masked-out pixels count
    for no class, so a structure whose pixels are all unsure adds (nearly) nothing instead of being pushed to
    background. ``present_only``: average only over the classes present in the (masked) target batch; a class absent
    from every pseudo-label of the batch then exerts no pull towards predicting nothing."""
    if mask is not None:
        m = mask[:, None].to(probs.dtype)
        probs, target = probs * m, target * m
    dims = (0, 2, 3)
    inter = (probs * target).sum(dims)
    den = probs.sum(dims) + target.sum(dims)
    per_class = (1.0 - (2 * inter + smooth) / (den + smooth))[1:]
    if not present_only:
        return per_class.mean()
    present = target.sum(dims)[1:] > 0
    return (per_class * present).sum() / present.sum().clamp(min=1)


def sigmoid_rampup(step: int, rampup_steps: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = step / rampup_steps`` clipped to [0, 1] (Laine & Aila 2017); 1 when no ramp."""
    if rampup_steps <= 0:
        return 1.0
    t = min(max(step, 0), rampup_steps) / rampup_steps
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def unsup_weight_schedule(step: int, weight: float, warmup_steps: int = 0, rampup_steps: int = 0) -> float:
    """lambda_u at ``step`` (0-based): 0 during ``warmup_steps`` of supervised training, then ``weight`` times a
    sigmoid ramp-up over ``rampup_steps``. Pseudo-labels of untrained decoders are noise; the warm-up lets
    supervision make them informative first."""
    if weight == 0 or step < warmup_steps:
        return 0.0
    return weight * sigmoid_rampup(step - warmup_steps, rampup_steps)


class CrossPseudoLabelLoss(nn.Module):
    """Supervised and cross pseudo-label terms for two decoders.

    Args:
        mode: ``"argmax"`` or ``"sigmoid_threshold"``, see the module docstring.
        threshold: sigmoid threshold of the ``sigmoid_threshold`` mode.
        resolve_conflicts: in ``sigmoid_threshold`` mode, give pixels with zero or several active channels
            the one-hot of the most probable channel.
        ce_weight: weight of the cross-entropy in the supervised term.
        dice_weight: weight of an added soft Dice loss in the supervised term (0 disables it).
        dice_batch: compute the Dice over the whole batch (True) rather than per slice: slices without a structure
            then do not reward predicting nothing, and small structures are not drowned by empty slices.
        confidence_threshold: pseudo-labels whose probability (softmax, or sigmoid of the winning channel) is
            below this add no loss (0 keeps every pixel, the paper's behaviour).
        pseudo_label_source: ``"cross"`` (each decoder learns from the other's hard labels, the paper) or
            ``"ensemble"`` (both learn from the hard labels of their mean probabilities).
        unsup_ce_weight: weight of the (masked) CE to the pseudo-labels (1, the paper).
        unsup_dice_weight: weight of a masked soft Dice to the pseudo-labels (:func:`masked_dice_loss`, foreground
            classes only): class-balanced, so it does not shrink the structures towards the dominant background.
        unsup_dice_present_only: that Dice only over the classes present in the pseudo-label batch.
    """

    def __init__(
        self,
        mode: str = "argmax",
        threshold: float = 0.5,
        resolve_conflicts: bool = True,
        dice_weight: float = 0.0,
        ce_weight: float = 1.0,
        dice_batch: bool = True,
        confidence_threshold: float = 0.0,
        pseudo_label_source: str = "cross",
        unsup_ce_weight: float = 1.0,
        unsup_dice_weight: float = 0.0,
        unsup_dice_present_only: bool = False,
    ) -> None:
        super().__init__()
        if mode not in PSEUDO_LABEL_MODES:
            raise ValueError(f"mode must be one of {PSEUDO_LABEL_MODES}, got {mode!r}")
        if pseudo_label_source not in PSEUDO_LABEL_SOURCES:
            raise ValueError(f"pseudo_label_source must be one of {PSEUDO_LABEL_SOURCES}, got {pseudo_label_source!r}")
        if not 0.0 <= confidence_threshold < 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1), got {confidence_threshold}")
        self.mode, self.threshold, self.resolve_conflicts = mode, threshold, resolve_conflicts
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.confidence_threshold, self.pseudo_label_source = confidence_threshold, pseudo_label_source
        self.unsup_ce_weight, self.unsup_dice_weight = unsup_ce_weight, unsup_dice_weight
        self.unsup_dice_present_only = unsup_dice_present_only
        sigmoid = mode == "sigmoid_threshold"
        self.dice = DiceLoss(include_background=False, to_onehot_y=False, sigmoid=sigmoid, softmax=not sigmoid,
                             batch=dice_batch)

    def _ce(self, logits: torch.Tensor, target_onehot: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean CE over pixels; with ``mask`` (B, H, W) the masked-out pixels count as zero loss."""
        logits = logits.float()
        if self.mode == "argmax":
            ce = F.cross_entropy(logits, target_onehot.argmax(dim=1), reduction="none")
        else:
            ce = F.binary_cross_entropy_with_logits(logits, target_onehot, reduction="none").mean(dim=1)
        return ce.mean() if mask is None else (ce * mask).mean()

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.softmax(logits, dim=1) if self.mode == "argmax" else torch.sigmoid(logits)

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return self._activate(logits.detach())

    def _confidence_mask(self, probs: torch.Tensor) -> torch.Tensor | None:
        if self.confidence_threshold <= 0:
            return None
        return (probs.max(dim=1).values >= self.confidence_threshold).float()

    def supervised(self, logits1: torch.Tensor, logits2: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """logits (B, C, H, W); label (B, 1, H, W) class indices -> ``CE(p1, m) + CE(p2, m)`` [+ Dice terms]."""
        target = one_hot_labels(label, logits1.shape[1])
        loss = self.ce_weight * (self._ce(logits1, target) + self._ce(logits2, target))
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * (self.dice(logits1.float(), target) + self.dice(logits2.float(), target))
        return loss

    def unsupervised(self, logits1: torch.Tensor, logits2: torch.Tensor, teacher1: torch.Tensor | None = None,
                     teacher2: torch.Tensor | None = None) -> torch.Tensor:
        """``CE(p1, y2) + CE(p2, y1)`` with detached hard pseudo-labels (``"ensemble"``: ``CE(p1, y) + CE(p2, y)``
        with ``y`` from the mean probabilities), confident pixels only when a threshold is set; logits (B, C, H, W).

        ``teacher1`` / ``teacher2`` (B, C, H, W): logits the pseudo-labels and confidences are taken from instead of
        ``logits1`` / ``logits2`` (weak-to-strong: the decoders' outputs on the weak view, the loss on the strong
        view's ``logits1`` / ``logits2``)."""
        teacher1 = logits1 if teacher1 is None else teacher1
        teacher2 = logits2 if teacher2 is None else teacher2
        if self.pseudo_label_source == "ensemble":
            probs = (self._probabilities(teacher1) + self._probabilities(teacher2)) / 2
            y = hard_pseudo_labels(probs)  # arg-max of the mean probabilities, whatever the activation
            mask = self._confidence_mask(probs)
            return self._pseudo_term(logits1, y, mask) + self._pseudo_term(logits2, y, mask)
        y1 = hard_pseudo_labels(teacher1, self.mode, self.threshold, self.resolve_conflicts)
        y2 = hard_pseudo_labels(teacher2, self.mode, self.threshold, self.resolve_conflicts)
        mask1, mask2 = (self._confidence_mask(self._probabilities(x)) for x in (teacher1, teacher2))
        return self._pseudo_term(logits1, y2, mask2) + self._pseudo_term(logits2, y1, mask1)

    def _pseudo_term(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.unsup_ce_weight > 0:
            loss = loss + self.unsup_ce_weight * self._ce(logits, target, mask)
        if self.unsup_dice_weight > 0:
            loss = loss + self.unsup_dice_weight * masked_dice_loss(self._activate(logits), target, mask,
                                                                    present_only=self.unsup_dice_present_only)
        return loss

    def forward(
        self,
        logits1: torch.Tensor,
        logits2: torch.Tensor,
        label: torch.Tensor,
        logits1_u: torch.Tensor | None = None,
        logits2_u: torch.Tensor | None = None,
        weight_u: float = 1.0,
        teacher1_u: torch.Tensor | None = None,
        teacher2_u: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Returns ``{"loss", "loss_sup", "loss_unsup"}``; ``loss = loss_sup + weight_u * loss_unsup``; ``teacher*_u``:
        see :meth:`unsupervised`."""
        sup = self.supervised(logits1, logits2, label)
        if logits1_u is None or logits2_u is None or weight_u == 0:
            unsup = sup.new_zeros(())
        else:
            unsup = self.unsupervised(logits1_u, logits2_u, teacher1_u, teacher2_u)
        return {"loss": sup + weight_u * unsup, "loss_sup": sup.detach(), "loss_unsup": unsup.detach()}
