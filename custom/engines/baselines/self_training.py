# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""Self-training baseline (Bai et al., MICCAI 2017, without their CRF post-processing) on IDEAL's dual-decoder network.

Supervised only for the first ``pseudo_label_start`` iterations; then a frozen copy of the network becomes the
teacher and the unlabeled term is ``CE(p1, y) + CE(p2, y)``, ``y = argmax q`` its hard ensemble labels (pixels where
``max q < confidence_threshold`` are left out). Bai et al. alternate network training and re-labelling for a few
rounds; here there is one round at ``pseudo_label_start`` unless ``relabel_interval > 0`` refreshes the snapshot
every ``relabel_interval`` iterations after that.
"""

from __future__ import annotations

from typing import Any

import torch

from custom.distributed import unwrap_network
from custom.engines.baselines.teacher_student import TeacherStudentTrainer
from custom.engines.baselines.losses import hard_label_ce

__all__ = ["SelfTrainingTrainer"]


class SelfTrainingTrainer(TeacherStudentTrainer):
    """:class:`TeacherStudentTrainer` with a snapshot teacher and ``L_u = CE(l1_u, argmax q) + CE(l2_u, argmax q)``
    on confident pixels (:func:`~custom.engines.baselines.losses.hard_label_ce`; per-channel BCE with
    ``pseudo_label_mode: sigmoid_threshold``).

    ``L_u = 0`` and no unlabeled data read for the first ``pseudo_label_start`` iterations; the teacher is a copy of
    the network taken at the start of iteration ``pseudo_label_start + 1`` (and every ``relabel_interval``
    iterations after it when > 0). Whether the snapshot is taken is derived from the iteration counter, not stored:
    a run resumed before ``pseudo_label_start`` takes it when it gets there, one resumed after it continues with the
    restored teacher weights.

    Args:
        pseudo_label_start: supervised-only iterations before the snapshot.
        relabel_interval: refresh the snapshot every this many iterations after ``pseudo_label_start``
            (0: one snapshot only).
        confidence_threshold: pixels whose teacher confidence ``max q`` is below it get no pseudo-label loss
            (0: all pixels).
        args, kwargs: those of :class:`TeacherStudentTrainer`.
    """

    teacher_mode = "snapshot"

    def __init__(
        self,
        *args: Any,
        pseudo_label_start: int = 0,
        relabel_interval: int = 0,
        confidence_threshold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if pseudo_label_start < 0 or relabel_interval < 0:
            raise ValueError(f"pseudo_label_start and relabel_interval must be >= 0, got {pseudo_label_start}, "
                             f"{relabel_interval}")
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        super().__init__(*args, **kwargs)
        self.pseudo_label_start, self.relabel_interval = int(pseudo_label_start), int(relabel_interval)
        self.confidence_threshold = float(confidence_threshold)
        self.binary = getattr(self.loss_function, "mode", "argmax") == "sigmoid_threshold"

    def unlabeled_active(self, step: int) -> bool:
        return step >= self.pseudo_label_start

    def before_iteration(self, step: int) -> None:
        if self._snapshot_due(step):
            self.take_snapshot()

    def unlabeled_loss(self, student_logits: tuple[torch.Tensor, torch.Tensor], teacher_probs: torch.Tensor
                       ) -> torch.Tensor:
        return hard_label_ce(student_logits, teacher_probs, self.confidence_threshold, self.binary)

    def _snapshot_due(self, step: int) -> bool:
        if step < self.pseudo_label_start:
            return False
        since = step - self.pseudo_label_start
        return since == 0 or (self.relabel_interval > 0 and since % self.relabel_interval == 0)

    @torch.no_grad()
    def take_snapshot(self) -> None:
        """Copy the student's parameters and buffers into the teacher."""
        self.teacher.load_state_dict(unwrap_network(self.network).state_dict())
