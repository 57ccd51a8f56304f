"""Inferer wrappers: mixed precision around any MONAI inferer; test-time views of the slice."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from monai.inferers import Inferer

from custom.engines.precision import autocast, resolve_precision

__all__ = ["MixedPrecisionInferer", "SliceSymmetryInferer", "TEST_TIME_VIEWS"]

#: the test-time view sets of :class:`SliceSymmetryInferer`: 1, 4 and 8 views
TEST_TIME_VIEWS = ("none", "flips", "dihedral")


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


class SliceSymmetryInferer(Inferer):
    """Test-time augmentation over the in-plane symmetries of a slice: the mean of ``inferer``'s outputs over the
    transformed inputs, each output mapped back onto the input grid.

    The fine-tuning augmentation already draws quarter turns and flips of the slice, so each of these views is one
    the network was trained on; averaging them costs ``len(views)`` forward passes and no training.

    Args:
        inferer: the inferer to repeat, e.g. a :class:`MixedPrecisionInferer` around a ``SliceInferer``.
        views: ``"none"`` (one pass, ``inferer`` unchanged), ``"flips"`` (4: identity, either flip, both flips) or
            ``"dihedral"`` (8: the four quarter turns, each with and without a flip; needs square slices).
        spatial_axes: the two in-plane axes of the input (B, C, H, W[, D]): (2, 3).

    Outputs are averaged as returned, so pass probabilities (``DecoderOutput(output="ensemble")``) for a mean of
    probabilities.
    """

    def __init__(self, inferer: Inferer, views: str = "none", spatial_axes: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        if views not in TEST_TIME_VIEWS:
            raise ValueError(f"views must be one of {TEST_TIME_VIEWS}, got {views!r}")
        if len(spatial_axes) != 2 or spatial_axes[0] == spatial_axes[1]:
            raise ValueError(f"spatial_axes must name the two in-plane axes, got {spatial_axes!r}")
        self.inferer, self.views, self.spatial_axes = inferer, views, tuple(spatial_axes)

    def _transforms(self) -> list[tuple[int, tuple[int, ...]]]:
        """(quarter turns, flipped axes) of each view; a view is ``flip(rot90(x, k), axes)``."""
        a, b = self.spatial_axes
        if self.views == "none":
            return [(0, ())]
        if self.views == "flips":
            return [(0, ()), (0, (a,)), (0, (b,)), (0, (a, b))]
        return [(k, flip) for k in range(4) for flip in ((), (a,))]

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        views = self._transforms()
        if len(views) == 1:
            return self.inferer(inputs, network, *args, **kwargs)
        a, b = self.spatial_axes
        if self.views == "dihedral" and inputs.shape[a] != inputs.shape[b]:
            raise ValueError(f"dihedral test-time views need square slices, got {tuple(inputs.shape)} (use 'flips')")
        total = None
        for k, flip in views:
            x = torch.rot90(inputs, k, dims=(a, b))
            if flip:
                x = torch.flip(x, dims=flip)
            out = self.inferer(x, network, *args, **kwargs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"test-time views need one output tensor per input, got {type(out).__name__} "
                                "(use a network output mode that returns a tensor, e.g. 'ensemble')")
            if flip:
                out = torch.flip(out, dims=flip)
            out = torch.rot90(out, -k, dims=(a, b))
            total = out if total is None else total + out
        return total / len(views)
