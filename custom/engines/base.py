"""What every trainer shares: a ``SupervisedTrainer`` with mixed precision and one iteration tail."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from torch.utils.data.distributed import DistributedSampler

from custom.engines.precision import backward_and_step, make_grad_scaler, resolve_precision

__all__ = ["MixedPrecisionTrainer", "distributed_sampler", "check_not_empty"]


def distributed_sampler(loader: Any) -> DistributedSampler | None:
    """The ``DistributedSampler`` of a data loader, or None (no sampler, or another kind)."""
    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, DistributedSampler) else None


def check_not_empty(loader: Any, name: str) -> None:
    """Raise if a sized loader yields no batch (e.g. fewer samples per process than ``batch_size`` with
    ``drop_last``), which would otherwise end the run silently without a single iteration."""
    try:
        empty = isinstance(loader, Sized) and len(loader) == 0
    except TypeError:  # a DataLoader of an IterableDataset without __len__
        return
    if empty:
        dataset = getattr(loader, "dataset", None)
        sampler = distributed_sampler(loader)
        samples = len(sampler) if sampler is not None else (len(dataset) if isinstance(dataset, Sized) else "?")
        where = f" on each of {sampler.num_replicas} processes" if sampler is not None else ""
        raise ValueError(
            f"{name} yields no batch: {samples} samples{where} < batch_size {getattr(loader, 'batch_size', '?')} "
            "with drop_last; lower the batch size (or use fewer processes)."
        )


class MixedPrecisionTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` with ``precision`` (see :func:`resolve_precision`) instead of ``amp`` and an optional
    channels-last network; outputs are not decollated and ``optim_set_to_none`` defaults to True. Subclasses write
    ``_iteration``: after the forward pass :meth:`forward_completed`, after the loss :meth:`finish_iteration`.

    Sets ``autocast_dtype`` (None for fp32), ``channels_last`` and ``grad_scaler`` (fp16 on CUDA only).

    Distributed data: when ``train_data_loader`` has a ``DistributedSampler``, its epoch is set to the trainer's
    iteration each time a new pass over the loader may start (``EPOCH_STARTED`` and ``DATALOADER_STOP_ITERATION``).
    MONAI sets it to the engine epoch, but an engine epoch here is ``epoch_length`` iterations, not a pass over the
    data: a small labeled set is re-iterated many times within one engine epoch and would get the same
    permutation every time. The iteration is the same on all ranks (so the ranks still split one permutation)
    and differs between passes, also after a resume.

    Every engine epoch starts a new pass over the data (Ignite would otherwise carry a loader's iterator over
    epoch boundaries when ``epoch_length`` is shorter than the loader). The state at an epoch boundary is then
    complete in the checkpoint (weights, optimiser, schedule, iteration, RNGs, augmentation random states), so a run
    resumed from it continues exactly as the uninterrupted run (see :class:`~custom.handlers.ResumeFromCheckpoint`).
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
        # freeing the gradients instead of zero-filling them saves a memset and an in-place add per parameter
        kwargs.setdefault("optim_set_to_none", True)
        device = torch.device(device)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        check_not_empty(train_data_loader, "train_data_loader")
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function, **kwargs)
        sampler = distributed_sampler(train_data_loader)
        if sampler is not None:
            # registered after MONAI's EPOCH_STARTED set_epoch(engine epoch), so this one decides

            def reseed(engine: Engine) -> None:
                sampler.set_epoch(engine.state.iteration)

            self.add_event_handler(Events.EPOCH_STARTED, reseed)
            self.add_event_handler(Events.DATALOADER_STOP_ITERATION, reseed)
        self.add_event_handler(Events.EPOCH_STARTED, self._start_data_pass)
        self.autocast_dtype = resolve_precision(device, precision)
        self.channels_last = channels_last
        self.grad_scaler = make_grad_scaler(device, self.autocast_dtype)

    def _start_data_pass(self, engine: Engine) -> None:
        # Ignite builds a fresh iterator (and its in-epoch offset after a mid-epoch resume) when this is None
        engine._dataloader_iter = None

    def forward_completed(self, output: dict[str, Any]) -> None:
        """Start ``state.output`` with the forward's results (detached tensors) and fire ``FORWARD_COMPLETED``."""
        self.state.output = output
        self.fire_event(IterationEvents.FORWARD_COMPLETED)

    def finish_iteration(self, loss: torch.Tensor, **terms: Any) -> dict[str, Any]:
        """The common tail of every ``_iteration``: add ``loss`` (detached, as ``"loss"``) and ``terms`` to
        ``state.output``, fire ``LOSS_COMPLETED``, then backward and optimiser step (through the gradient scaler
        when there is one, see :func:`~custom.engines.precision.backward_and_step`).

        Returns:
            ``state.output``, what ``_iteration`` returns.
        """
        self.state.output.update({Keys.LOSS: loss.detach(), **terms})
        self.fire_event(IterationEvents.LOSS_COMPLETED)
        backward_and_step(self, loss, self.grad_scaler)
        return self.state.output
