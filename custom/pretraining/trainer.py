# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""IDEAL pre-training as a MONAI/Ignite workflow: the two-view global + dense local contrastive iteration."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data import DataLoader

from custom import distributed
from custom.pretraining.correspondence import CORRESPONDENCE_MODES, dense_correspondence
from custom.engines.base import MixedPrecisionTrainer
from custom.engines.precision import autocast
from custom.pretraining.global_infonce import GlobalInfoNCELoss
from custom.pretraining.local_infonce import LocalInfoNCELoss
from custom.pretraining.views import TwoViewAugment

__all__ = ["ContrastivePretrainTrainer"]


class ContrastivePretrainTrainer(MixedPrecisionTrainer):
    """
    :class:`MixedPrecisionTrainer` whose iteration is IDEAL's self-supervised pre-training step (Sec. 2.1-2.2, Fig. 2a).

    Per iteration, for a batch of ``B`` unlabeled slices ``x``:

    1. two views ``x_q, x_k = augment(x)`` are made on the device, with their affine matrices ``theta_q, theta_k``
       (:class:`custom.pretraining.views.TwoViewAugment`); the random draws come from a generator seeded with
       ``(seed, rank, iteration)``, so a run, and a run resumed from a checkpoint, sees the same views;
    2. one forward of the network over ``[x_q; x_k]`` gives dense embeddings ``(2B, D, h, w)`` and global
       embeddings ``(2B, D_g)``;
    3. cell correspondences in both directions (:func:`custom.pretraining.correspondence.dense_correspondence`, ``correspondence_mode``);
    4. ``loss = global_weight * L_global(z_q, z_k) + local_weight * L_local(e_q, e_k, matches)``, backward, step.

    Args:
        device: device of the network and of the view augmentation.
        max_epochs: number of epochs (of ``epoch_length`` iterations).
        train_data_loader: unlabeled slices, items ``{"image": (1, H, W)}`` (other keys are ignored).
        network: a :class:`custom.pretraining.network.ContrastivePretrainNet` (or a DDP wrapper of one):
            ``network(x) -> (dense (B, D, h, w), global (B, D_g))`` and, with ``return_features=True``, a third
            output ``(B, C, h, w)`` that ``feature_argmax`` matching uses.
        optimizer: optimizer of the network parameters.
        local_loss_function: the dense local InfoNCE loss (eq. 2); also ``engine.loss_function``.
        global_loss_function: the global InfoNCE loss (eq. 1).
        augment: the two-view augmentation; ``None`` uses ``TwoViewAugment()`` defaults.
        global_weight: weight of the global loss (0 skips it).
        local_weight: weight of the local loss (0 skips it).
        correspondence_mode: ``"geometric"`` (default) or ``"feature_argmax"``, see
            :func:`custom.pretraining.correspondence.dense_correspondence`.
        seed: seed of the view augmentation and of negative sampling (``num_negatives``).
        precision: ``"auto"``, ``"fp32"``, ``"bf16"``, ``"fp16"``; see
            :func:`custom.engines.precision.resolve_precision`. The losses are computed in fp32.
        channels_last: run convolutions in channels-last memory format.
        kwargs: passed to ``SupervisedTrainer`` (``epoch_length``, ``train_handlers``, ...). ``amp`` is replaced by
            ``precision``; outputs are not decollated.

    Cross-rank negatives (DDP) are a property of the losses: construct both with
    ``gather_fn=custom.pretraining.all_gather_with_grad``.

    ``engine.state.output``: ``image`` (the input batch), ``loss`` (the total), ``loss_global``, ``loss_local``
    (detached scalar tensors) and ``valid_fraction`` (float, share of the cells of both views with a valid match;
    1 with ``feature_argmax``).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        local_loss_function: LocalInfoNCELoss,
        global_loss_function: GlobalInfoNCELoss,
        augment: TwoViewAugment | None = None,
        global_weight: float = 1.0,
        local_weight: float = 1.0,
        correspondence_mode: str = "geometric",
        seed: int = 0,
        precision: str = "auto",
        channels_last: bool = True,
        **kwargs: Any,
    ) -> None:
        if correspondence_mode not in CORRESPONDENCE_MODES:
            raise ValueError(f"correspondence_mode must be one of {CORRESPONDENCE_MODES}, got {correspondence_mode!r}.")
        if global_weight < 0 or local_weight < 0 or global_weight + local_weight == 0:
            raise ValueError(f"loss weights must be >= 0 and not both 0, got {global_weight}, {local_weight}.")
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, local_loss_function, precision,
                         channels_last, **kwargs)
        self.global_loss_function = global_loss_function
        self.augment = augment if augment is not None else TwoViewAugment()
        self.global_weight, self.local_weight = float(global_weight), float(local_weight)
        self.correspondence_mode = correspondence_mode
        self.seed = int(seed)
        self.generator = torch.Generator(device=self.state.device)

    def iteration_generator(self, iteration: int) -> torch.Generator:
        """The random generator of ``iteration``, seeded from ``(seed, rank, iteration)`` (independent streams)."""
        state = np.random.SeedSequence([self.seed, distributed.rank(), int(iteration)]).generate_state(1, dtype=np.uint64)[0]
        return self.generator.manual_seed(int(state))

    def _images(self, batchdata: dict[str, torch.Tensor]) -> torch.Tensor:
        images = batchdata[Keys.IMAGE].to(self.state.device, non_blocking=self.non_blocking)
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        if images.ndim != 4 or images.shape[0] < 2:
            raise ValueError(f"expected a batch of at least 2 slices (B, C, H, W), got {tuple(images.shape)}.")
        return images.float()

    def _iteration(self, engine: "ContrastivePretrainTrainer", batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images = self._images(batchdata)
        b = images.shape[0]
        generator = self.iteration_generator(engine.state.iteration)
        with torch.no_grad():
            view_q, view_k, theta_q, theta_k = self.augment(images, generator=generator)
        inputs = torch.cat([view_q, view_k], dim=0)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        feature_matching = self.correspondence_mode == "feature_argmax"
        with autocast(engine.state.device, self.autocast_dtype):
            outputs = engine.network(inputs, return_features=True) if feature_matching else engine.network(inputs)
        dense, global_ = outputs[0].float(), outputs[1].float()
        engine.forward_completed({Keys.IMAGE: images})

        dense_q, dense_k = dense[:b], dense[b:]
        features = outputs[2].detach().float() if feature_matching else None
        coords_k, valid_q, coords_q, valid_k = dense_correspondence(
            self.correspondence_mode,
            theta_q,
            theta_k,
            tuple(dense_q.shape[-2:]),
            tuple(dense_k.shape[-2:]),
            features[:b] if features is not None else None,
            features[b:] if features is not None else None,
        )
        zero = dense.new_zeros(())
        loss_global = engine.global_loss_function(global_[:b], global_[b:]) if self.global_weight > 0 else zero
        loss_local = (
            engine.loss_function(dense_q, dense_k, coords_k, valid_q, coords_q, valid_k, generator=generator)
            if self.local_weight > 0
            else zero
        )
        loss = self.global_weight * loss_global + self.local_weight * loss_local
        valid_fraction = (valid_q.sum() + valid_k.sum()).item() / (valid_q.numel() + valid_k.numel())
        return engine.finish_iteration(
            loss, loss_global=loss_global.detach(), loss_local=loss_local.detach(), valid_fraction=valid_fraction
        )
