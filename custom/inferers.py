"""Inferer wrappers: mixed precision around any MONAI inferer."""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

from custom.engines.precision import autocast, resolve_precision

__all__ = ["MixedPrecisionInferer"]


class MixedPrecisionInferer(Inferer):
    """Runs ``inferer`` under autocast (see :func:`resolve_precision`) and returns float32 outputs.

    Args:
        inferer: e.g. ``SliceInferer(roi_size=(192, 192), spatial_dim=2)`` for a 2D net over volumes.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    """

    def __init__(self, inferer: Inferer, precision: str = "auto") -> None:
        super().__init__()
        self.inferer, self.precision = inferer, precision

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        dtype = resolve_precision(inputs.device, self.precision)
        with autocast(inputs.device, dtype):
            out = self.inferer(inputs, network, *args, **kwargs)
        if isinstance(out, torch.Tensor):
            return out.float()
        return out
