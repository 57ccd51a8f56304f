# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""An exponential moving average of the trained weights: the network that the fine-tuning bundle validates and
saves when ``weight_average_decay`` > 0."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from custom.distributed import unwrap_network
from custom.errors import InputError

EMAHandler, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EMAHandler")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["WeightAverage"]


class WeightAverage:
    """
    The network to validate and save: an exponential moving average of ``network``'s weights for ``decay`` > 0
    (``average = decay * average + (1 - decay) * weights`` after every optimiser step, Ignite's ``EMAHandler``),
    else ``network`` itself.

    The average only observes the run: the trained network, its losses and its pseudo-labels are the same with or
    without it. Batch-norm statistics are averaged like the weights (``handle_buffers="update"``), so that they
    match the averaged weights. ``1 / (1 - decay)`` is about the number of recent iterations averaged: 0.99 is the
    last ~100. An Ignite handler either way (attaching it with ``decay == 0`` does nothing), so a config lists it
    among the trainer's handlers unconditionally.

    Example::

        average = WeightAverage(network, decay=0.99)
        average.attach(trainer)
        evaluator = SupervisedEvaluator(..., network=average.evaluated_network)

    Args:
        network: the trained network, possibly DDP-wrapped (the average holds a plain copy).
        decay: in [0, 1); 0 turns the average off.

    Raises:
        InputError: ``decay`` outside [0, 1), naming the setting.
    """

    def __init__(self, network: nn.Module, decay: float = 0.0) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise InputError(f"weight_average_decay must be in [0, 1) (0 = no averaging), got {decay!r}")
        self.trained_network = unwrap_network(network)
        self.ema = None
        if decay > 0:
            self.ema = EMAHandler(self.trained_network, momentum=1.0 - float(decay), handle_buffers="update")

    @property
    def averaged_network(self) -> nn.Module | None:
        """The average (in eval mode), None when ``decay == 0``: the entry of the resumable state."""
        return None if self.ema is None else self.ema.ema_model

    @property
    def evaluated_network(self) -> nn.Module:
        """What is validated and saved: the average, or the trained network without its DDP wrapper."""
        return self.trained_network if self.ema is None else self.ema.ema_model

    def attach(self, engine: Engine) -> None:
        """Update the average after every iteration of ``engine`` (nothing when ``decay == 0``)."""
        if self.ema is not None:
            self.ema.attach(engine)
