"""The part both IDEAL trainers share: a ``SupervisedTrainer`` with hardware-aware mixed precision."""

from __future__ import annotations

from typing import Any

import torch
from monai.engines import SupervisedTrainer

from custom.engines.precision import backward_and_step, make_grad_scaler, resolve_precision

__all__ = ["MixedPrecisionTrainer"]


class MixedPrecisionTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` with ``precision`` (see :func:`resolve_precision`) instead of ``amp`` and an optional
    channels-last network; outputs are not decollated. Subclasses write ``_iteration`` and finish it with
    :meth:`backward_and_step`.

    Sets ``autocast_dtype`` (None for fp32), ``channels_last`` and ``grad_scaler`` (fp16 on CUDA only).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Any,
        precision: str = "auto",
        channels_last: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("amp", None)
        kwargs.setdefault("decollate", False)
        device = torch.device(device)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function, **kwargs)
        self.autocast_dtype = resolve_precision(device, precision)
        self.channels_last = channels_last
        self.grad_scaler = make_grad_scaler(device, self.autocast_dtype)

    def backward_and_step(self, loss: torch.Tensor) -> None:
        backward_and_step(self, loss, self.grad_scaler)
