"""Volume-level segmentation metrics in physical units (mm); :class:`custom.handlers.VolumeMetricsSaver` saves them.

All distances are in millimetres: voxel indices are scaled by the voxel ``spacing`` (one positive float per
spatial axis, in the axis order of the array).

Conventions
-----------
Surface
    The surface of a binary mask is ``mask XOR binary_erosion(mask)`` with a full-connectivity structuring
    element (3x3 in 2D, 3x3x3 in 3D; ``connectivity=ndim``). A foreground voxel is on the surface if any of its
    8 (2D) or 26 (3D) neighbours is background. Voxels outside the array count as background, so a mask touching
    the array border has a surface there. ``connectivity=1`` gives the face-connected convention of
    ``scipy.ndimage.binary_erosion``'s default, which is what ``monai.metrics`` uses.
Surface distances
    For every surface voxel of one mask, the Euclidean distance (mm, voxel centre to voxel centre) to the nearest
    surface voxel of the other mask (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``).
ASD, HD, HD95
    The two directed distance sets (prediction to ground truth and ground truth to prediction) are pooled into one
    set. ASD is its mean, HD its maximum and HD95 its 95th percentile (``numpy.percentile``, linear
    interpolation). ``monai.metrics.compute_hausdorff_distance(percentile=95)`` instead takes the larger of the two
    directed 95th percentiles, which is greater than or equal to the pooled one up to interpolation; HD (the
    maximum) is the same under both conventions.
Dice
    ``2 |P & G| / (|P| + |G|)``.

Empty-mask rule
---------------
No case is ever dropped and no metric is NaN or infinite:

* prediction and ground truth both empty: dice = 1, asd = hd = hd95 = 0;
* exactly one of them empty: dice = 0, asd = hd = hd95 = the diagonal of the field of view in mm,
  ``sqrt(sum((shape[i] * spacing[i]) ** 2))``, an upper bound of any surface distance inside the volume.

Every per-structure result carries the flags ``empty_pred`` and ``empty_gt`` (``empty_pred_<name>`` and
``empty_gt_<name>`` in :func:`volume_metrics`) so that penalised cases can be counted and reported;
:func:`summarize` reports the mean of a flag, i.e. the fraction of flagged cases.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from custom.atomic import atomic_write

if TYPE_CHECKING:
    import torch

__all__ = [
    "surface_distances",
    "structure_metrics",
    "volume_metrics",
    "summarize",
    "write_metrics_csv",
    "write_summary",
    "field_of_view_diagonal",
    "DISTANCE_METRICS",
]

#: the per-structure metric names, in the order they are reported.
DISTANCE_METRICS = ("dice", "asd", "hd", "hd95")


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim:
        raise ValueError(f"spacing must have one value per spatial axis ({ndim}), got {spacing}.")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing values must be finite and positive, got {spacing}.")
    return spacing


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth shapes differ: pred {pred.shape} vs gt {gt.shape}.")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D spatial array, got shape {pred.shape}.")


def _to_numpy(x: Any) -> np.ndarray:
    # duck-typed so that this module (and the report CLI using it) does not need to import torch
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        return (x.as_tensor() if hasattr(x, "as_tensor") else x).numpy()
    return np.asarray(x)


def field_of_view_diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length in mm of the diagonal of an array of ``shape`` voxels of size ``spacing``; bounds every distance."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of ``a | b`` plus one voxel of margin (where the array allows).

    The margin keeps erosion results identical to the uncropped arrays, and the Euclidean distance transform only
    depends on where the surface voxels are, so the distances are unchanged.
    """
    coords = np.argwhere(a | b)
    lo = np.maximum(coords.min(axis=0) - 1, 0)
    hi = np.minimum(coords.max(axis=0) + 2, a.shape)
    box = tuple(slice(int(s), int(e)) for s, e in zip(lo, hi))
    return a[box], b[box]


