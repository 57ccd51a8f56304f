"""Volume preprocessing shared by both bundles, training, validation and inference.

``volume_preprocessing`` loads a NIfTI short-axis volume (and label), maps raw label values to class indices,
resamples in-plane to a target spacing when the spacing is known (else resizes each slice so that the whole field
of view fits), scales intensities to [0, 1] by robust percentiles (fine for raw MRI and for already-normalised
copies), and centre crops/pads in-plane. Every step is invertible, so ``Invertd`` maps predictions back onto the
input grid.
"""

from __future__ import annotations

import threading
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor

from custom.data.io import CheckedLoadImaged, ValidateVolumed
from monai.transforms import (
    MapTransform,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    MapLabelValued,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)

__all__ = ["KnownSpacingd", "FitFieldOfViewd", "DecoderDisagreementd", "volume_preprocessing", "has_known_spacing",
           "FOV_MODES"]

#: how :func:`volume_preprocessing` brings a slice to ``spatial_size``
FOV_MODES = ("fit", "crop")


def has_known_spacing(img: torch.Tensor) -> bool:
    """False when the image carries no geometry (identity affine, e.g. the shared ACDC copy)."""
    if not isinstance(img, MetaTensor):
        return False
    affine = np.asarray(img.affine, dtype=float)
    return not np.allclose(affine, np.eye(affine.shape[0]))


def _first_tensor(data: Mapping[Hashable, torch.Tensor], keys, kind: type = torch.Tensor) -> torch.Tensor | None:
    return next((data[k] for k in keys if k in data and isinstance(data[k], kind)), None)


def _last_operation_is(data: Mapping[Hashable, torch.Tensor], keys, name: str) -> bool:
    """Whether the last transform recorded on the first MetaTensor under ``keys`` is ``name`` (it actually ran)."""
    first = _first_tensor(data, keys, MetaTensor)
    ops = first.applied_operations if first is not None else []
    return bool(ops) and ops[-1].get("class") == name


