"""Checks of dataset files before any work starts, so that a bad file stops a command before it writes anything.

Every failure raises :class:`DatasetError` with a message that names the file and the problem. The header checks
(:func:`check_pair`) need no decoding; the value checks (:func:`check_image_values`) are shared with
:class:`custom.data.io.ValidateVolumed`, which applies them to loaded volumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from custom.errors import DatasetError

__all__ = ["DatasetError", "check_image_values", "check_pair", "check_items"]


def check_image_values(name: str, values: np.ndarray) -> None:
    """Raise :class:`DatasetError` naming ``name`` unless the image ``values`` (any shape) are all finite and not all
    equal (a constant image has no structure to segment and breaks intensity normalisation)."""
    if not np.isfinite(values).all():
        raise DatasetError(f"{name}: image contains NaN or infinite values")
    if values.size == 0 or values.min() == values.max():
        raise DatasetError(f"{name}: image is constant (value {values.flat[0] if values.size else 'none'})")


def _header(path: Path):
    import nibabel as nib

    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises many types for non-NIfTI or damaged headers
        raise DatasetError(f"{path}: cannot read as NIfTI ({type(e).__name__}: {e})") from None


def _check_image_data(path: Path, img) -> None:
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # truncated gzip streams, short files
        raise DatasetError(f"{path}: cannot read as NIfTI ({type(e).__name__}: {e})") from None
    check_image_values(str(path), data)


def check_pair(image: Path, label: Path | None, allowed_labels: Iterable[int] | None = None, check_values: bool = True) -> int:
    """Validate one image (and label): headers, shapes, affines; with ``check_values`` also decode both and check
    that the image is finite and not constant and that the label values are allowed.

    Returns the number of slices (last axis). Raises :class:`DatasetError` naming the file and the problem.
    """
    img = _header(image)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        hint = " (a 4D cine volume: extract the ED/ES frames first)" if len(shape) == 4 else ""
        raise DatasetError(f"{image}: expected a 3D volume, got shape {tuple(img.shape)}{hint}")
    if check_values:
        _check_image_data(image, img)
    if label is not None:
        lab = _header(label)
        lab_shape = lab.shape[:3] if len(lab.shape) == 4 and lab.shape[3] == 1 else lab.shape
        if tuple(lab_shape) != tuple(shape):
            raise DatasetError(f"{label}: label shape {tuple(lab.shape)} does not match image shape {tuple(img.shape)} of {image.name}")
        if not np.allclose(lab.affine, img.affine, atol=1e-3):
            raise DatasetError(f"{label}: label affine differs from the image affine of {image.name}")
        if check_values and allowed_labels is not None:
            try:
                values = np.unique(np.asarray(lab.dataobj))
            except Exception as e:
                raise DatasetError(f"{label}: cannot read as NIfTI ({type(e).__name__}: {e})") from None
            unexpected = sorted(set(values.tolist()) - {float(v) for v in allowed_labels})
            if unexpected:
                raise DatasetError(
                    f"{label}: unexpected label values {unexpected[:10]} (allowed: {sorted(allowed_labels)})"
                )
    return int(shape[2])


def check_items(items: Sequence[Mapping[str, Any]], allowed_labels: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Validate every item (:func:`check_pair`: readable, 3D, finite, not constant, label shape/affine/values) before
    any work starts, so that a bad file stops a command before it writes anything; returns the items unchanged."""
    items = [dict(item) for item in items]
    allowed = None if allowed_labels is None else list(allowed_labels)
    for item in items:
        check_pair(Path(item["image"]), Path(item["label"]) if item.get("label") else None, allowed)
    return items
