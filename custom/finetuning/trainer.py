"""IDEAL fine-tuning as a MONAI/Ignite workflow: the cross pseudo-label training iteration."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import torch
from ignite.engine import Engine, Events
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data import DataLoader

from custom.finetuning.strong_view import StrongView
from custom.engines.base import MixedPrecisionTrainer, check_not_empty, distributed_sampler
from custom.engines.precision import autocast
from custom.finetuning.cross_pseudo import CrossPseudoLabelLoss, one_hot_labels, unsup_weight_schedule

__all__ = ["CrossPseudoLabelTrainer"]


def _certain_logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels (B, 1, H, W) -> logits (B, C, H, W) whose softmax / sigmoid is (nearly) their one-hot: +-20."""
    return (2 * one_hot_labels(labels, num_classes) - 1) * 20.0


class CrossPseudoLabelTrainer(MixedPrecisionTrainer):
    """:class:`MixedPrecisionTrainer` whose iteration takes a labeled batch and an unlabeled batch.

    Per iteration: one forward of the shared encoder and both decoders over ``[labeled; unlabeled]``, then
    ``loss = CE(p1, m) + CE(p2, m) + lambda_u(t) * (CE(p1, y2) + CE(p2, y1))`` (see
    :class:`CrossPseudoLabelLoss`), with ``lambda_u(t) = 0`` for the first ``warmup_iterations`` (supervised warm-up;
    no unlabeled batch is read or forwarded then) and ``unsup_weight * sigmoid_rampup(t - warmup_iterations,
    rampup_iterations)`` after it.

    Args:
        train_data_loader: labeled slices, items ``{"image": (1, H, W), "label": (1, H, W)}``.
        network: a :class:`DualDecoderUNet` with ``output="logits"`` (returns (logits1, logits2)).
        loss_function: a :class:`CrossPseudoLabelLoss`.
        unlabeled_data_loader: unlabeled slices ``{"image": ...}``, cycled independently of the labeled data (a new
            pass every engine epoch); None (or ``unsup_weight=0``) trains supervised only. With a ``DistributedSampler``, each new pass sets
            the sampler's epoch to the current iteration (same on all ranks, new permutation per pass).
        unsup_weight: maximum weight lambda_u of the cross pseudo-label term.
        rampup_iterations: iterations of the sigmoid ramp-up of lambda_u after the warm-up (0: constant).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``; see :func:`resolve_precision`.
        channels_last: run convolutions in channels-last memory format (faster on CPUs and tensor cores).
        warmup_iterations: supervised-only iterations before the pseudo-label term starts.
        strong_view: perturbation of the unlabeled batch for weak-to-strong pseudo-labels; None: pseudo-labels and
            loss on the same forward (the paper).
        paste_labeled: with ``strong_view``, paste its CutMix boxes from the labeled batch (targets: the labels).
        kwargs: passed to ``SupervisedTrainer`` (``epoch_length``, ``train_handlers``, ...). ``amp`` is replaced by
            ``precision``; outputs are not decollated.

    ``engine.state.output``: ``image``, ``label``, ``pred`` (decoder-1 logits of the labeled batch), ``loss``,
    ``loss_sup``, ``loss_unsup``, ``lambda_u``, ``lr``.
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
        unsup_weight: float = 1.0,
        rampup_iterations: int = 0,
        precision: str = "auto",
        channels_last: bool = True,
        warmup_iterations: int = 0,
        strong_view: StrongView | None = None,
        paste_labeled: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function, precision,
                         channels_last, **kwargs)
        if warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be >= 0, got {warmup_iterations}")
        self.warmup_iterations = int(warmup_iterations)
        self.strong_view, self.paste_labeled = strong_view, bool(paste_labeled)
        if unlabeled_data_loader is not None and unsup_weight != 0:
            check_not_empty(unlabeled_data_loader, "unlabeled_data_loader")
        self.unlabeled_data_loader = unlabeled_data_loader
        self.unsup_weight, self.rampup_iterations = float(unsup_weight), int(rampup_iterations)
        self._unlabeled_iter: Iterator | None = None
        self.add_event_handler(Events.EPOCH_STARTED, self._start_unlabeled_pass)

    def _start_unlabeled_pass(self, engine: Engine) -> None:
        """Every engine epoch starts a new pass over the unlabeled data too (exact resume at epoch boundaries)."""
        self._unlabeled_iter = None

    def _next_unlabeled(self) -> dict | None:
        if self.unlabeled_data_loader is None or self.unsup_weight == 0:
            return None
        if self._unlabeled_iter is None:
            self._unlabeled_iter = self._new_unlabeled_pass()
        try:
            return next(self._unlabeled_iter)
        except StopIteration:
            self._unlabeled_iter = self._new_unlabeled_pass()
            return next(self._unlabeled_iter)

    def _new_unlabeled_pass(self) -> Iterator:
        sampler = distributed_sampler(self.unlabeled_data_loader)
        if sampler is not None:
            sampler.set_epoch(self.state.iteration)  # same on all ranks, new for every pass
        return iter(self.unlabeled_data_loader)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.state.device, non_blocking=self.non_blocking)
        if hasattr(x, "as_tensor"):
            x = x.as_tensor()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _iteration(self, engine: "CrossPseudoLabelTrainer", batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images = self._to_device(batchdata[Keys.IMAGE])
        labels = batchdata[Keys.LABEL].to(engine.state.device, non_blocking=self.non_blocking)
        weight_u = unsup_weight_schedule(engine.state.iteration - 1, self.unsup_weight, self.warmup_iterations,
                                         self.rampup_iterations)
        unlabeled = self._next_unlabeled() if weight_u > 0 else None
        n_labeled = images.shape[0]
        teacher1 = teacher2 = None
        engine.network.train()
        if unlabeled is None:
            inputs = images
        else:
            unlabeled_images = self._to_device(unlabeled[Keys.IMAGE])
            if self.strong_view is not None:
                with torch.no_grad(), autocast(engine.state.device, self.autocast_dtype):
                    weak1, weak2 = engine.network(unlabeled_images)
                if self.paste_labeled:
                    unlabeled_images, boxes = self.strong_view(unlabeled_images, paste_from=images)
                    truth = _certain_logits(labels, weak1.shape[1])
                else:
                    unlabeled_images, boxes = self.strong_view(unlabeled_images)
                    truth = None
                teacher1, teacher2 = boxes.mix(weak1.float(), truth), boxes.mix(weak2.float(), truth)
            inputs = torch.cat([images, unlabeled_images], dim=0)

        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with autocast(engine.state.device, self.autocast_dtype):
            logits1, logits2 = engine.network(inputs)
        engine.forward_completed({Keys.IMAGE: images, Keys.LABEL: labels, Keys.PRED: logits1[:n_labeled].detach()})
        terms = engine.loss_function(
            logits1[:n_labeled],
            logits2[:n_labeled],
            labels,
            logits1[n_labeled:] if unlabeled is not None else None,
            logits2[n_labeled:] if unlabeled is not None else None,
            weight_u=weight_u,
            teacher1_u=teacher1,
            teacher2_u=teacher2,
        )
        return engine.finish_iteration(
            terms["loss"],
            loss_sup=terms["loss_sup"],
            loss_unsup=terms["loss_unsup"],
            lambda_u=weight_u,
            lr=engine.optimizer.param_groups[0]["lr"],
        )