class KnownSpacingd(Spacingd):
    """``Spacingd`` that leaves images without geometry (identity affine) untouched instead of inventing 1 mm.

    Also ignores non-tensor entries under its keys, and entries named ``<key>_*`` that are not meta-data dicts:
    MONAI's ``Spacingd`` (1.6) calls ``.update(meta)`` on every ``<key>_*`` entry, which fails on the
    ``image_path`` string that MONAI Label adds to the data; such entries are set aside and put back unchanged.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict:
        d = dict(data)
        first = _first_tensor(d, self.keys)
        if first is None or not has_known_spacing(first):
            return d
        prefixes = tuple(f"{k}_" for k in self.keys)
        aside = {k: d[k] for k in d if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], dict)}
        for k in aside:
            del d[k]
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        """Undo the resampling only where ``__call__`` actually resampled (the last applied operation)."""
        d = dict(data)
        return super().inverse(d) if _last_operation_is(d, self.keys, "SpatialResample") else d


class FitFieldOfViewd(Resized):
    """Resize each slice so that its whole in-plane field of view fits ``spatial_size``, keeping the aspect ratio.

    Applied only to images without geometry (identity affine): those cannot be resampled to a physical spacing,
    and a centre crop of their native grid cuts the heart of large-FOV scans (e.g. ACDC patients 038, 046 and
    057 lose 39-58 % of the RV in a 128 px crop). Images with a known spacing pass unchanged (``KnownSpacingd``
    resamples them instead). The longest in-plane side becomes ``max(spatial_size)``; slices keep their count;
    a following ``ResizeWithPadOrCropd`` pads the short side. The inverse restores the original grid exactly.

    ``fraction`` < 1 fits only the central ``fraction`` of the longest side (a following centre crop removes the
    border): a magnification for fields of view prescribed around the organ. On the 80 patients of the shared ACDC
    copy the heart lies within the central 0.67 of the longest side (patient 046 ED; median 0.41).
    """

    def __init__(self, keys, spatial_size: Sequence[int], mode=("bilinear", "nearest"), fraction: float = 1.0,
                 allow_missing_keys: bool = True):
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fov_fraction must be in (0, 1], got {fraction!r}")
        super().__init__(keys, spatial_size=(*spatial_size, -1), mode=mode, allow_missing_keys=allow_missing_keys)
        self.target = tuple(int(s) for s in spatial_size)
        self.fraction = float(fraction)
        self._lock = threading.Lock()

    # the size is set on the shared resizer per volume: a CacheDataset fills its cache from several threads
    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict:
        d = dict(data)
        first = _first_tensor(d, self.keys)
        if first is None or has_known_spacing(first):
            return d
        h, w = first.shape[1:3]
        scale = min(self.target[0] / h, self.target[1] / w) / self.fraction
        with self._lock:
            self.resizer.spatial_size = (max(1, round(h * scale)), max(1, round(w * scale)), -1)
            return super().__call__(d, lazy=lazy)

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        """Undo the resize only where ``__call__`` resized (the last applied operation is this ``Resize``)."""
        d = dict(data)
        return super().inverse(d) if _last_operation_is(d, self.keys, "Resize") else d


def volume_preprocessing(
    keys: Sequence[str] = ("image", "label"),
    spatial_size: int | Sequence[int] = 192,
    pixdim: Sequence[float] | None = (1.5, 1.5),
    label_values: Sequence[int] | None = None,
    load: bool = True,
    lower_percentile: float = 0.5,
    upper_percentile: float = 99.5,
    max_label: int | None = 255,
    fov: str = "fit",
    fov_fraction: float = 1.0,
) -> Compose:
    """Compose of the volume pipeline; ``keys[0]`` is the image, the others labels.

    Args:
        keys: data keys; labels are resampled with nearest neighbour.
        spatial_size: in-plane size after centre crop/pad (int or (H, W)); slices keep their count.
        pixdim: in-plane target spacing in mm, or None to keep the native grid. Skipped for images without
            geometry (identity affine).
        label_values: raw label values in class order (e.g. MMWHS ``[0, 205, 420, ...]``) to map to 0..C-1;
            None when labels already are class indices.
        load: start with ``LoadImaged`` + ``EnsureChannelFirstd`` (False when the data are already tensors).
        max_label: largest label value accepted without ``label_values`` (e.g. ``num_classes - 1``); labels are
            stored as uint8, so larger raw values are an error, never silently wrapped.
        fov: for images without geometry, ``"fit"`` resizes each slice so the whole field of view fits
            ``spatial_size`` (:class:`FitFieldOfViewd`); ``"crop"`` centre crops/pads the native grid (cuts large
            fields of view). Images with a known spacing are resampled to ``pixdim`` and cropped/padded either way.
        fov_fraction: with ``fov="fit"``, the central fraction of the longest in-plane side that fits
            ``spatial_size`` (1: the whole slice; 0.75 magnifies by 4/3 and crops the outer border).

    Every input is checked first (:class:`ValidateVolumed`): errors name the file and the problem.

    Output: ``image`` (1, H, W, D) float32 MetaTensor in [0, 1], labels (1, H, W, D).
    """
    if fov not in FOV_MODES:
        raise ValueError(f"fov must be one of {FOV_MODES}, got {fov!r}")
    keys = list(keys)
    image, labels = keys[0], keys[1:]
    size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(spatial_size)
    steps: list = []
    if load:
        steps += [
            CheckedLoadImaged(keys=keys, reader="NibabelReader", image_only=True, allow_missing_keys=True),
            EnsureChannelFirstd(keys=keys, allow_missing_keys=True),
        ]
    steps.append(ValidateVolumed(keys=keys, max_label=None if label_values is not None else max_label))
    if label_values is not None and labels:
        steps.append(
            MapLabelValued(keys=labels, orig_labels=list(label_values), target_labels=list(range(len(label_values))),
                           allow_missing_keys=True)
        )
    if pixdim is not None:
        modes = ["bilinear"] + ["nearest"] * len(labels)
        steps.append(KnownSpacingd(keys=keys, pixdim=(*pixdim, -1), mode=modes, allow_missing_keys=True))
    if fov == "fit":
        steps.append(FitFieldOfViewd(keys=keys, spatial_size=size, mode=["bilinear"] + ["nearest"] * len(labels),
                                     fraction=fov_fraction))
    steps += [
        ScaleIntensityRangePercentilesd(keys=image, lower=lower_percentile, upper=upper_percentile, b_min=0.0, b_max=1.0,
                                        clip=True, channel_wise=True),
        ResizeWithPadOrCropd(keys=keys, spatial_size=(*size, -1), allow_missing_keys=True),
        EnsureTyped(keys=image, dtype=torch.float32),
    ]
    if labels:
        steps.append(EnsureTyped(keys=labels, dtype=torch.uint8, allow_missing_keys=True))
    return Compose(steps)


class DecoderDisagreementd(MapTransform):
    """Split both decoders' probabilities (2C, ...) into their mean (C, ...) and a disagreement map.

    ``disagreement`` (1, ...) is 1 where the decoders' arg-max labels differ, a per-voxel uncertainty output.
    Inputs with C channels (a single ensemble output) pass through unchanged.
    """

    def __init__(self, keys: str = "pred", num_classes: int = 4, disagreement_key: str = "disagreement") -> None:
        super().__init__(keys)
        self.num_classes, self.disagreement_key = num_classes, disagreement_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            probs = d[key]
            if probs.shape[0] != 2 * self.num_classes:
                continue
            p1, p2 = probs[: self.num_classes], probs[self.num_classes :]
            d[key] = (p1 + p2) / 2
            d[self.disagreement_key] = (p1.argmax(0, keepdim=True) != p2.argmax(0, keepdim=True)).to(torch.float32)
        return d
