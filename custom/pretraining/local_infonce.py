# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""
Dense local InfoNCE loss of IDEAL (eq. 2), computed exactly in chunks of query cells.

For every valid cell ``i`` of the query embedding map of image ``b``, the positive is the key
embedding read at the corresponding location (:func:`custom.pretraining.correspondence.sample_at`), and the
negatives are the embeddings of all cells of the key maps of the other images ``b' != b``:

.. math::
    \\ell_i = -\\log \\frac{\\exp(s_i^+ / \\tau)}{\\exp(s_i^+ / \\tau) + \\sum_{n} \\exp(s_{i,n}^- / \\tau)}

with ``s`` the cosine similarity. The naive computation materialises an ``N_q x N_neg`` similarity
matrix (``B h w x B hk wk``), quadratic in the number of cells, and autograd keeps it (and the softmax of
it) for the backward pass. :class:`LocalInfoNCELoss` instead computes the loss with its own autograd
function: the forward pass walks ``chunk_size`` query cells at a time, masks same-image columns with
``-inf`` and keeps only each row's ``logsumexp``; the backward pass recomputes one chunk's similarities at a
time and accumulates the gradients into preallocated buffers. Peak memory is ``O(chunk_size * N_neg)``
plus the embeddings, linear in the number of cells, and the values and gradients equal the naive ones.
:func:`local_infonce_naive` is the full-matrix reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from custom.pretraining.correspondence import sample_at
from custom.pretraining.global_infonce import GatherFn, resolve_rank

__all__ = ["LocalInfoNCELoss"]


@dataclass
class _Direction:
    """The flattened problem of one direction (anchors of one view against the other view)."""

    anchors: torch.Tensor  # (M, D) normalised embeddings of the valid anchor cells
    positives: torch.Tensor  # (M, D) normalised target embeddings at the matched locations
    counts: list[int]  # valid anchor cells per local image (anchors are ordered by image)
    row_image: torch.Tensor  # (M,) global image index of every anchor
    bank: torch.Tensor  # (N_bank, D) normalised embeddings of all target cells of all (gathered) images
    bank_image: torch.Tensor  # (N_bank,) global image index of every bank column
    negative_index: torch.Tensor | None  # (B, K) bank columns used as negatives per local image, or None: all
    num_images: int = 0  # images in the bank: B, or world_size * B with gather_fn


