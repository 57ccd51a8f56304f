"""Reading and writing NIfTI safely: errors that name the file, checked volumes, atomic outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Hashable, Mapping

import nibabel as nib
import numpy as np
import torch
from monai.data import NibabelWriter
from monai.transforms import LoadImaged, MapTransform

from custom.atomic import atomic_path
from custom.data.datalist.checks import DatasetError, check_image_values

__all__ = ["CheckedLoadImaged", "ValidateVolumed", "AtomicNibabelWriter", "SaveEmbeddingd"]


def _source(data: Mapping[Hashable, object], key: Hashable) -> str:
    value = data.get(key)
    meta = getattr(value, "meta", None)
    if isinstance(meta, dict) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return str(value)


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _readable(path: object) -> bool:
    """Whether nibabel reads the whole file (used only after a failure, to name the file that broke it)."""
    try:
        np.asanyarray(nib.load(str(path)).dataobj)
        return True
    except Exception:
        return False


class CheckedLoadImaged(LoadImaged):
    """``LoadImaged`` whose failures (missing, truncated or non-NIfTI files) raise :class:`DatasetError` naming the file."""

    def __call__(self, data, reader=None):
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if isinstance(path, (str, os.PathLike)) and not Path(path).exists():
                raise DatasetError(f"{path}: file not found")
        try:
            return super().__call__(d, reader)
        except Exception as e:
            cause = _root_cause(e)
            files = ", ".join(str(d[k]) for k in self.key_iterator(d) if not _readable(d[k])) or ", ".join(
                str(d[k]) for k in self.key_iterator(d))
            reason = (str(cause).strip().splitlines() or [""])[0]
            raise DatasetError(f"{files}: cannot read as NIfTI ({type(cause).__name__}: {reason})") from e


class ValidateVolumed(MapTransform):
    """Checks channel-first volumes before preprocessing: one channel, 3 spatial dims, finite, not constant,
    labels on the image grid. Raises :class:`DatasetError` naming the file and the problem.

    Args:
        keys: the image key first, then label keys.
        max_label: largest allowed label value (e.g. ``num_classes - 1``); None skips the value check.
    """

    def __init__(self, keys, max_label: int | None = None, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_label = max_label

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        image_key, label_keys = keys[0], keys[1:]
        image = d[image_key]
        name = _source(d, image_key)
        if image.ndim != 4:
            raise DatasetError(f"{name}: expected a 3D volume, got {image.ndim - 1} spatial dimensions (shape {tuple(image.shape[1:])})")
        if image.shape[0] != 1:
            raise DatasetError(
                f"{name}: expected one channel, got {image.shape[0]} (a 4D cine volume? extract the ED/ES frames first)"
            )
        check_image_values(name, torch.as_tensor(image).detach().float().cpu().numpy())
        for key in label_keys:
            label = d[key]
            if tuple(label.shape[1:]) != tuple(image.shape[1:]):
                raise DatasetError(
                    f"{_source(d, key)}: label shape {tuple(label.shape[1:])} does not match image shape {tuple(image.shape[1:])}"
                )
            if self.max_label is not None:
                top = torch.as_tensor(label).max().item()
                if top > self.max_label or torch.as_tensor(label).min().item() < 0:
                    raise DatasetError(
                        f"{_source(d, key)}: label values outside 0..{self.max_label} (max {top}); map raw labels with label_values"
                    )
        return d


class AtomicNibabelWriter(NibabelWriter):
    """``NibabelWriter`` that writes to a temporary file beside the target and renames it: no half-written outputs."""

    def write(self, filename, verbose: bool = False, **obj_kwargs):
        target = Path(filename)
        with atomic_path(target, "".join(target.suffixes) or ".nii.gz") as tmp:
            super().write(str(tmp), verbose=verbose, **obj_kwargs)


def _source_stem(data: Mapping[Hashable, object], key: Hashable) -> str:
    name = Path(_source(data, key)).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


class SaveEmbeddingd(MapTransform):
    """Write the dense embedding map of a volume to ``output_dir/<input name>_embedding.npy``, atomically.

    The map under ``keys`` is ``(D, h, w, S)`` (channels, embedding grid, slices; what ``SliceInferer`` gives for a
    network with stride ``s``); the file holds it as ``(S, D, h, w)`` float32, one embedding per slice and cell, in
    the preprocessed slice's frame (``h = spatial_size / s``). The name comes from the ``meta_key``'s source file.
    """

    def __init__(self, keys, output_dir: str | os.PathLike, meta_key: Hashable = "image", postfix: str = "embedding") -> None:
        super().__init__(keys)
        self.output_dir, self.meta_key, self.postfix = Path(output_dir), meta_key, postfix

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            emb = torch.as_tensor(d[key]).detach().float().cpu()
            if emb.ndim != 4:
                raise ValueError(f"expected a (D, h, w, S) embedding map, got shape {tuple(emb.shape)}")
            target = self.output_dir / f"{_source_stem(d, self.meta_key)}_{self.postfix}.npy"
            with atomic_path(target, ".npy") as tmp:
                np.save(tmp, emb.permute(3, 0, 1, 2).contiguous().numpy())
        return d
