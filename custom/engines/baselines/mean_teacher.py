# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""Mean Teacher baseline (Tarvainen & Valpola, NeurIPS 2017) on IDEAL's dual-decoder network.

The teacher is an exponential moving average of the whole network (parameters and floating-point buffers, e.g.
BatchNorm running statistics), ``theta_t <- decay * theta_t + (1 - decay) * theta_s`` after every optimiser step.
Unlabeled term: ``MSE(p1(x + n_s), q) + MSE(p2(x + n_s), q)``, ``q = (q1 + q2) / 2`` the teacher's ensemble
probabilities on ``x + n_t``, with independent Gaussian input noise ``n_s``, ``n_t`` of std ``noise_std``.
"""

from __future__ import annotations

from typing import Any

import torch

from custom.distributed import unwrap_network
from custom.engines.baselines.teacher_student import TeacherStudentTrainer
from custom.engines.baselines.losses import consistency_mse

__all__ = ["MeanTeacherTrainer"]


class MeanTeacherTrainer(TeacherStudentTrainer):
    """:class:`TeacherStudentTrainer` with an EMA teacher and ``L_u = MSE(act(l1_u), q) + MSE(act(l2_u), q)``
    (:func:`~custom.engines.baselines.losses.consistency_mse`), active from the first iteration (``lambda_u`` follows
    the CPS warm-up and ramp-up).

    Args:
        ema_decay: EMA decay of the teacher, in [0, 1].
        args, kwargs: those of :class:`TeacherStudentTrainer`.
    """

    teacher_mode = "ema"

    def __init__(self, *args: Any, ema_decay: float = 0.99, **kwargs: Any) -> None:
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}")
        super().__init__(*args, **kwargs)
        self.ema_decay = float(ema_decay)

    def unlabeled_loss(self, student_logits: tuple[torch.Tensor, torch.Tensor], teacher_probs: torch.Tensor
                       ) -> torch.Tensor:
        return consistency_mse(tuple(self._activate(logits) for logits in student_logits), teacher_probs)

    def after_step(self) -> None:
        self.update_teacher()

    @torch.no_grad()
    def update_teacher(self) -> None:
        """``teacher <- ema_decay * teacher + (1 - ema_decay) * student`` for parameters and floating-point buffers;
        integer buffers (BatchNorm's ``num_batches_tracked``) are copied."""
        student = unwrap_network(self.network)
        d = self.ema_decay
        s_params = dict(student.named_parameters())
        for name, t in self.teacher.named_parameters():
            t.mul_(d).add_(s_params[name].detach(), alpha=1.0 - d)
        s_buffers = dict(student.named_buffers())
        for name, t in self.teacher.named_buffers():
            if t.is_floating_point():
                t.mul_(d).add_(s_buffers[name], alpha=1.0 - d)
            else:
                t.copy_(s_buffers[name])
