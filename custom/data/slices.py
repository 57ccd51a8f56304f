"""2D slice datasets over 3D volumes: decode and preprocess each volume once, then serve slices from memory."""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from monai.data import Dataset
from monai.transforms import apply_transform

__all__ = ["SliceDataset", "DistinctCaseSampler"]

logger = logging.getLogger(__name__)


def _identity(x: Any) -> Any:
    return x


class SliceDataset(torch.utils.data.Dataset):
    """Slices (along the last axis) of preprocessed volumes, cached in memory, with a per-slice transform.

    Each volume of ``data`` goes through ``volume_transform`` once (e.g. :func:`volume_preprocessing`, which
    already crops in-plane, so the cache holds only cropped slices). Items may carry ``"slices"``, the slice
    indices to use (slice-fraction protocols); otherwise every slice is used.

    Args:
        data: datalist items, e.g. ``{"image": path, "label": path, "case": "patient001"}``.
        volume_transform: deterministic transform giving ``keys`` as (1, H, W, D) tensors.
        transform: per-slice (usually random) transform applied in ``__getitem__``.
        keys: keys to slice, ``("image", "label")`` or ``("image",)`` for unlabeled data.
        num_workers: processes that decode volumes while the cache is built.

    Items: ``{"image": (1, H, W) float32, "label": (1, H, W) float32, "case": str, "slice": int}``.
    """

    def __init__(
        self,
        data: Sequence[dict[str, Any]],
        volume_transform: Callable,
        transform: Callable | None = None,
        keys: Sequence[str] = ("image", "label"),
        num_workers: int = 0,
    ) -> None:
        if len(data) == 0:
            raise ValueError("SliceDataset: the datalist split is empty")
        self.data, self.keys, self.transform = list(data), tuple(keys), transform
        self.slices: list[dict[str, Any]] = []
        volumes = torch.utils.data.DataLoader(
            Dataset(self.data, volume_transform), batch_size=None, num_workers=num_workers, collate_fn=_identity
        )
        for item, vol in zip(self.data, volumes):
            depth = vol[self.keys[0]].shape[-1]
            wanted = item.get("slices", range(depth))
            for z in wanted:
                if not 0 <= z < depth:
                    raise ValueError(f"{item.get(self.keys[0])}: slice index {z} outside 0..{depth - 1}")
                entry = {k: vol[k][..., z].as_tensor().clone() if hasattr(vol[k], "as_tensor") else vol[k][..., z].clone()
                         for k in self.keys}
                entry["case"], entry["slice"] = str(item.get("case", item.get(self.keys[0]))), int(z)
                self.slices.append(entry)
        logger.info("SliceDataset: %d slices from %d volumes", len(self.slices), len(self.data))

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.slices[index])
        item[self.keys[0]] = item[self.keys[0]].clone()  # transforms must never modify the cache in place
        for k in self.keys[1:]:
            item[k] = item[k].float()
        return apply_transform(self.transform, item) if self.transform is not None else item


class DistinctCaseSampler(torch.utils.data.Sampler[int]):
    """Slice indices in blocks of ``batch_size`` slices of ``batch_size`` different cases.

    Batched with the same ``batch_size`` (and ``drop_last``), every batch holds one slice of each of ``batch_size``
    cases, so in contrastive pre-training the negatives of a slice never come from its own volume or patient (the
    neighbouring slices and the other frame of a patient look almost the same and are not true negatives). ``case``
    is the datalist's case id (ACDC: the patient, both frames). A pass has ``len(dataset) // batch_size`` blocks:
    cases drawn uniformly without replacement per block, a slice of each uniformly. The draws come from a generator
    seeded from torch's global RNG at the start of each pass (deterministic under ``set_determinism``, and
    restored with the RNG state on resume).

    Args:
        dataset: a :class:`SliceDataset` (its ``slices`` entries carry ``"case"``).
        batch_size: slices per batch; with fewer cases than that, every case appears once before any repeats (and a
            warning says that the property no longer holds).
    """

    def __init__(self, dataset: SliceDataset, batch_size: int) -> None:
        groups: dict[str, list[int]] = {}
        for index, entry in enumerate(dataset.slices):
            groups.setdefault(entry["case"], []).append(index)
        if batch_size > len(groups):
            logger.warning("DistinctCaseSampler: batch_size %d > %d cases in the dataset: batches repeat cases (their "
                           "slices are negatives of each other); use more cases or a smaller batch", batch_size, len(groups))
        self.groups = [torch.as_tensor(v) for v in groups.values()]
        self.batch_size = int(batch_size)
        self.num_batches = len(dataset) // self.batch_size

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        repeats = -(-self.batch_size // len(self.groups))  # 1 unless there are fewer cases than batch_size
        for _ in range(self.num_batches):
            cases = torch.cat([torch.randperm(len(self.groups), generator=generator) for _ in range(repeats)])
            for c in cases[: self.batch_size].tolist():
                group = self.groups[c]
                yield int(group[torch.randint(len(group), (1,), generator=generator)].item())
