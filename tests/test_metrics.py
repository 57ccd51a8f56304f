"""Tests for custom.metrics and custom.handlers.VolumeMetricsSaver: known answers, a MONAI cross-check, the handler."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from scipy import ndimage

from monai.data import MetaTensor
from monai.metrics import compute_dice, compute_hausdorff_distance

from custom.handlers import VolumeMetricsSaver
from custom.metrics import (
    structure_metrics,
    summarize,
    surface_distances,
    volume_metrics,
    write_metrics_csv,
    write_summary,
)

LABELS = {"RV": 1, "MYO": 2, "LV": 3}


def box(shape, lo, hi):
    """Boolean array of ``shape`` that is True on the box [lo, hi) (per-axis bounds)."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_identical_masks():
    mask = box((32, 32), (8, 10), (20, 25))
    res = structure_metrics(mask, mask.copy(), (0.7, 1.3))
    assert res == {"dice": 1.0, "asd": 0.0, "hd": 0.0, "hd95": 0.0, "empty_pred": False, "empty_gt": False}


def test_offset_squares_known_values():
    # 10x10 squares shifted by 2 rows; every surface distance is 0, 1 or 2 voxels (counted by hand):
    # per direction 16 zeros, 4 ones and 16 twos, so ASD = 1 voxel, HD = HD95 = 2 voxels, Dice = 80 / 100.
    pred = box((40, 40), (10, 10), (20, 20))
    gt = box((40, 40), (12, 10), (22, 20))
    d_pg, d_gp = surface_distances(pred, gt, (1.5, 1.5))
    assert len(d_pg) == len(d_gp) == 36
    np.testing.assert_allclose(np.sort(d_pg), np.sort(d_gp))
    assert (np.isclose(d_pg, 0).sum(), np.isclose(d_pg, 1.5).sum(), np.isclose(d_pg, 3.0).sum()) == (16, 4, 16)
    res = structure_metrics(pred, gt, (1.5, 1.5))
    assert res["dice"] == pytest.approx(0.8)
    assert res["asd"] == pytest.approx(1.5)
    assert res["hd"] == pytest.approx(3.0)
    assert res["hd95"] == pytest.approx(3.0)


@pytest.mark.parametrize("k", [1, 3])
def test_anisotropic_spacing_scales_along_the_shift_axis(k):
    spacing = (2.0, 0.5)
    pred = box((40, 40), (10, 10), (20, 20))
    down = box((40, 40), (10 + k, 10), (20 + k, 20))
    right = box((40, 40), (10, 10 + k), (20, 20 + k))
    assert structure_metrics(pred, down, spacing)["hd"] == pytest.approx(k * 2.0)
    assert structure_metrics(pred, right, spacing)["hd"] == pytest.approx(k * 0.5)


def test_3d_cubes_offset_through_slices():
    pred = box((20, 20, 12), (5, 5, 3), (15, 15, 7))
    gt = box((20, 20, 12), (5, 5, 5), (15, 15, 9))
    res = structure_metrics(pred, gt, (1.25, 1.25, 3.0))
    assert res["hd"] == pytest.approx(2 * 3.0)
    assert res["dice"] == pytest.approx(2 * 2 / (4 + 4))
    assert 0 < res["asd"] < res["hd95"] <= res["hd"]


def test_mask_touching_the_border_has_a_surface_there():
    pred = box((10, 10), (0, 0), (10, 4))
    gt = box((10, 10), (0, 0), (10, 5))
    d_pg, d_gp = surface_distances(pred, gt, (1.0, 1.0))
    assert d_pg.size == 10 + 10 + 2 * 2  # first and last rows, first and last columns
    assert d_gp.max() == pytest.approx(1.0)


def test_connectivity_changes_the_surface_of_non_boxes():
    disk = np.hypot(*np.mgrid[-10:11, -10:11]) <= 7
    full = surface_distances(disk, disk, (1.0, 1.0))[0].size
    face = surface_distances(disk, disk, (1.0, 1.0), connectivity=1)[0].size
    assert full > face
    with pytest.raises(ValueError, match="connectivity"):
        surface_distances(disk, disk, (1.0, 1.0), connectivity=3)


