# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""Ignite handler that keeps the network of the finished run as the bundle's model (``model_selection: last``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from custom.atomic import save_torch_atomic
from custom.distributed import is_rank0
from custom.errors import InputError
from custom.handlers.pretrained_weights import plain_state_dict

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["FinalModelSaver", "MODEL_SELECTIONS", "keeps_last_model"]

#: how the fine-tuning bundle chooses its ``models/model.pt``
MODEL_SELECTIONS = ("validation", "last")


def keeps_last_model(model_selection: str) -> bool:
    """True for ``"last"`` (:class:`FinalModelSaver` writes the model), False for ``"validation"`` (MONAI's
    ``CheckpointSaver`` keeps the best validation Dice); anything else is an error naming the setting."""
    if model_selection not in MODEL_SELECTIONS:
        raise InputError(f"model_selection must be one of {MODEL_SELECTIONS}, got {model_selection!r}")
    return model_selection == "last"


class FinalModelSaver:
    """
    Save ``network``'s plain state dict to ``save_dir/filename`` when the training run completes.

    The alternative to keeping the model with the best validation Dice: with one or two validation patients that
    Dice is too noisy to choose between checkpoints (docs/recipe.md), while the polynomial learning-rate decay ends
    the run at a settled model. Only a completed run writes: an interrupted or failed one leaves the file as it
    was (the resumable state is ``last_checkpoint.pt``'s business). The file is written atomically, on rank 0 only,
    in the format of MONAI's ``CheckpointSaver`` for one object (the state dict itself, no DDP ``module.``
    prefix), so ``CheckpointLoader`` with ``load_dict={"model": network}`` and the bundle's inference read it.

    Example::

        FinalModelSaver("models", network).attach(trainer)

    Args:
        save_dir: output folder.
        network: the network to save, possibly DDP-wrapped.
        filename: file name, ``model.pt`` as the bundle's evaluation and inference expect.
        name: ``logging`` logger name.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: nn.Module,
        filename: str = "model.pt",
        name: str = "custom.handlers.FinalModelSaver",
    ) -> None:
        self.path = Path(save_dir) / filename
        self.network = network
        self.logger = logging.getLogger(name)

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the training engine; the save happens on its ``COMPLETED`` event.
        """
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_rank0():
            return
        save_torch_atomic(plain_state_dict(self.network), self.path)
        self.logger.info("saved the network of iteration %d as %s", engine.state.iteration, self.path)
