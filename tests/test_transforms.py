"""Tests of the volume preprocessing (custom.data.transforms): resampling, crop/pad, scaling, labels, inversion."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from custom.data.protocols import label_mapping, load_protocol
from custom.errors import find_input_error
from custom.data.transforms import KnownSpacingd, has_known_spacing, volume_preprocessing

SPACING = (3.0, 2.5, 8.0)
SHAPE = (40, 36, 5)


def _write(path: Path, array: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


@pytest.fixture
def spaced_volume(tmp_path):
    """int16 image with raw intensities and a uint8 label on a 3 x 2.5 x 8 mm grid with a non-zero origin."""
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (12.0, -30.0, 4.0)
    rng = np.random.default_rng(0)
    image = rng.integers(100, 1800, SHAPE).astype(np.int16)
    label = np.zeros(SHAPE, np.uint8)
    label[14:26, 12:24, :] = 3  # 12 x 12 voxels = 36 x 30 mm
    label[4:10, 4:10, 1:4] = 1
    label[30:34, 26:30, 2] = 2
    return {
        "image": _write(tmp_path / "img.nii.gz", image, affine),
        "label": _write(tmp_path / "lab.nii.gz", label, affine),
        "affine": affine,
        "label_array": label,
    }


def _steps(pipeline, data):
    """Run the Compose step by step; return {transform class name: output} (last one wins)."""
    out = {}
    for t in pipeline.transforms:
        data = t(data)
        out[type(t).__name__] = data
    return data, out


def test_resamples_in_plane_to_1_5mm_then_crops(spaced_volume):
    pre = volume_preprocessing(spatial_size=64)
    result, steps = _steps(pre, {"image": spaced_volume["image"], "label": spaced_volume["label"]})
    resampled = steps["KnownSpacingd"]
    expected = [SHAPE[0] * SPACING[0] / 1.5, SHAPE[1] * SPACING[1] / 1.5]
    for key in ("image", "label"):
        shape = resampled[key].shape
        assert shape[0] == 1
        assert abs(shape[1] - expected[0]) <= 1.5 and abs(shape[2] - expected[1]) <= 1.5
        assert shape[3] == SHAPE[2]  # slice count unchanged
        np.testing.assert_allclose(resampled[key].pixdim.numpy(), [1.5, 1.5, SPACING[2]], atol=1e-4)
    assert resampled["image"].shape[1] > 64 and resampled["image"].shape[2] < 64  # one axis cropped, one padded
    for key in ("image", "label"):
        assert tuple(result[key].shape) == (1, 64, 64, SHAPE[2])
        np.testing.assert_allclose(result[key].pixdim.numpy(), [1.5, 1.5, SPACING[2]], atol=1e-4)
    # the 36 x 30 mm LV block covers ~24 x 20 pixels at 1.5 mm on every slice (nearest neighbour)
    lv = (result["label"] == 3).sum(dim=(0, 1, 2))
    assert lv.shape == (SHAPE[2],)
    assert all(abs(int(n) - 24 * 20) <= 50 for n in lv), lv


def test_output_types_and_ranges(spaced_volume):
    result = volume_preprocessing(spatial_size=(48, 56))({"image": spaced_volume["image"], "label": spaced_volume["label"]})
    image, label = result["image"], result["label"]
    assert isinstance(image, MetaTensor) and isinstance(label, MetaTensor)
    assert image.dtype == torch.float32 and label.dtype == torch.uint8
    assert tuple(image.shape) == (1, 48, 56, 5) and tuple(label.shape) == (1, 48, 56, 5)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.max()) == pytest.approx(1.0) and float(image.min()) == pytest.approx(0.0)
    assert set(torch.unique(label).tolist()) <= {0, 1, 2, 3}
    assert set(torch.unique(label).tolist()) == {0, 1, 2, 3}  # small structures survive the resampling


def test_pixdim_none_keeps_native_grid(spaced_volume):
    result = volume_preprocessing(spatial_size=(40, 36), pixdim=None)({"image": spaced_volume["image"],
                                                                        "label": spaced_volume["label"]})
    assert tuple(result["label"].shape) == (1, *SHAPE)
    np.testing.assert_array_equal(result["label"][0].numpy(), spaced_volume["label_array"])


def test_identity_affine_skips_spacing(tmp_path):
    shape = (50, 44, 6)
    image = np.random.default_rng(1).random(shape).astype(np.float32)  # already normalised, like the shared ACDC copy
    label = np.zeros(shape, np.uint8)
    label[10:22, 10:22] = 3
    label[30:35, 5:9] = 1
    paths = {"image": _write(tmp_path / "i.nii.gz", image, np.eye(4)), "label": _write(tmp_path / "l.nii.gz", label, np.eye(4))}
    result, steps = _steps(volume_preprocessing(spatial_size=(50, 44)), dict(paths))
    assert not has_known_spacing(steps["EnsureChannelFirstd"]["image"])
    assert tuple(steps["KnownSpacingd"]["image"].shape) == (1, *shape)
    for key in ("image", "label"):
        assert "SpatialResample" not in [op["class"] for op in result[key].applied_operations]
        np.testing.assert_allclose(result[key].affine.numpy(), np.eye(4))
    np.testing.assert_array_equal(result["label"][0].numpy(), label)  # no 1 mm -> 1.5 mm shrink
    assert (result["label"] == 3).sum() == 12 * 12 * 6
    # intensities rescaled by percentiles, monotonically
    flat_in, flat_out = image.ravel(), result["image"][0].numpy().ravel()
    order = np.argsort(flat_in)
    assert np.all(np.diff(flat_out[order]) >= -1e-6)


def test_has_known_spacing_and_knownspacingd_passthrough():
    plain = torch.zeros(1, 4, 4, 2)
    assert not has_known_spacing(plain)
    assert not has_known_spacing(MetaTensor(plain, affine=torch.eye(4)))
    assert has_known_spacing(MetaTensor(plain, affine=torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0]))))
    shifted = torch.eye(4)
    shifted[0, 3] = 1.0
    assert has_known_spacing(MetaTensor(plain, affine=shifted))
    t = KnownSpacingd(keys=["image"], pixdim=(1.0, 1.0, -1))
    # a string (e.g. MONAI Label's image_path) or a plain tensor is left alone
    assert t({"image": "/some/path.nii.gz"}) == {"image": "/some/path.nii.gz"}
    out = t({"image": plain})
    assert out["image"] is plain
    # known spacing: resampled
    spaced = MetaTensor(torch.rand(1, 8, 8, 2), affine=torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0])))
    assert tuple(t({"image": spaced})["image"].shape) == (1, 15, 15, 2)


def test_mmwhs_label_values_mapped(tmp_path):
    proto = load_protocol("mmwhs_paper")
    raw = list(proto["labels"].values())
    shape = (30, 30, 4)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    label = np.zeros(shape, np.uint16)
    for i, value in enumerate(raw[1:]):  # a 3-pixel strip of each structure, 6 mm wide
        label[3 + 3 * i : 6 + 3 * i, 5:25, :] = value
    image = (label.astype(np.float32) + 50.0).astype(np.int16)
    paths = {"image": _write(tmp_path / "i.nii.gz", image, affine), "label": _write(tmp_path / "l.nii.gz", label, affine)}
    result = volume_preprocessing(spatial_size=48, label_values=raw)(paths)
    values = set(torch.unique(result["label"]).tolist())
    assert values == set(range(8))
    # each class lands where its raw value was (check the strip centres in mm, via the output affine)
    mapping = label_mapping(proto)
    inv = np.linalg.inv(result["label"].affine.numpy())
    for i, value in enumerate(raw[1:]):
        world = np.array([2.0 * (4 + 3 * i), 2.0 * 15, 2.0 * 2, 1.0])
        x, y, z = np.rint(inv @ world)[:3].astype(int)
        assert int(result["label"][0, x, y, z]) == mapping[value]
    # without label_values raw values above 255 are an error naming the label file, never wrapped into uint8
    with pytest.raises(Exception) as info:
        volume_preprocessing(spatial_size=48)(paths)
    error = find_input_error(info.value)
    assert error is not None and str(paths["label"]) in str(error) and "label values outside" in str(error)


def test_invertd_maps_prediction_back(spaced_volume):
    pre = volume_preprocessing(spatial_size=64)
    data = pre({"image": spaced_volume["image"], "label": spaced_volume["label"]})
    data["pred"] = data["label"].clone().float()  # a perfect prediction on the preprocessed grid
    out = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(data)
    pred = out["pred"]
    assert tuple(pred.shape) == (1, *SHAPE)
    np.testing.assert_allclose(pred.affine.numpy(), spaced_volume["affine"], atol=1e-4)
    original = spaced_volume["label_array"]
    inside = original == 3  # the big block lies inside the 64 x 64 crop
    assert np.all(pred[0].numpy()[inside] == 3)
    assert np.mean(pred[0].numpy() == original) > 0.99


def test_invertd_identity_affine_roundtrip(tmp_path):
    shape = (70, 50, 4)  # larger than the crop on one axis, smaller on the other
    label = np.zeros(shape, np.uint8)
    label[20:50, 15:35] = 2
    image = np.random.default_rng(2).random(shape).astype(np.float32)
    paths = {"image": _write(tmp_path / "i.nii.gz", image, np.eye(4)), "label": _write(tmp_path / "l.nii.gz", label, np.eye(4))}
    pre = volume_preprocessing(spatial_size=60, fov="crop")
    data = pre(paths)
    data["pred"] = data["label"].clone().float()
    pred = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert tuple(pred.shape) == (1, *shape)
    np.testing.assert_array_equal(pred[0].numpy(), label)


def test_fit_keeps_the_whole_field_of_view_and_inverts(tmp_path):
    """Without geometry, "fit" resizes the whole slice into the target (aspect kept, short side padded) where "crop"
    cuts whatever lies outside the central window; the inverse restores the original grid."""
    shape = (120, 80, 3)
    label = np.zeros(shape, np.uint8)
    label[2:22, 30:50] = 1  # near the border of the long axis: outside a central 60 px crop
    label[50:80, 20:60] = 3
    image = np.random.default_rng(3).random(shape).astype(np.float32)
    paths = {"image": _write(tmp_path / "i.nii.gz", image, np.eye(4)), "label": _write(tmp_path / "l.nii.gz", label, np.eye(4))}
    cropped = volume_preprocessing(spatial_size=60, fov="crop")(dict(paths))
    assert (cropped["label"] == 1).sum() == 0
    pre = volume_preprocessing(spatial_size=60, fov="fit")
    data, steps = _steps(pre, dict(paths))
    assert tuple(steps["FitFieldOfViewd"]["image"].shape) == (1, 60, 40, 3)  # 120 x 80 scaled by 1/2
    assert tuple(data["label"].shape) == (1, 60, 60, 3)
    assert (data["label"] == 1).sum() == pytest.approx(10 * 10 * 3, rel=0.1)
    assert (data["label"] == 3).sum() == pytest.approx(15 * 20 * 3, rel=0.1)
    onehot = torch.nn.functional.one_hot(data["label"][0].long(), 4).permute(3, 0, 1, 2).float()
    data["pred"] = MetaTensor(onehot, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
    pred = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    assert tuple(pred.shape) == (4, *shape)
    np.testing.assert_allclose(pred.affine.numpy(), np.eye(4))
    back = pred.argmax(0).numpy()
    for c in (1, 3):
        dice = 2 * ((back == c) & (label == c)).sum() / ((back == c).sum() + (label == c).sum())
        assert dice > 0.9, (c, dice)


def test_fit_fraction_magnifies_the_centre_and_inverts(tmp_path):
    """``fov_fraction=0.75`` fits the central 3/4 of the longest side: structures grow by 4/3 per axis, the border is
    cropped, and the inverse puts the labels back on the original grid with background where the crop removed."""
    shape = (120, 96, 3)
    label = np.zeros(shape, np.uint8)
    label[45:75, 30:60] = 3  # the heart, well inside the central 90 x 90 window
    label[2:10, 40:50] = 1  # near the border: outside the central 3/4 of the 120 px side
    image = np.random.default_rng(4).random(shape).astype(np.float32)
    paths = {"image": _write(tmp_path / "i.nii.gz", image, np.eye(4)), "label": _write(tmp_path / "l.nii.gz", label, np.eye(4))}
    whole = volume_preprocessing(spatial_size=60, fov="fit")(dict(paths))
    pre = volume_preprocessing(spatial_size=60, fov="fit", fov_fraction=0.75)
    data, steps = _steps(pre, dict(paths))
    assert tuple(steps["FitFieldOfViewd"]["image"].shape) == (1, 80, 64, 3)  # 120 x 96 scaled by 60 / 90
    assert tuple(data["label"].shape) == (1, 60, 60, 3)
    grown = (data["label"] == 3).sum() / (whole["label"] == 3).sum()
    assert float(grown) == pytest.approx((4 / 3) ** 2, rel=0.1)
    assert (data["label"] == 1).sum() == 0 and (whole["label"] == 1).sum() > 0
    onehot = torch.nn.functional.one_hot(data["label"][0].long(), 4).permute(3, 0, 1, 2).float()
    data["pred"] = MetaTensor(onehot, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
    back = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    assert tuple(back.shape) == (4, *shape)
    back = back.argmax(0).numpy()
    dice = 2 * ((back == 3) & (label == 3)).sum() / ((back == 3).sum() + (label == 3).sum())
    assert dice > 0.95
    assert (back == 1).sum() == 0 and (back[:10] == 0).all()  # cropped border comes back as background
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="fov_fraction"):
            volume_preprocessing(fov_fraction=bad)


def test_fit_leaves_images_with_spacing_to_the_resampling(spaced_volume):
    data, steps = _steps(volume_preprocessing(spatial_size=64, fov="fit"), {"image": spaced_volume["image"]})
    assert "Resize" not in [op["class"] for op in data["image"].applied_operations]
    with pytest.raises(ValueError, match="fov"):
        volume_preprocessing(fov="stretch")


def test_image_only_keys_and_no_load(spaced_volume):
    nii = nib.load(spaced_volume["image"])
    tensor = MetaTensor(torch.as_tensor(np.asarray(nii.dataobj, dtype=np.float32))[None], affine=torch.as_tensor(nii.affine))
    result = volume_preprocessing(keys=("image",), spatial_size=32, load=False)({"image": tensor})
    assert set(result) == {"image"}
    assert tuple(result["image"].shape) == (1, 32, 32, SHAPE[2])
    assert result["image"].dtype == torch.float32
    np.testing.assert_allclose(result["image"].pixdim.numpy()[:2], [1.5, 1.5], atol=1e-4)