def test_empty_masks_rule():
    shape, spacing = (20, 30), (1.0, 2.0)
    empty = np.zeros(shape, dtype=bool)
    some = box(shape, (5, 5), (8, 9))
    both = structure_metrics(empty, empty, spacing)
    assert both == {"dice": 1.0, "asd": 0.0, "hd": 0.0, "hd95": 0.0, "empty_pred": True, "empty_gt": True}
    diagonal = math.hypot(20 * 1.0, 30 * 2.0)
    missed = structure_metrics(empty, some, spacing)
    assert missed == {
        "dice": 0.0, "asd": diagonal, "hd": diagonal, "hd95": diagonal, "empty_pred": True, "empty_gt": False
    }
    spurious = structure_metrics(some, empty, spacing)
    assert (spurious["dice"], spurious["hd95"], spurious["empty_pred"], spurious["empty_gt"]) == (
        0.0, diagonal, False, True
    )
    with pytest.raises(ValueError, match="empty"):
        surface_distances(empty, some, spacing)


def test_empty_rule_in_3d_is_finite():
    empty = np.zeros((8, 8, 4), dtype=bool)
    res = structure_metrics(empty, box((8, 8, 4), (1, 1, 1), (3, 3, 2)), (1.0, 1.0, 10.0))
    assert res["hd"] == pytest.approx(math.sqrt(8**2 + 8**2 + 40**2))
    assert all(math.isfinite(res[k]) for k in ("dice", "asd", "hd", "hd95"))


def label_volume():
    """(24, 24, 6) label map with RV (1), MYO ring (2) and LV (3)."""
    vol = np.zeros((24, 24, 6), dtype=np.int64)
    vol[4:20, 4:10, 1:5] = 1
    vol[10:20, 10:20, 1:5] = 2
    vol[12:18, 12:18, 1:5] = 3
    return vol


def test_volume_metrics_keys_and_means():
    gt = label_volume()
    pred = gt.copy()
    pred[pred == 1] = 0  # RV missed entirely
    pred[12:18, 12:18, 1:3] = 2  # half of the LV labelled myocardium
    spacing = (1.5, 1.5, 8.0)
    res = volume_metrics(pred, gt, spacing, LABELS)
    per_structure = [f"{m}_{n}" for n in LABELS for m in ("dice", "asd", "hd", "hd95", "empty_pred", "empty_gt")]
    assert list(res) == per_structure + ["dice_mean", "asd_mean", "hd_mean", "hd95_mean"]
    assert res["dice_RV"] == 0.0 and res["empty_pred_RV"] and not res["empty_gt_RV"]
    assert res["hd_RV"] == pytest.approx(math.sqrt(36**2 + 36**2 + 48**2))
    assert res["dice_LV"] == pytest.approx(2 * 72 / (72 + 144))
    for metric in ("dice", "asd", "hd", "hd95"):
        assert res[f"{metric}_mean"] == pytest.approx(np.mean([res[f"{metric}_{n}"] for n in LABELS]))


def test_volume_metrics_accepts_tensors_and_2d():
    gt = torch.as_tensor(label_volume()[..., 2])
    res = volume_metrics(gt, gt, (1.0, 1.0), LABELS)
    assert res["dice_mean"] == 1.0 and res["hd_mean"] == 0.0


def test_volume_metrics_validation():
    gt = label_volume()
    with pytest.raises(ValueError, match=r"\(24, 24, 6\).*\(24, 24, 5\)"):
        volume_metrics(gt, gt[..., :5], (1.0, 1.0, 1.0), LABELS)
    with pytest.raises(ValueError, match="one value per spatial axis"):
        volume_metrics(gt, gt, (1.0, 1.0), LABELS)
    with pytest.raises(ValueError, match="positive"):
        volume_metrics(gt, gt, (1.0, 0.0, 1.0), LABELS)
    with pytest.raises(ValueError, match="positive"):
        volume_metrics(gt, gt, (1.0, -2.0, 1.0), LABELS)


