# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""Ignite handler that exports the pre-trained weights in the form the fine-tuning bundle loads."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from custom.distributed import is_rank0, unwrap_network
from custom.atomic import save_torch_atomic

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["PretrainedWeightsSaver", "plain_state_dict", "encoder_state_dict", "ENCODER_PREFIX"]

#: key prefix of the encoder's entries in a pre-training network's state dict
ENCODER_PREFIX = "encoder."


def plain_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """``network``'s state dict as contiguous CPU tensors, without a DDP ``module.`` prefix.

    Contiguous (not channels-last) tensors keep the file loadable anywhere with ``torch.load(weights_only=True)``.
    """
    network = unwrap_network(network)
    return {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}


def encoder_state_dict(state: Mapping[str, torch.Tensor], prefix: str = ENCODER_PREFIX) -> dict[str, torch.Tensor]:
    """The entries of a pre-training network's ``state`` whose keys start with ``prefix``, keys unchanged: the
    content of ``encoder.pt``. Empty when there are none (the callers report that in their own terms)."""
    return {k: v for k, v in state.items() if k.startswith(prefix)}


class PretrainedWeightsSaver:
    """
    Save the pre-training network as two plain state dicts (tensors only, ``torch.load(..., weights_only=True)``):

    - ``model_filename`` (``model.pt``): the whole network (encoder and projection heads);
    - ``encoder_filename`` (``encoder.pt``): only the entries ``encoder.*``, keys unchanged, which is what the
      fine-tuning bundle's ``pretrained_encoder`` (:func:`custom.networks.encoder.load_encoder_weights`) reads.

    Files are written atomically (temporary file + rename), on rank 0 only under ``torch.distributed``, every
    ``save_interval`` epochs and when the run completes.

    Example::

        PretrainedWeightsSaver("models", network, save_interval=1).attach(trainer)

    Args:
        save_dir: output folder.
        network: the pre-training network (e.g. :class:`custom.pretraining.network.ContrastivePretrainNet`),
            possibly DDP-wrapped.
        model_filename: file name of the whole-network state dict.
        encoder_filename: file name of the encoder-only state dict.
        encoder_prefix: key prefix of the encoder's entries.
        save_interval: epochs between saves; 0 saves only at the end of the run.
        name: ``logging`` logger name.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: nn.Module,
        model_filename: str = "model.pt",
        encoder_filename: str = "encoder.pt",
        encoder_prefix: str = ENCODER_PREFIX,
        save_interval: int = 1,
        name: str = "custom.handlers.PretrainedWeightsSaver",
    ) -> None:
        if save_interval < 0:
            raise ValueError(f"save_interval must be >= 0, got {save_interval}.")
        self.save_dir = Path(save_dir)
        self.network = network
        self.model_filename, self.encoder_filename = model_filename, encoder_filename
        self.encoder_prefix = encoder_prefix
        self.save_interval = int(save_interval)
        self.logger = logging.getLogger(name)
        self._saved_at: int | None = None

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the pre-training Ignite engine.
        """
        if self.save_interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        iteration = engine.state.iteration
        if self._saved_at == iteration:  # the last epoch's save already holds the final weights
            return
        self.save()
        self._saved_at = iteration

    def save(self) -> tuple[Path, Path] | None:
        """Write both files now; returns their paths (None on ranks other than 0)."""
        if not is_rank0():
            return None
        state = plain_state_dict(self.network)
        encoder = encoder_state_dict(state, self.encoder_prefix)
        if not encoder:
            raise KeyError(f"the network has no '{self.encoder_prefix}*' entries to export as {self.encoder_filename}.")
        model_path, encoder_path = self.save_dir / self.model_filename, self.save_dir / self.encoder_filename
        save_torch_atomic(state, model_path)
        save_torch_atomic(encoder, encoder_path)
        self.logger.info(
            "saved %s (%d tensors) and %s (%d tensors)", model_path, len(state), encoder_path, len(encoder)
        )
        return model_path, encoder_path
