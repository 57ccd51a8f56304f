# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""Global InfoNCE (SimCLR NT-Xent) loss, IDEAL eq. 1, with an optional cross-rank negatives hook."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from custom import distributed

__all__ = ["GatherFn", "all_gather_with_grad", "resolve_rank", "GlobalInfoNCELoss"]

GatherFn = Callable[[torch.Tensor], torch.Tensor]
"""All-gathers a tensor along dim 0 over the ranks, in rank order, keeping the gradient of the local part."""


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """
    A :data:`GatherFn` for ``torch.distributed``: concatenate ``x`` from all ranks along dim 0, in
    rank order. The local block is ``x`` itself (gradient flows to it); the other ranks' blocks are
    constants. Every rank must pass the same shape. Returns ``x`` unchanged when not distributed.

    Args:
        x: ``(N, ...)`` local tensor.

    Returns:
        ``(world_size * N, ...)`` tensor.
    """
    if distributed.world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(distributed.world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[distributed.rank()] = x
    return torch.cat(parts, dim=0)


def resolve_rank(rank: int | None) -> int:
    """``rank`` if given, else the ``torch.distributed`` rank when initialised, else 0."""
    return int(rank) if rank is not None else distributed.rank()


class GlobalInfoNCELoss(_Loss):
    """
    Global contrastive loss of IDEAL (eq. 1), i.e. SimCLR's NT-Xent over the ``2B`` embeddings of two
    views of ``B`` images. For every embedding, the other view of the same image is the positive and
    the remaining ``2B - 2`` embeddings are negatives; the loss is the mean cross-entropy over all
    ``2B`` anchors, so it is symmetric in the two views:

    .. math::
        \\ell_i = -\\log \\frac{\\exp(s(z_i, z_{i^+}) / \\tau)}{\\sum_{j \\ne i} \\exp(s(z_i, z_j) / \\tau)}

    with ``s`` the cosine similarity.

    Cross-rank negatives: with ``gather_fn`` (e.g. :func:`all_gather_with_grad`), the columns of the
    similarity matrix are the embeddings of all ranks (``2 * world_size * B``), while the anchors stay
    the local ``2B`` embeddings; the local block must sit at position ``rank`` of the gathered tensor.
    All ranks must have the same ``B``.

    Args:
        temperature: softmax temperature ``tau``.
        gather_fn: optional callable all-gathering a ``(B, D)`` tensor over DDP ranks along dim 0, in
            rank order, with gradient for the local part. ``None``: negatives from the local batch only.
        rank: position of the local block in the gathered tensors; ``None`` uses the
            ``torch.distributed`` rank (0 when not initialised). Only used with ``gather_fn``.

    Attribute ``last_num_images``: the number of images whose two views formed the columns of the
    similarity matrix in the last ``forward`` (``B``, or ``world_size * B`` with a distributed
    ``gather_fn``); None before the first call.
    """

    def __init__(self, temperature: float = 0.1, gather_fn: GatherFn | None = None, rank: int | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = float(temperature)
        self.gather_fn = gather_fn
        self.rank = rank
        self.last_num_images: int | None = None

    def forward(self, z_q: torch.Tensor, z_k: torch.Tensor) -> torch.Tensor:
        """
        Args:
            z_q: ``(B, D)`` embeddings of the first view.
            z_k: ``(B, D)`` embeddings of the second view (row ``i`` is the same image as ``z_q[i]``).

        Returns:
            scalar loss.
        """
        if z_q.ndim != 2 or z_q.shape != z_k.shape:
            raise ValueError(
                f"expected two (B, D) tensors of equal shape, got {tuple(z_q.shape)} and {tuple(z_k.shape)}."
            )
        b = z_q.shape[0]
        z_q = F.normalize(z_q, dim=1)
        z_k = F.normalize(z_k, dim=1)
        anchors = torch.cat([z_q, z_k], dim=0)  # (2B, D)

        if self.gather_fn is None:
            all_q, all_k, offset = z_q, z_k, 0
        else:
            all_q, all_k = self.gather_fn(z_q), self.gather_fn(z_k)
            offset = resolve_rank(self.rank) * b
        n = all_q.shape[0]  # world_size * B
        self.last_num_images = n
        if n < 2:
            raise ValueError("GlobalInfoNCELoss needs at least two images (a batch size of 1 has no negatives).")
        logits = anchors @ torch.cat([all_q, all_k], dim=0).t() / self.temperature  # (2B, 2n)

        local = torch.arange(b, device=z_q.device) + offset
        self_col = torch.cat([local, local + n])
        pos_col = torch.cat([local + n, local])
        rows = torch.arange(2 * b, device=z_q.device)
        is_self = torch.zeros_like(logits, dtype=torch.bool)
        is_self[rows, self_col] = True
        logits = logits.masked_fill(is_self, float("-inf"))
        return F.cross_entropy(logits, pos_col)