def test_cross_check_with_monai():
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.standard_normal((28, 28, 14)), 2.0)
    pred = field > 0.02
    gt = ndimage.shift(field, (1, -1, 0), order=0) > 0.0
    spacing = (1.1, 0.9, 2.5)
    y_pred = torch.as_tensor(pred[None, None]).float()
    y = torch.as_tensor(gt[None, None]).float()
    res = structure_metrics(pred, gt, spacing)
    assert res["dice"] == pytest.approx(compute_dice(y_pred, y).item(), abs=1e-6)

    # with MONAI's face-connected surface, the maximum and the per-direction 95th percentiles are identical
    monai_hd = compute_hausdorff_distance(y_pred, y, spacing=spacing).item()
    monai_hd95 = compute_hausdorff_distance(y_pred, y, spacing=spacing, percentile=95).item()
    d_pg, d_gp = surface_distances(pred, gt, spacing, connectivity=1)
    assert max(d_pg.max(), d_gp.max()) == pytest.approx(monai_hd, rel=1e-5)
    assert max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)) == pytest.approx(monai_hd95, rel=1e-5)
    assert structure_metrics(pred, gt, spacing, connectivity=1)["hd"] == pytest.approx(monai_hd, rel=1e-5)

    # the default (full-connectivity) surface is a superset of MONAI's: values differ by less than one voxel
    voxel_diagonal = float(np.linalg.norm(spacing))
    assert abs(res["hd"] - monai_hd) <= voxel_diagonal
    assert abs(res["hd95"] - monai_hd95) <= voxel_diagonal


def test_summarize_mean_and_sample_std():
    rows = [
        {"case": "a", "dice_LV": 0.8, "empty_pred_LV": False},
        {"case": "b", "dice_LV": 0.6, "empty_pred_LV": True},
        {"case": "c", "dice_LV": 1.0, "empty_pred_LV": False, "extra": 5.0},
    ]
    summary = summarize(rows)
    assert list(summary) == ["dice_LV", "empty_pred_LV", "extra"]
    assert summary["dice_LV"]["mean"] == pytest.approx(0.8)
    assert summary["dice_LV"]["std"] == pytest.approx(0.2)  # sample std, ddof=1
    assert summary["empty_pred_LV"]["mean"] == pytest.approx(1 / 3)
    assert summary["extra"] == {"mean": 5.0, "std": 0.0, "n": 1}
    assert summarize([]) == {}


def test_writers_round_trip(tmp_path):
    rows = [{"case": "a", "dice_LV": 0.5, "empty_gt_LV": True}, {"case": "b", "dice_LV": 1.0, "hd_LV": 2.0}]
    write_metrics_csv(rows, tmp_path / "out" / "metrics.csv")
    back = read_csv(tmp_path / "out" / "metrics.csv")
    assert back == [
        {"case": "a", "dice_LV": "0.5", "empty_gt_LV": "1", "hd_LV": ""},
        {"case": "b", "dice_LV": "1", "empty_gt_LV": "", "hd_LV": "2"},
    ]
    summary = summarize(rows)
    write_summary(summary, tmp_path / "out" / "summary.csv")
    write_summary(summary, tmp_path / "out" / "summary.json")
    table = {r["metric"]: r for r in read_csv(tmp_path / "out" / "summary.csv")}
    assert float(table["dice_LV"]["mean"]) == pytest.approx(0.75) and table["dice_LV"]["n"] == "2"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["hd_LV"] == {"mean": 2.0, "std": 0.0, "n": 1}
    assert sorted(os.listdir(tmp_path / "out")) == ["metrics.csv", "summary.csv", "summary.json"]


def meta_volume(array, spacing, filename):
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    return MetaTensor(torch.as_tensor(array)[None], affine=affine, meta={"filename_or_obj": filename})


def one_hot(label_map, num_classes=4):
    return torch.nn.functional.one_hot(torch.as_tensor(label_map), num_classes).permute(3, 0, 1, 2).float()


