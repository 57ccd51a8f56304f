# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""The iteration both teacher-student baselines share; they differ in the teacher and in the unlabeled term only.

Both keep everything of :class:`CrossPseudoLabelTrainer` except the unlabeled term, so that a comparison with IDEAL
changes one thing only: the same :class:`DualDecoderUNet`, the same supervised ``CE(p1, m) + CE(p2, m)`` on the
labeled batch, the same data, ramp-up, optimiser and schedule, evaluated as the ensemble of both decoders.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data import DataLoader

from custom.distributed import unwrap_network
from custom.finetuning.trainer import CrossPseudoLabelTrainer
from custom.engines.precision import autocast
from custom.finetuning.cross_pseudo import CrossPseudoLabelLoss, unsup_weight_schedule

__all__ = ["TeacherStudentTrainer"]


class TeacherStudentTrainer(CrossPseudoLabelTrainer):
    """:class:`CrossPseudoLabelTrainer` whose unlabeled term comes from a teacher network instead of the other decoder.

    Per iteration, labeled ``(x_l, m)`` and unlabeled ``x_u``: one student forward over ``[x_l; x_u + n_s]``
    giving logits ``(l1, l2)``, one teacher forward (eval mode, no grad, same autocast) over ``x_u + n_t`` giving
    ``q = (act(t1) + act(t2)) / 2``, then ``loss = CE(l1, m) + CE(l2, m) + lambda_u(t) * L_u`` with
    ``L_u = unlabeled_loss((l1_u, l2_u), q)``. ``n_s``, ``n_t`` are independent Gaussian noise of std ``noise_std``.

    ``lambda_u(t) = unsup_weight_schedule(t, unsup_weight, warmup_iterations, rampup_iterations)`` (``t`` = completed
    iterations, as in CPS), and 0 while :meth:`unlabeled_active` is False (no unlabeled data read then). ``act`` is
    the network's activation (softmax, or sigmoid with ``pseudo_label_mode: sigmoid_threshold``).

    A baseline sets :attr:`teacher_mode` and :meth:`unlabeled_loss`, and may override :meth:`unlabeled_active`,
    :meth:`before_iteration` (called first in every iteration) and :meth:`after_step` (after the optimiser step).

    Resuming: :attr:`teacher` is an ``nn.Module``; put it in the checkpoint's ``save_dict`` (the bundle overlays add
    ``train#checkpoint#state#teacher``).

    Args:
        train_data_loader: labeled slices, items ``{"image": (1, H, W), "label": (1, H, W)}``.
        network: a :class:`DualDecoderUNet` with ``output="logits"`` (returns (logits1, logits2)).
        loss_function: a :class:`CrossPseudoLabelLoss`; only its supervised term (and its ``mode``) is used.
        unlabeled_data_loader: unlabeled slices ``{"image": (1, H, W)}``, cycled independently of the labeled data;
            None (or ``unsup_weight=0``) trains supervised only.
        noise_std: std of the Gaussian noise added to the unlabeled images, drawn independently for student and
            teacher (0: none). The labeled images get none, so the supervised term is the same as in CPS.
        unsup_weight: maximum weight lambda_u of the unlabeled term.
        rampup_iterations: iterations of the sigmoid ramp-up of lambda_u (0: constant).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``; see :func:`resolve_precision`.
        channels_last: run convolutions in channels-last memory format.
        strong_view, paste_labeled: must be None / False (keys the fine-tuning config passes to its trainer;
            weak-to-strong pseudo-labels are an option of :class:`CrossPseudoLabelTrainer`).
        kwargs: passed to ``SupervisedTrainer`` (``epoch_length``, ``train_handlers``, ...).

    ``engine.state.output``: ``image``, ``label``, ``pred`` (decoder-1 logits of the labeled batch), ``loss``,
    ``loss_sup``, ``loss_unsup`` (``L_u``), ``lambda_u``, ``lr``.
    """

    #: what the teacher is, set by each baseline: ``"ema"`` (Mean Teacher), ``"snapshot"`` (self-training)
    teacher_mode: str | None = None

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: CrossPseudoLabelLoss,
        unlabeled_data_loader: Iterable | DataLoader | None = None,
        noise_std: float = 0.1,
        unsup_weight: float = 1.0,
        rampup_iterations: int = 0,
        precision: str = "auto",
        channels_last: bool = True,
        strong_view: Any = None,
        paste_labeled: bool = False,
        **kwargs: Any,
    ) -> None:
        if strong_view is not None or paste_labeled:  # the fine-tuning config passes the key to whichever trainer it builds
            raise ValueError("weak_to_strong is an option of the cross pseudo-label trainer, not of the baselines")
        if self.teacher_mode is None:
            raise ValueError("teacher must be chosen by a baseline: MeanTeacherTrainer or SelfTrainingTrainer")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function,
                         unlabeled_data_loader, unsup_weight, rampup_iterations, precision, channels_last, **kwargs)
        self.noise_std = float(noise_std)
        #: the teacher network: a frozen copy of ``network`` (eval mode, no gradients), part of the resumable state
        self.teacher: torch.nn.Module = copy.deepcopy(unwrap_network(self.network)).requires_grad_(False).eval()

    def unlabeled_loss(self, student_logits: tuple[torch.Tensor, torch.Tensor], teacher_probs: torch.Tensor
                       ) -> torch.Tensor:
        """``L_u`` from the student logits of the unlabeled batch ``(l1_u, l2_u)``, each (B_u, C, H, W), and the
        teacher's ensemble probabilities ``q`` (B_u, C, H, W)."""
        raise NotImplementedError

    def unlabeled_active(self, step: int) -> bool:
        """Whether iteration ``step`` (completed iterations) has an unlabeled term."""
        return True

    def before_iteration(self, step: int) -> None:
        """Called at the start of iteration ``step`` (completed iterations), before any data is read."""

    def after_step(self) -> None:
        """Called after the optimiser step of every iteration."""

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        activate = getattr(self.teacher, "activate", None)
        return activate(logits.float()) if activate is not None else torch.softmax(logits.float(), dim=1)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.noise_std * torch.randn_like(x) if self.noise_std > 0 else x

    def _iteration(self, engine: "TeacherStudentTrainer", batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        step = engine.state.iteration - 1  # completed iterations
        self.before_iteration(step)
        active = self.unlabeled_active(step)
        images = self._to_device(batchdata[Keys.IMAGE])
        labels = batchdata[Keys.LABEL].to(engine.state.device, non_blocking=self.non_blocking)
        unlabeled = self._next_unlabeled() if active else None
        n_labeled = images.shape[0]
        weight_u = (unsup_weight_schedule(step, self.unsup_weight, self.warmup_iterations, self.rampup_iterations)
                    if active else 0.0)
        inputs, teacher_inputs = images, None
        if unlabeled is not None:
            u = self._to_device(unlabeled[Keys.IMAGE])
            inputs, teacher_inputs = torch.cat([images, self._noisy(u)], dim=0), self._noisy(u)

        engine.network.train()
        self.teacher.eval()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with autocast(engine.state.device, self.autocast_dtype):
            logits1, logits2 = engine.network(inputs)
            teacher_probs = None
            if teacher_inputs is not None:
                with torch.no_grad():
                    t1, t2 = self.teacher(teacher_inputs)
                    teacher_probs = (self._activate(t1) + self._activate(t2)) / 2
        engine.forward_completed({Keys.IMAGE: images, Keys.LABEL: labels, Keys.PRED: logits1[:n_labeled].detach()})
        sup = engine.loss_function.supervised(logits1[:n_labeled], logits2[:n_labeled], labels)
        if teacher_probs is None or weight_u == 0:
            unsup = sup.new_zeros(())
        else:
            unsup = self.unlabeled_loss((logits1[n_labeled:], logits2[n_labeled:]), teacher_probs)
        output = engine.finish_iteration(
            sup + weight_u * unsup,
            loss_sup=sup.detach(),
            loss_unsup=unsup.detach(),
            lambda_u=weight_u,
            lr=engine.optimizer.param_groups[0]["lr"],
        )
        self.after_step()
        return output
