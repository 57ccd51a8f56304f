"""Two classic semi-supervised baselines on IDEAL's dual-decoder network: Mean Teacher and self-training.

Both keep everything of :class:`CrossPseudoLabelTrainer` except the unlabeled term, so that a comparison with IDEAL
changes one thing only: the same :class:`DualDecoderUNet`, the same supervised ``CE(p1, m) + CE(p2, m)`` on the
labeled batch, the same data, ramp-up, optimiser and schedule, evaluated as the ensemble of both decoders.

- ``teacher="ema"``, **Mean Teacher** (Tarvainen & Valpola, NeurIPS 2017): the teacher is an exponential moving
  average of the whole network (parameters and floating-point buffers, e.g. BatchNorm running statistics),
  ``theta_t <- decay * theta_t + (1 - decay) * theta_s`` after every optimiser step. Unlabeled term:
  ``MSE(p1(x + n_s), q) + MSE(p2(x + n_s), q)``, ``q = (q1 + q2) / 2`` the teacher's ensemble probabilities on
  ``x + n_t``, with independent Gaussian input noise ``n_s``, ``n_t`` of std ``noise_std``.
- ``teacher="snapshot"``, **self-training** (Bai et al., MICCAI 2017, without their CRF post-processing):
  supervised only for the first ``pseudo_label_start`` iterations; then a frozen copy of the network becomes the
  teacher and the unlabeled term is ``CE(p1, y) + CE(p2, y)``, ``y = argmax q`` its hard ensemble labels (pixels
  where ``max q < confidence_threshold`` are left out). Bai et al. alternate network training and re-labelling
  for a few rounds; here there is one round at ``pseudo_label_start`` unless ``relabel_interval > 0`` refreshes
  the snapshot every ``relabel_interval`` iterations after that.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data import DataLoader

from custom.engines.base import unwrap_network
from custom.engines.cross_pseudo_trainer import CrossPseudoLabelTrainer
from custom.engines.precision import autocast
from custom.losses.cross_pseudo import CrossPseudoLabelLoss, unsup_weight_schedule
from custom.losses.teacher_student import consistency_mse, hard_label_ce

__all__ = ["TEACHER_MODES", "TeacherStudentTrainer"]

#: ``"ema"``: Mean Teacher; ``"snapshot"``: self-training with a frozen copy of the network
TEACHER_MODES = ("ema", "snapshot")


class TeacherStudentTrainer(CrossPseudoLabelTrainer):
    """:class:`CrossPseudoLabelTrainer` whose unlabeled term comes from a teacher network instead of the other decoder.

    Per iteration, labeled ``(x_l, m)`` and unlabeled ``x_u``: one student forward over ``[x_l; x_u + n_s]``
    giving logits ``(l1, l2)``, one teacher forward (eval mode, no grad, same autocast) over ``x_u + n_t`` giving
    ``q = (act(t1) + act(t2)) / 2``, then ``loss = CE(l1, m) + CE(l2, m) + lambda_u(t) * L_u`` with

    - ``"ema"``: ``L_u = MSE(act(l1_u), q) + MSE(act(l2_u), q)`` (:func:`~custom.losses.teacher_student.consistency_mse`); the teacher is updated
      as ``decay * teacher + (1 - decay) * student`` after every optimiser step;
    - ``"snapshot"``: ``L_u = CE(l1_u, argmax q) + CE(l2_u, argmax q)`` on confident pixels (:func:`~custom.losses.teacher_student.hard_label_ce`);
      ``L_u = 0`` and no unlabeled data read for the first ``pseudo_label_start`` iterations; the teacher is a copy
      of the network taken at the start of iteration ``pseudo_label_start + 1`` (and every ``relabel_interval``
      iterations after it when > 0).

    ``lambda_u(t) = unsup_weight_schedule(t, unsup_weight, warmup_iterations, rampup_iterations)`` (``t`` = completed iterations, as in CPS),
    and 0 before ``pseudo_label_start`` in ``"snapshot"`` mode. ``act`` is the network's activation (softmax, or
    sigmoid with ``pseudo_label_mode: sigmoid_threshold``, where the CE becomes per-channel BCE).

    Resuming: :attr:`teacher` is an ``nn.Module``; put it in the checkpoint's ``save_dict`` (the bundle overlays add
    ``train#state#teacher``). Whether the snapshot is taken is derived from the iteration counter, not stored: a
    run resumed before ``pseudo_label_start`` takes it when it gets there, one resumed after it continues with the
    restored teacher weights.

    Args:
        train_data_loader: labeled slices, items ``{"image": (1, H, W), "label": (1, H, W)}``.
        network: a :class:`DualDecoderUNet` with ``output="logits"`` (returns (logits1, logits2)).
        loss_function: a :class:`CrossPseudoLabelLoss`; only its supervised term (and its ``mode``) is used.
        unlabeled_data_loader: unlabeled slices ``{"image": (1, H, W)}``, cycled independently of the labeled data;
            None (or ``unsup_weight=0``) trains supervised only.
        teacher: ``"ema"`` (Mean Teacher) or ``"snapshot"`` (self-training), see :data:`TEACHER_MODES`.
        ema_decay: EMA decay of the ``"ema"`` teacher, in [0, 1].
        noise_std: std of the Gaussian noise added to the unlabeled images, drawn independently for student and
            teacher (0: none). The labeled images get none, so the supervised term is the same as in CPS.
        pseudo_label_start: ``"snapshot"``: supervised-only iterations before the snapshot (ignored by ``"ema"``).
        relabel_interval: ``"snapshot"``: refresh the snapshot every this many iterations after
            ``pseudo_label_start`` (0: one snapshot only).
        confidence_threshold: ``"snapshot"``: pixels whose teacher confidence ``max q`` is below it get no
            pseudo-label loss (0: all pixels).
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

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: CrossPseudoLabelLoss,
        unlabeled_data_loader: Iterable | DataLoader | None = None,
        teacher: str = "ema",
        ema_decay: float = 0.99,
        noise_std: float = 0.1,
        pseudo_label_start: int = 0,
        relabel_interval: int = 0,
        confidence_threshold: float = 0.0,
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
        if teacher not in TEACHER_MODES:
            raise ValueError(f"teacher must be one of {TEACHER_MODES}, got {teacher!r}")
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if pseudo_label_start < 0 or relabel_interval < 0:
            raise ValueError(f"pseudo_label_start and relabel_interval must be >= 0, got {pseudo_label_start}, "
                             f"{relabel_interval}")
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function,
                         unlabeled_data_loader, unsup_weight, rampup_iterations, precision, channels_last, **kwargs)
        self.teacher_mode = teacher
        self.ema_decay, self.noise_std = float(ema_decay), float(noise_std)
        self.pseudo_label_start, self.relabel_interval = int(pseudo_label_start), int(relabel_interval)
        self.confidence_threshold = float(confidence_threshold)
        self.binary = getattr(loss_function, "mode", "argmax") == "sigmoid_threshold"
        #: the teacher network: a frozen copy of ``network`` (eval mode, no gradients), part of the resumable state
        self.teacher: torch.nn.Module = copy.deepcopy(unwrap_network(self.network)).requires_grad_(False).eval()

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        activate = getattr(self.teacher, "activate", None)
        return activate(logits.float()) if activate is not None else torch.softmax(logits.float(), dim=1)

    def _unsup_active(self, step: int) -> bool:
        return self.teacher_mode == "ema" or step >= self.pseudo_label_start

    def _snapshot_due(self, step: int) -> bool:
        if self.teacher_mode != "snapshot" or step < self.pseudo_label_start:
            return False
        since = step - self.pseudo_label_start
        return since == 0 or (self.relabel_interval > 0 and since % self.relabel_interval == 0)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.noise_std * torch.randn_like(x) if self.noise_std > 0 else x

    @torch.no_grad()
    def take_snapshot(self) -> None:
        """Copy the student's parameters and buffers into the teacher."""
        self.teacher.load_state_dict(unwrap_network(self.network).state_dict())

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

    def _iteration(self, engine: "TeacherStudentTrainer", batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        step = engine.state.iteration - 1  # completed iterations
        if self._snapshot_due(step):
            self.take_snapshot()
        active = self._unsup_active(step)
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
        elif self.teacher_mode == "ema":
            unsup = consistency_mse((self._activate(logits1[n_labeled:]), self._activate(logits2[n_labeled:])),
                                    teacher_probs)
        else:
            unsup = hard_label_ce((logits1[n_labeled:], logits2[n_labeled:]), teacher_probs,
                                  self.confidence_threshold, self.binary)
        output = engine.finish_iteration(
            sup + weight_u * unsup,
            loss_sup=sup.detach(),
            loss_unsup=unsup.detach(),
            lambda_u=weight_u,
            lr=engine.optimizer.param_groups[0]["lr"],
        )
        if self.teacher_mode == "ema":
            self.update_teacher()
        return output
