# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""
Dense correspondences between two views of the same images.

``geometric`` mode (:func:`match_grid`): exact correspondences from the known affine matrices of the
two views (see :mod:`custom.pretraining.views`). ``feature_argmax`` mode (:func:`match_by_feature_argmax`):
DenseCL-style matching of each query cell to its most similar key cell.

Both produce, for every query feature cell, normalised coordinates in the key feature map
(``align_corners=False`` convention, ``(x, y)`` order as ``F.grid_sample`` expects) and a validity
mask; :func:`sample_at` then reads the key features there. :func:`dense_correspondence` gives both
directions in either mode, as the local loss takes them.

Feature cells follow the ``align_corners=False`` convention: on an ``(h, w)`` grid covering the
view, cell ``(i, j)`` is centred at ``x = (2 j + 1) / w - 1``, ``y = (2 i + 1) / h - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "CORRESPONDENCE_MODES",
    "cell_centers",
    "dense_correspondence",
    "indices_to_coords",
    "match_by_feature_argmax",
    "match_grid",
    "sample_at",
]

#: how query cells are matched to key locations: from the known view geometry, or DenseCL-style feature argmax
CORRESPONDENCE_MODES = ("geometric", "feature_argmax")


def cell_centers(
    grid_size: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """
    Normalised ``(x, y)`` coordinates of the centres of an ``(h, w)`` grid (``align_corners=False``).

    Returns:
        ``(h, w, 2)`` tensor.
    """
    h, w = int(grid_size[0]), int(grid_size[1])
    ys = (2 * torch.arange(h, device=device, dtype=dtype) + 1) / h - 1
    xs = (2 * torch.arange(w, device=device, dtype=dtype) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def _homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3) -> (B, 3, 3)``."""
    last = torch.zeros_like(theta[:, :1, :])
    last[..., 2] = 1
    return torch.cat([theta, last], dim=1)


def match_grid(
    theta_q: torch.Tensor, theta_k: torch.Tensor, grid_size_q: Sequence[int], eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Exact correspondence from the query view's feature grid to the key view, from the known affine
    matrices of both views (view coordinates -> original image coordinates, see
    :func:`custom.pretraining.views.sample_affine`).

    Every query cell centre ``p`` is mapped to the original image, ``o = theta_q @ [p, 1]``, then into
    the key view, ``c = inverse(theta_k) @ [o, 1]`` (3x3 homogeneous inverse). A cell is valid iff
    ``o`` lies inside the original image (the query cell does not show zero padding) and ``c`` lies
    inside the key view, both ``[-1, 1]^2`` up to ``eps``.

    The key coordinates do not depend on the key feature map's resolution, so the same result can
    be used with a key map of any size (:func:`sample_at` interpolates).

    For the reverse direction (key cells -> query view) call ``match_grid(theta_k, theta_q, grid_size_k)``.

    Args:
        theta_q: ``(B, 2, 3)`` matrix of the query view.
        theta_k: ``(B, 2, 3)`` matrix of the key view.
        grid_size_q: ``(h, w)`` of the query feature map.
        eps: tolerance of the inside tests.

    Returns:
        ``(coords_k, valid)``: ``(B, h, w, 2)`` normalised ``(x, y)`` key-view coordinates usable by
        ``F.grid_sample(..., align_corners=False)``, and a ``(B, h, w)`` boolean mask.
    """
    if theta_q.shape != theta_k.shape or theta_q.shape[1:] != (2, 3):
        raise ValueError(f"expected two (B, 2, 3) matrices, got {tuple(theta_q.shape)} and {tuple(theta_k.shape)}.")
    h, w = int(grid_size_q[0]), int(grid_size_q[1])
    # float64 so that the inverse and the border tests are not at the mercy of rounding
    tq = theta_q.detach().to(torch.float64)
    tk_inv = torch.linalg.inv(_homogeneous(theta_k.detach().to(torch.float64)))[:, :2, :]
    p = cell_centers((h, w), device=theta_q.device, dtype=torch.float64).reshape(1, -1, 2)
    ones = torch.ones_like(p[..., :1]).expand(tq.shape[0], -1, -1)
    orig = torch.cat([p.expand(tq.shape[0], -1, -1), ones], -1) @ tq.transpose(1, 2)  # (B, hw, 2)
    coords = torch.cat([orig, ones], -1) @ tk_inv.transpose(1, 2)
    inside_orig = (orig.abs() <= 1 + eps).all(-1)
    inside_key = (coords.abs() <= 1 + eps).all(-1)
    valid = (inside_orig & inside_key).reshape(-1, h, w)
    return coords.reshape(-1, h, w, 2).to(theta_q.dtype), valid


def sample_at(
    features_k: torch.Tensor, coords_k: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border"
) -> torch.Tensor:
    """
    Read key features at (fractional) normalised coordinates with
    ``F.grid_sample(..., align_corners=False)``.

    Bilinear interpolation is the default; ``mode="nearest"`` takes the feature of the key cell that
    contains the point instead. ``padding_mode="border"`` keeps points between the outermost cell
    centres and the view border from being blended with zeros.

    Args:
        features_k: ``(B, D, hk, wk)`` key feature map.
        coords_k: ``(B, h, w, 2)`` normalised ``(x, y)`` coordinates, e.g. from :func:`match_grid`.
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.

    Returns:
        ``(B, D, h, w)`` sampled features.
    """
    return F.grid_sample(
        features_k, coords_k.to(features_k.dtype), mode=mode, padding_mode=padding_mode, align_corners=False
    )


@torch.no_grad()
def match_by_feature_argmax(feat_q: torch.Tensor, feat_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    DenseCL-style correspondence: each query cell is matched to the key cell of the same image with
    the highest cosine similarity. No gradient flows through the matching.

    Args:
        feat_q: ``(B, C, h, w)`` query features (typically backbone features).
        feat_k: ``(B, C, hk, wk)`` key features.

    Returns:
        ``(indices, valid)``: ``(B, h, w)`` long indices into the flattened ``hk * wk`` key grid, and an
        all-true ``(B, h, w)`` mask (every cell gets a match). Use :func:`indices_to_coords` to turn
        the indices into coordinates for :func:`sample_at` or the local loss.
    """
    if feat_q.ndim != 4 or feat_k.ndim != 4 or feat_q.shape[:2] != feat_k.shape[:2]:
        raise ValueError(f"expected (B, C, h, w) features, got {tuple(feat_q.shape)} and {tuple(feat_k.shape)}.")
    b, _, h, w = feat_q.shape
    q = F.normalize(feat_q.flatten(2), dim=1)  # (B, C, h*w)
    k = F.normalize(feat_k.flatten(2), dim=1)  # (B, C, hk*wk)
    indices = torch.bmm(q.transpose(1, 2), k).argmax(dim=2).reshape(b, h, w)
    valid = torch.ones(b, h, w, dtype=torch.bool, device=feat_q.device)
    return indices, valid


def indices_to_coords(
    indices: torch.Tensor, grid_size_k: Sequence[int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """
    Normalised coordinates of the centres of flattened key-grid cells, so that :func:`sample_at`
    returns exactly those cells' features.

    Args:
        indices: ``(B, h, w)`` long indices into the flattened ``(hk, wk)`` key grid.
        grid_size_k: ``(hk, wk)``.
        dtype: dtype of the coordinates.

    Returns:
        ``(B, h, w, 2)`` normalised ``(x, y)`` coordinates.
    """
    centers = cell_centers(grid_size_k, device=indices.device, dtype=dtype).reshape(-1, 2)
    return centers[indices]


def dense_correspondence(
    mode: str,
    theta_q: torch.Tensor,
    theta_k: torch.Tensor,
    grid_q: tuple[int, int],
    grid_k: tuple[int, int],
    features_q: torch.Tensor | None = None,
    features_k: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Both directions of the cell correspondence between two views, as :class:`LocalInfoNCELoss` takes them.

    Args:
        mode: ``"geometric"``: exact matches from the views' affine matrices (:func:`match_grid`), cells whose
            match falls outside the other view (or shows padding) are invalid; ``"feature_argmax"``: each cell is
            matched to the most similar cell of the other view (:func:`match_by_feature_argmax`), all valid.
        theta_q: ``(B, 2, 3)`` matrix of the query view (view -> original image coordinates).
        theta_k: ``(B, 2, 3)`` matrix of the key view.
        grid_q: ``(h, w)`` of the query embedding map.
        grid_k: ``(hk, wk)`` of the key embedding map.
        features_q: ``(B, C, h, w)`` query features to match on (``feature_argmax`` only).
        features_k: ``(B, C, hk, wk)`` key features (``feature_argmax`` only).

    Returns:
        ``(coords_k (B, h, w, 2), valid_q (B, h, w), coords_q (B, hk, wk, 2), valid_k (B, hk, wk))``: normalised
        key-view coordinates of every query cell and the reverse, with their validity masks.
    """
    if mode == "geometric":
        coords_k, valid_q = match_grid(theta_q, theta_k, grid_q)
        coords_q, valid_k = match_grid(theta_k, theta_q, grid_k)
    elif mode == "feature_argmax":
        if features_q is None or features_k is None:
            raise ValueError("correspondence mode 'feature_argmax' needs the features of both views.")
        index_k, valid_q = match_by_feature_argmax(features_q, features_k)
        index_q, valid_k = match_by_feature_argmax(features_k, features_q)
        coords_k = indices_to_coords(index_k, grid_k, dtype=theta_q.dtype)
        coords_q = indices_to_coords(index_q, grid_q, dtype=theta_q.dtype)
    else:
        raise ValueError(f"correspondence mode must be one of {CORRESPONDENCE_MODES}, got {mode!r}.")
    return coords_k, valid_q, coords_q, valid_k