def _sample_negative_index(
    num_local: int,
    offset: int,
    cells_per_image: int,
    num_bank: int,
    num_negatives: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """
    For every local image, ``num_negatives`` distinct bank columns of the other images, uniformly without
    replacement: ``(num_local, num_negatives)`` indices.
    """
    num_other = num_bank - cells_per_image
    draw_device = generator.device if generator is not None else torch.device("cpu")
    scores = torch.rand(num_local, num_other, generator=generator, device=draw_device)
    index = scores.topk(num_negatives, dim=1).indices.to(device)
    # skip the image's own block of columns
    own_start = (torch.arange(num_local, device=device) + offset)[:, None] * cells_per_image
    return index + cells_per_image * (index >= own_start)


def _prepare_direction(
    anchor: torch.Tensor,
    target: torch.Tensor,
    coords: torch.Tensor,
    valid: torch.Tensor,
    num_negatives: int | None,
    generator: torch.Generator | None,
    gather_fn: GatherFn | None,
    rank: int | None,
) -> _Direction:
    b, d = anchor.shape[:2]
    if target.shape[:2] != (b, d):
        raise ValueError(
            f"anchor and target maps must share (B, D), got {tuple(anchor.shape)} and {tuple(target.shape)}."
        )
    if coords.shape != (b, *anchor.shape[2:], 2) or valid.shape != (b, *anchor.shape[2:]):
        raise ValueError(
            f"expected coords (B, h, w, 2) and valid (B, h, w) for an anchor map {tuple(anchor.shape)}, "
            f"got {tuple(coords.shape)} and {tuple(valid.shape)}."
        )
    valid = valid.to(torch.bool).reshape(b, -1)
    anchors = F.normalize(anchor, dim=1).flatten(2).transpose(1, 2)[valid]  # (M, D)
    positives = F.normalize(sample_at(target, coords), dim=1).flatten(2).transpose(1, 2)[valid]
    counts = valid.sum(dim=1).tolist()

    bank = F.normalize(target, dim=1).flatten(2).transpose(1, 2)  # (B, hk*wk, D)
    cells = bank.shape[1]
    offset = 0
    if gather_fn is not None:
        bank = gather_fn(bank.contiguous())
        offset = resolve_rank(rank) * b
    num_images = bank.shape[0]
    if num_images < 2:
        raise ValueError("the local InfoNCE loss needs at least two images (a batch size of 1 has no negatives).")
    bank = bank.reshape(-1, d)
    bank_image = torch.arange(num_images, device=bank.device).repeat_interleave(cells)
    row_image = (torch.arange(b, device=bank.device) + offset).repeat_interleave(
        torch.as_tensor(counts, device=bank.device, dtype=torch.long)
    )

    negative_index = None
    if num_negatives is not None and num_negatives < bank.shape[0] - cells:
        negative_index = _sample_negative_index(
            b, offset, cells, bank.shape[0], num_negatives, generator, bank.device
        )
    return _Direction(anchors, positives, counts, row_image, bank, bank_image, negative_index, num_images)


def _logit_blocks(
    anchors: torch.Tensor,
    negatives: torch.Tensor,
    row_image: torch.Tensor | None,
    column_image: torch.Tensor | None,
    scale: float,
    chunk_size: int,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """
    The ``anchors @ negatives.T * scale`` logits ``chunk_size`` rows at a time, as ``(rows, (c, n) block)``, with the
    columns of each row's own image at ``-inf`` when image ids are given. Each block is a new tensor (safe to modify).
    """
    masked = row_image is not None and column_image is not None
    for start in range(0, anchors.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        logits = torch.mm(anchors[rows], negatives.t()).mul_(scale)
        if masked:
            logits.masked_fill_(row_image[rows, None] == column_image[None, :], float("-inf"))
        yield rows, logits


def _promote(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in float32, or float64 when any of them is float64 (half types are promoted)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


class _ChunkedInfoNCE(torch.autograd.Function):
    """
    Sum over the ``M`` anchor rows of ``-log softmax`` of the positive logit among ``[positive, negatives]``,
    with an explicit backward pass (the pattern of memory-efficient attention): the forward pass keeps only
    the ``M`` row log-normalisers, and the backward pass recomputes one ``(chunk_size, N)`` block of
    similarities at a time and accumulates the gradients of all three inputs into preallocated buffers.
    Peak extra memory is a few ``chunk_size x N`` blocks, independent of the number of chunks.

    Inputs: ``anchors`` and ``positives`` ``(M, D)``, ``negatives`` ``(N, D)``, optional image ids ``row_image``
    ``(M,)`` and ``column_image`` ``(N,)`` (columns of a row's own image are excluded), ``temperature``,
    ``chunk_size``. Computed in float32 (float64 inputs stay float64) with autocast disabled; gradients are
    cast back to the input dtypes.
    """

    @staticmethod
    def forward(ctx, anchors, positives, negatives, row_image, column_image, temperature, chunk_size):
        scale = 1.0 / temperature
        with torch.autocast(anchors.device.type, enabled=False):
            a, p, n = _promote(anchors, positives, negatives)
            pos = (a * p).sum(dim=1).mul_(scale)  # (M,)
            lse = torch.empty_like(pos)  # log(exp(pos) + sum exp(neg)) per row
            for rows, logits in _logit_blocks(a, n, row_image, column_image, scale, chunk_size):
                lse[rows] = torch.logaddexp(pos[rows], torch.logsumexp(logits, dim=1))
        ctx.save_for_backward(anchors, positives, negatives, row_image, column_image, pos, lse)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return (lse - pos).sum().to(anchors.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        anchors, positives, negatives, row_image, column_image, pos, lse = ctx.saved_tensors
        need_a, need_p, need_n = ctx.needs_input_grad[:3]
        grad_a = grad_p = grad_n = None
        with torch.autocast(anchors.device.type, enabled=False):
            a, p, n = _promote(anchors, positives, negatives)
            g = grad_output.to(a.dtype) * ctx.scale
            pos_weight = torch.exp(pos - lse).sub_(1.0)  # d loss / d pos, per row
            if need_p:
                grad_p = (a * pos_weight[:, None] * g).to(positives.dtype)
            if need_a or need_n:
                grad_a_f = torch.empty_like(a) if need_a else None
                grad_n_f = torch.zeros_like(n) if need_n else None
                for rows, weights in _logit_blocks(a, n, row_image, column_image, ctx.scale, ctx.chunk_size):
                    # softmax weights of the negatives: d loss / d logit (masked cells give exp(-inf) = 0)
                    weights.sub_(lse[rows, None]).exp_()
                    if grad_a_f is not None:
                        grad_a_f[rows] = torch.addmm(p[rows] * pos_weight[rows, None], weights, n)
                    if grad_n_f is not None:
                        grad_n_f.addmm_(weights.t(), a[rows])
                if grad_a_f is not None:
                    grad_a = grad_a_f.mul_(g).to(anchors.dtype)
                if grad_n_f is not None:
                    grad_n = grad_n_f.mul_(g).to(negatives.dtype)
        return grad_a, grad_p, grad_n, None, None, None, None


def _zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero connected to the inputs' graphs (so ``backward`` works and gives zero gradients)."""
    return sum(t.sum() for t in tensors) * 0.0


def _directions(
    emb_q: torch.Tensor,
    emb_k: torch.Tensor,
    coords_k: torch.Tensor,
    valid_q: torch.Tensor,
    coords_q: torch.Tensor | None,
    valid_k: torch.Tensor | None,
    symmetric: bool,
    num_negatives: int | None,
    generator: torch.Generator | None,
    gather_fn: GatherFn | None,
    rank: int | None,
) -> list[_Direction]:
    if emb_q.ndim != 4 or emb_k.ndim != 4:
        raise ValueError(f"expected (B, D, h, w) embeddings, got {tuple(emb_q.shape)} and {tuple(emb_k.shape)}.")
    if num_negatives is not None and num_negatives < 1:
        raise ValueError(f"num_negatives must be positive or None, got {num_negatives}.")
    if gather_fn is None and emb_q.shape[0] < 2:
        raise ValueError("the local InfoNCE loss needs at least two images (a batch size of 1 has no negatives).")
    directions = [_prepare_direction(emb_q, emb_k, coords_k, valid_q, num_negatives, generator, gather_fn, rank)]
    if symmetric:
        if coords_q is None or valid_k is None:
            raise ValueError(
                "symmetric=True needs the key->query correspondence too: pass coords_q (B, hk, wk, 2) and "
                "valid_k (B, hk, wk), e.g. match_grid(theta_k, theta_q, (hk, wk))."
            )
        directions.append(
            _prepare_direction(emb_k, emb_q, coords_q, valid_k, num_negatives, generator, gather_fn, rank)
        )
    return directions


def _average(direction_losses: list[torch.Tensor], emb_q: torch.Tensor, emb_k: torch.Tensor) -> torch.Tensor:
    if not direction_losses:
        return _zero_loss(emb_q, emb_k)
    return torch.stack(direction_losses).mean()


def local_infonce_naive(
    emb_q: torch.Tensor,
    emb_k: torch.Tensor,
    coords_k: torch.Tensor,
    valid_q: torch.Tensor,
    coords_q: torch.Tensor | None = None,
    valid_k: torch.Tensor | None = None,
    temperature: float = 0.1,
    num_negatives: int | None = None,
    symmetric: bool = True,
    generator: torch.Generator | None = None,
    gather_fn: GatherFn | None = None,
    rank: int | None = None,
) -> torch.Tensor:
    """
    Reference implementation of :class:`LocalInfoNCELoss` that materialises the full similarity
    matrix (``M x N_bank``, or ``M x K`` gathered negatives with ``num_negatives``). Same arguments
    and result as ``LocalInfoNCELoss(temperature, num_negatives, symmetric=symmetric,
    gather_fn=gather_fn, rank=rank)(emb_q, emb_k, coords_k, valid_q, coords_q, valid_k, generator)``;
    meant for tests and benchmarks only.
    """
    losses = []
    for direction in _directions(
        emb_q, emb_k, coords_k, valid_q, coords_q, valid_k, symmetric, num_negatives, generator, gather_fn, rank
    ):
        a, p = direction.anchors, direction.positives
        if a.shape[0] == 0:
            continue
        pos = (a * p).sum(dim=1) / temperature
        if direction.negative_index is None:
            neg = a @ direction.bank.t() / temperature
            same = direction.row_image[:, None] == direction.bank_image[None, :]
            neg = neg.masked_fill(same, float("-inf"))
        else:
            local_image = torch.arange(len(direction.counts), device=a.device).repeat_interleave(
                torch.as_tensor(direction.counts, device=a.device)
            )
            negatives = direction.bank[direction.negative_index[local_image]]  # (M, K, D)
            neg = torch.einsum("md,mkd->mk", a, negatives) / temperature
        losses.append((torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1) - pos).mean())
    return _average(losses, emb_q, emb_k)


class LocalInfoNCELoss(_Loss):
    """
    Dense local contrastive loss of IDEAL (eq. 2), exact and memory-linear.

    Inputs are the dense embeddings of two views (e.g. from
    :class:`custom.pretraining.heads.DenseProjectionHead`) and a correspondence from query cells to key
    locations (e.g. :func:`custom.pretraining.correspondence.match_grid`, or
    :func:`~custom.pretraining.correspondence.match_by_feature_argmax` followed by
    :func:`~custom.pretraining.correspondence.indices_to_coords`). Embeddings are L2-normalised over ``D`` inside;
    the positive of a query cell is the key map bilinearly sampled at its matched location (then
    normalised); the negatives are all cells of the key maps of the other images in the batch
    (including cells with no valid match), or, with ``num_negatives``, a random subset of that many
    of them per image, drawn without replacement. The loss of a direction is the mean over its valid
    anchor cells.

    Symmetric form (``symmetric=True``, the default): the key->query direction is the same loss with
    the roles of the views swapped: key cells are anchors, their positives are read from the query
    map at ``coords_q`` (``match_grid(theta_k, theta_q, (hk, wk))``) and the negatives are the query
    maps' cells of the other images. The result is the mean of the two directional losses; a
    direction without any valid cell is left out of the mean, and the loss is a zero connected to the
    graph when no direction has valid cells.

    Memory: query cells are processed ``chunk_size`` at a time, in the forward pass and again (recomputing
    the similarities) in the explicit backward pass, so the peak extra memory is a few
    ``chunk_size x N_neg`` blocks of similarities plus gradient buffers the size of the embeddings.
    Not twice differentiable.

    Cross-rank negatives: with ``gather_fn`` (e.g. :func:`custom.pretraining.global_infonce.all_gather_with_grad`),
    the negative bank of each direction is the target maps of all ranks, gathered as a
    ``(B, hk * wk, D)`` tensor of normalised embeddings; anchors stay local. The local block must be at
    position ``rank`` of the gathered tensor, and all ranks need the same batch and map sizes.

    Args:
        temperature: softmax temperature ``tau``.
        num_negatives: if given, every image's anchors use ``num_negatives`` negatives sampled from the
            other images' cells (with the ``generator`` passed to ``forward``); ``None`` uses all of them.
        chunk_size: number of anchor cells per chunk.
        symmetric: average the query->key and key->query directions.
        gather_fn: optional callable all-gathering a tensor over DDP ranks along dim 0 (rank order,
            gradient kept for the local part). ``None``: negatives from the local batch only.
        rank: position of the local block in gathered tensors; ``None`` uses the ``torch.distributed``
            rank (0 when not initialised). Only used with ``gather_fn``.

    Attribute ``last_num_images``: the number of images whose cells formed the negative bank in the last
    ``forward`` (``B``, or ``world_size * B`` with a distributed ``gather_fn``); None before the first call.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        num_negatives: int | None = None,
        chunk_size: int = 512,
        symmetric: bool = True,
        gather_fn: GatherFn | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
        if num_negatives is not None and num_negatives < 1:
            raise ValueError(f"num_negatives must be positive or None, got {num_negatives}.")
        self.temperature = float(temperature)
        self.num_negatives = num_negatives
        self.chunk_size = int(chunk_size)
        self.symmetric = symmetric
        self.gather_fn = gather_fn
        self.rank = rank
        self.last_num_images: int | None = None

    def _direction_loss(self, direction: _Direction) -> torch.Tensor:
        a, p = direction.anchors, direction.positives
        if direction.negative_index is None:
            total = _ChunkedInfoNCE.apply(
                a, p, direction.bank, direction.row_image, direction.bank_image, self.temperature, self.chunk_size
            )
        else:
            # each image has its own negatives
            total = a.new_zeros(())
            for image, (a_img, p_img) in enumerate(zip(a.split(direction.counts), p.split(direction.counts))):
                if a_img.shape[0] == 0:
                    continue
                negatives = direction.bank[direction.negative_index[image]]  # (K, D)
                total = total + _ChunkedInfoNCE.apply(
                    a_img, p_img, negatives, None, None, self.temperature, self.chunk_size
                )
        return total / a.shape[0]

    def forward(
        self,
        emb_q: torch.Tensor,
        emb_k: torch.Tensor,
        coords_k: torch.Tensor,
        valid_q: torch.Tensor,
        coords_q: torch.Tensor | None = None,
        valid_k: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """
        Args:
            emb_q: ``(B, D, h, w)`` query-view embeddings.
            emb_k: ``(B, D, hk, wk)`` key-view embeddings.
            coords_k: ``(B, h, w, 2)`` normalised key-view coordinates of every query cell.
            valid_q: ``(B, h, w)`` boolean mask of query cells with a valid match.
            coords_q: ``(B, hk, wk, 2)`` normalised query-view coordinates of every key cell
                (required when ``symmetric``).
            valid_k: ``(B, hk, wk)`` boolean mask of key cells with a valid match (required when ``symmetric``).
            generator: optional ``torch.Generator`` for the negative subsets (``num_negatives``).

        Returns:
            scalar loss.
        """
        directions = _directions(
            emb_q,
            emb_k,
            coords_k,
            valid_q,
            coords_q,
            valid_k,
            self.symmetric,
            self.num_negatives,
            generator,
            self.gather_fn,
            self.rank,
        )
        self.last_num_images = directions[0].num_images
        losses = [self._direction_loss(direction) for direction in directions if direction.anchors.shape[0] > 0]
        return _average(losses, emb_q, emb_k)