def _surface(mask: np.ndarray, connectivity: int) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred_mask: np.ndarray | torch.Tensor,
    gt_mask: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    connectivity: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm between two non-empty binary masks.

    Args:
        pred_mask: binary mask of shape (H, W) or (H, W, D).
        gt_mask: binary mask of the same shape.
        spacing: voxel size in mm per axis, length ``pred_mask.ndim``.
        connectivity: structuring element connectivity of the erosion that defines the surface,
            ``1 <= connectivity <= ndim``; defaults to ``ndim`` (full connectivity, see the module docstring).

    Returns:
        ``(d_pred_to_gt, d_gt_to_pred)``: 1D float arrays with, for each surface voxel of the first mask, the
        distance to the nearest surface voxel of the second (lengths: number of surface voxels of each mask).

    Raises:
        ValueError: shapes differ, bad spacing, or a mask is empty (distances are undefined; see
            :func:`structure_metrics` for the empty-mask rule).
    """
    pred, gt = _to_numpy(pred_mask).astype(bool), _to_numpy(gt_mask).astype(bool)
    _check_pair(pred, gt)
    spacing = _check_spacing(spacing, pred.ndim)
    if not pred.any() or not gt.any():
        raise ValueError("surface distances are undefined when a mask is empty (use structure_metrics).")
    connectivity = pred.ndim if connectivity is None else int(connectivity)
    if not 1 <= connectivity <= pred.ndim:
        raise ValueError(f"connectivity must be in [1, {pred.ndim}], got {connectivity}.")
    pred, gt = _crop_to_union(pred, gt)
    pred_surface, gt_surface = _surface(pred, connectivity), _surface(gt, connectivity)
    to_gt = ndimage.distance_transform_edt(~gt_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return np.asarray(to_gt[pred_surface], dtype=np.float64), np.asarray(to_pred[gt_surface], dtype=np.float64)


def dice_score(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    total = int(pred_mask.sum()) + int(gt_mask.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred_mask, gt_mask).sum()) / total


def structure_metrics(
    pred_mask: np.ndarray | torch.Tensor,
    gt_mask: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    connectivity: int | None = None,
) -> dict[str, float | bool]:
    """Dice and surface distances (mm) of one structure, applying the module's empty-mask rule.

    Args:
        pred_mask: binary mask of shape (H, W) or (H, W, D).
        gt_mask: binary mask of the same shape.
        spacing: voxel size in mm per axis.
        connectivity: surface convention, see :func:`surface_distances`.

    Returns:
        ``{"dice", "asd", "hd", "hd95"}`` as floats, plus the flags ``"empty_pred"`` and ``"empty_gt"``.
    """
    pred, gt = _to_numpy(pred_mask).astype(bool), _to_numpy(gt_mask).astype(bool)
    _check_pair(pred, gt)
    spacing = _check_spacing(spacing, pred.ndim)
    empty_pred, empty_gt = not pred.any(), not gt.any()
    flags: dict[str, float | bool] = {"empty_pred": empty_pred, "empty_gt": empty_gt}
    if empty_pred and empty_gt:
        return {"dice": 1.0, "asd": 0.0, "hd": 0.0, "hd95": 0.0, **flags}
    if empty_pred or empty_gt:
        worst = field_of_view_diagonal(pred.shape, spacing)
        return {"dice": 0.0, "asd": worst, "hd": worst, "hd95": worst, **flags}
    d_pg, d_gp = surface_distances(pred, gt, spacing, connectivity)
    pooled = np.concatenate([d_pg, d_gp])
    return {
        "dice": dice_score(pred, gt),
        "asd": float(pooled.mean()),
        "hd": float(pooled.max()),
        "hd95": float(np.percentile(pooled, 95)),
        **flags,
    }


def volume_metrics(
    pred: np.ndarray | torch.Tensor,
    gt: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    labels: Mapping[str, int],
    connectivity: int | None = None,
) -> dict[str, float | bool]:
    """Per-structure and mean metrics of an integer label volume.

    Args:
        pred: predicted label map of shape (H, W) or (H, W, D), integer class indices.
        gt: ground-truth label map of the same shape.
        spacing: voxel size in mm per axis, length ``pred.ndim``.
        labels: structure name to label value, e.g. ``{"RV": 1, "MYO": 2, "LV": 3}``.
        connectivity: surface convention, see :func:`surface_distances`.

    Returns:
        ``{"dice_<name>", "asd_<name>", "hd_<name>", "hd95_<name>", "empty_pred_<name>", "empty_gt_<name>"}``
        for every structure, then ``"dice_mean"``, ``"asd_mean"``, ``"hd_mean"``, ``"hd95_mean"`` (unweighted
        means over the structures).

    Raises:
        ValueError: shapes differ, spacing has the wrong length or a non-positive value, or ``labels`` is empty.
    """
    pred_np, gt_np = _to_numpy(pred), _to_numpy(gt)
    _check_pair(pred_np, gt_np)
    spacing = _check_spacing(spacing, pred_np.ndim)
    if len(labels) == 0:
        raise ValueError("labels must name at least one structure.")
    out: dict[str, float | bool] = {}
    for name, value in labels.items():
        res = structure_metrics(pred_np == value, gt_np == value, spacing, connectivity)
        out.update({f"{k}_{name}": v for k, v in res.items()})
    for metric in DISTANCE_METRICS:
        out[f"{metric}_mean"] = float(np.mean([out[f"{metric}_{name}"] for name in labels]))
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating, np.bool_)) and not isinstance(value, str)


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of every numeric column over cases.

    The standard deviation is the sample one (``ddof=1``) when a column has more than one value, else 0.
    Boolean flags count as 0/1, so their mean is the fraction of flagged cases. Non-numeric values (case names)
    are skipped; a key missing from some rows is summarised over the rows that have it.

    Args:
        rows: one mapping per case, e.g. the outputs of :func:`volume_metrics` plus a ``"case"`` name.

    Returns:
        ``{key: {"mean": float, "std": float, "n": int}}`` in first-seen key order.
    """
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if _is_number(value):
                columns.setdefault(key, []).append(float(value))
    summary: dict[str, dict[str, float]] = {}
    for key, values in columns.items():
        arr = np.asarray(values, dtype=np.float64)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        summary[key] = {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}
    return summary


def _csv_value(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return value


def write_metrics_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write one row per case to a CSV file (atomically); columns are the union of keys in first-seen order.

    Flags are written as 0/1 and floats with 6 significant digits.
    """
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)

    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(v) for k, v in row.items()})

    atomic_write(path, write)


def write_summary(summary: Mapping[str, Mapping[str, float]], path: str | os.PathLike) -> None:
    """Write the output of :func:`summarize` atomically, as JSON when ``path`` ends in ``.json``, else as CSV.

    The CSV has one row per metric with the columns ``metric, mean, std, n``.
    """
    if os.fspath(path).lower().endswith(".json"):
        atomic_write(path, lambda f: json.dump({k: dict(v) for k, v in summary.items()}, f, indent=2))
        return

    def write(f: Any) -> None:
        writer = csv.writer(f)
        writer.writerow(["metric", "mean", "std", "n"])
        for key, stats in summary.items():
            writer.writerow([key, _csv_value(stats["mean"]), _csv_value(stats["std"]), int(stats["n"])])

    atomic_write(path, write)
