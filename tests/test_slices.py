"""Tests of the 2D slice dataset over 3D volumes (custom.data.slices.SliceDataset)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from custom.data.slices import SliceDataset
from custom.data.transforms import volume_preprocessing


def _volume(item: dict) -> dict:
    """Volume transform for in-memory items: ``{"depth", "value"}`` -> (1, 6, 5, depth) image and label.

    Voxel values encode the slice index, so a served slice can be traced back to its volume slice.
    """
    depth, value = item["depth"], item["value"]
    z = torch.arange(depth, dtype=torch.float32).view(1, 1, 1, depth)
    image = MetaTensor((value + 0.01 * z).expand(1, 6, 5, depth).clone())
    label = (z.expand(1, 6, 5, depth) % 4).to(torch.uint8)
    return {**item, "image": image, "label": label}


def _items():
    return [
        {"case": "a", "depth": 4, "value": 1.0},
        {"case": "b", "depth": 7, "value": 2.0},
        {"case": "c", "depth": 1, "value": 3.0},
    ]


def test_length_is_sum_of_slices_and_order():
    ds = SliceDataset(_items(), _volume)
    assert len(ds) == 4 + 7 + 1
    served = [(ds[i]["case"], ds[i]["slice"]) for i in range(len(ds))]
    assert served == [("a", z) for z in range(4)] + [("b", z) for z in range(7)] + [("c", 0)]


def test_item_shapes_dtypes_and_content():
    ds = SliceDataset(_items(), _volume)
    item = ds[4 + 5]  # case b, slice 5
    assert set(item) == {"image", "label", "case", "slice"}
    assert item["case"] == "b" and item["slice"] == 5 and isinstance(item["slice"], int)
    assert tuple(item["image"].shape) == (1, 6, 5) and tuple(item["label"].shape) == (1, 6, 5)
    assert item["image"].dtype == torch.float32 and item["label"].dtype == torch.float32
    assert type(item["image"]) is torch.Tensor  # plain tensors, no MetaTensor per slice
    assert torch.allclose(item["image"], torch.full((1, 6, 5), 2.05))
    assert torch.all(item["label"] == 1.0)  # 5 % 4


def test_cache_holds_compact_copies():
    ds = SliceDataset(_items(), _volume)
    # each cached slice owns its storage, not a view of the whole volume
    assert ds.slices[1]["image"].untyped_storage().nbytes() == 6 * 5 * 4
    assert ds.slices[1]["label"].untyped_storage().nbytes() == 6 * 5
    label = ds[0]["label"]
    label.fill_(9)  # the float label is a fresh tensor
    assert torch.all(ds[0]["label"] == 0)


def test_in_place_transform_does_not_corrupt_cache():
    def in_place(item):
        item["image"].mul_(0.0)
        return item

    ds = SliceDataset(_items(), _volume, transform=in_place)
    ds[0]
    assert torch.allclose(ds.slices[0]["image"], torch.full((1, 6, 5), 1.0))


def test_honours_slices_lists():
    items = _items()
    items[0]["slices"] = [3, 1]
    items[1]["slices"] = []
    ds = SliceDataset(items, _volume)
    assert len(ds) == 3
    assert [(ds[i]["case"], ds[i]["slice"]) for i in range(3)] == [("a", 3), ("a", 1), ("c", 0)]
    assert torch.allclose(ds[0]["image"], torch.full((1, 6, 5), 1.03))
    assert torch.all(ds[1]["label"] == 1.0)


@pytest.mark.parametrize("bad", [7, -1, 100])
def test_slice_index_out_of_range(bad):
    items = _items()
    items[1]["slices"] = [0, bad]
    items[1]["image"] = "b.nii.gz"  # the error names the item's image
    with pytest.raises(ValueError, match=rf"b\.nii\.gz: slice index {bad} outside 0\.\.6"):
        SliceDataset(items, lambda d: _volume({k: v for k, v in d.items() if k != "image"}))


def test_empty_data_errors():
    with pytest.raises(ValueError, match="empty"):
        SliceDataset([], _volume)


def test_transform_applied_per_item():
    calls = []

    def transform(item):
        calls.append(item["slice"])
        return {**item, "image": item["image"] * 10, "extra": item["case"] + str(item["slice"])}

    ds = SliceDataset(_items(), _volume, transform=transform)
    assert calls == []  # not during caching
    item = ds[2]
    assert calls == [2]
    assert torch.allclose(item["image"], torch.full((1, 6, 5), 10.2))
    assert item["extra"] == "a2"
    ds[2]
    assert calls == [2, 2]  # again on every access (random augmentation), the cache is untouched
    assert torch.allclose(ds.slices[2]["image"], torch.full((1, 6, 5), 1.02))


def test_unlabeled_keys_image_only():
    items = [{"case": "u", "depth": 3, "value": 5.0}]

    def image_only(item):
        out = _volume(item)
        del out["label"]
        return out

    ds = SliceDataset(items, image_only, keys=("image",))
    assert len(ds) == 3
    item = ds[1]
    assert set(item) == {"image", "case", "slice"}
    assert tuple(item["image"].shape) == (1, 6, 5) and item["image"].dtype == torch.float32


def test_with_volume_preprocessing_and_dataloader(tmp_path):
    affine = np.diag([1.5, 1.5, 10.0, 1.0])
    affine[:3, 3] = 5.0
    paths = []
    for i, depth in enumerate((3, 5)):
        image = np.random.default_rng(i).integers(0, 900, (20, 24, depth)).astype(np.int16)
        label = np.zeros((20, 24, depth), np.uint8)
        label[5:15, 6:18] = 1 + i
        nib.save(nib.Nifti1Image(image, affine), str(tmp_path / f"i{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(tmp_path / f"l{i}.nii.gz"))
        paths.append({"image": str(tmp_path / f"i{i}.nii.gz"), "label": str(tmp_path / f"l{i}.nii.gz"), "case": f"v{i}"})
    paths[1]["slices"] = [4, 0]
    ds = SliceDataset(paths, volume_preprocessing(spatial_size=16))
    assert len(ds) == 3 + 2
    assert [ds[i]["slice"] for i in range(5)] == [0, 1, 2, 4, 0]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)))
    assert tuple(batch["image"].shape) == (5, 1, 16, 16) and tuple(batch["label"].shape) == (5, 1, 16, 16)
    assert batch["case"] == ["v0", "v0", "v0", "v1", "v1"]
    assert batch["slice"].tolist() == [0, 1, 2, 4, 0]
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0
    assert set(torch.unique(batch["label"][:3]).tolist()) == {0.0, 1.0}
    assert set(torch.unique(batch["label"][3:]).tolist()) == {0.0, 2.0}


def test_distinct_case_sampler_batches_hold_different_cases():
    from custom.data.slices import DistinctCaseSampler

    items = [{"case": f"p{i // 2}", "depth": 3 + i % 4, "value": float(i)} for i in range(12)]  # 6 cases, 2 volumes each
    ds = SliceDataset(items, _volume)
    sampler = DistinctCaseSampler(ds, batch_size=4)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, drop_last=True)
    batches = list(loader)
    assert len(batches) == len(ds) // 4 and len(sampler) == len(batches) * 4
    for batch in batches:
        assert len(set(batch["case"])) == 4  # no two slices of one patient: no negatives from the same volume
    seen = {c for b in batches for c in b["case"]}
    assert seen == {f"p{i}" for i in range(6)}
    torch.manual_seed(0)
    again = [b["case"] for b in torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, drop_last=True)]
    assert again == [b["case"] for b in batches]  # seeded from torch's RNG: reproducible, restored on resume
    few = list(torch.utils.data.DataLoader(ds, batch_size=8, sampler=DistinctCaseSampler(ds, batch_size=8), drop_last=True))
    for batch in few:  # 6 cases, batches of 8: all 6 cases, then 2 repeats
        assert len(set(batch["case"])) == 6