def test_volume_metrics_saver_on_an_ignite_engine(tmp_path, caplog):
    spacing = (1.5, 1.5, 8.0)
    gt = label_volume()
    shifted = np.roll(gt, 1, axis=0)
    cases = [("/data/p1.nii.gz", gt, gt), ("/data/p2.nii.gz", shifted, gt)]

    def step(engine, batch):
        name, pred, label = cases[batch]
        label_mt = meta_volume(label, spacing, name)
        # the first case gives an arg-maxed label map, the second a one-hot prediction
        pred_t = meta_volume(pred, spacing, name) if batch == 0 else MetaTensor(one_hot(pred), meta=label_mt.meta)
        return [{"image": meta_volume(label.astype(np.float32), spacing, name), "label": label_mt, "pred": pred_t}]

    engine = Engine(step)
    saver = VolumeMetricsSaver(tmp_path / "eval", labels=LABELS)
    saver.attach(engine)
    with caplog.at_level("INFO", logger="custom.handlers.VolumeMetricsSaver"):
        engine.run([0, 1], max_epochs=2)

    rows = read_csv(tmp_path / "eval" / "metrics.csv")
    assert [r["case"] for r in rows] == ["/data/p1.nii.gz", "/data/p2.nii.gz"]  # reset between epochs
    assert float(rows[0]["dice_mean"]) == 1.0 and float(rows[0]["hd95_mean"]) == 0.0
    expected = volume_metrics(shifted, gt, spacing, LABELS)
    for key in ("dice_RV", "hd_LV", "hd95_mean", "asd_MYO"):
        assert float(rows[1][key]) == pytest.approx(expected[key], rel=1e-5)
    assert expected["hd_LV"] == pytest.approx(1.5)  # the spacing came from the affine
    summary = {r["metric"]: r for r in read_csv(tmp_path / "eval" / "summary.csv")}
    assert float(summary["dice_mean"]["mean"]) == pytest.approx((1.0 + expected["dice_mean"]) / 2, rel=1e-5)
    assert summary["dice_mean"]["n"] == "2"
    assert "volume metrics over 2 cases" in caplog.text


def test_volume_metrics_saver_fixed_spacing_and_missing_meta(tmp_path):
    gt = label_volume()

    def step(engine, batch):
        return [{"pred": torch.as_tensor(gt)[None], "label": torch.as_tensor(gt)[None]}]

    engine = Engine(step)
    VolumeMetricsSaver(tmp_path, labels={"LV": 3}, spacing=(1.0, 1.0, 1.0)).attach(engine)
    engine.run([0], max_epochs=1)
    assert read_csv(tmp_path / "metrics.csv")[0]["case"] == "case_0"

    engine = Engine(step)
    VolumeMetricsSaver(tmp_path / "b", labels={"LV": 3}).attach(engine)
    with pytest.raises(ValueError, match="spacing"):
        engine.run([0], max_epochs=1)


class _OneHotOfImage(torch.nn.Module):
    """Stand-in network: the image holds the labels; returns their one-hot 'logits' (B, 4, H, W, D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x[:, 0].long(), 4).permute(0, 4, 1, 2, 3).float()


def test_volume_metrics_saver_with_supervised_evaluator(tmp_path):
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.transforms import AsDiscreted

    spacing = (1.5, 1.5, 8.0)
    gt = label_volume()
    data = [
        {"image": meta_volume(gt.astype(np.float32), spacing, "p1.nii.gz"), "label": meta_volume(gt, spacing, "p1")},
        {
            "image": meta_volume(np.roll(gt, 2, axis=1).astype(np.float32), spacing, "p2.nii.gz"),
            "label": meta_volume(gt, spacing, "p2"),
        },
    ]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=2),
        network=_OneHotOfImage(),
        postprocessing=AsDiscreted(keys="pred", argmax=True),
    )
    VolumeMetricsSaver(tmp_path, labels=LABELS).attach(evaluator)
    evaluator.run()
    rows = read_csv(tmp_path / "metrics.csv")
    assert [r["case"] for r in rows] == ["p1.nii.gz", "p2.nii.gz"]
    assert float(rows[0]["dice_mean"]) == 1.0
    expected = volume_metrics(np.roll(gt, 2, axis=1), gt, spacing, LABELS)
    assert float(rows[1]["hd95_mean"]) == pytest.approx(expected["hd95_mean"], rel=1e-5)
    assert expected["hd_LV"] == pytest.approx(3.0)
