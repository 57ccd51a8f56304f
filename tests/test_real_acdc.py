"""The data pipeline on the real ACDC development copy (../shared/data/acdc): acdc_paper L8 c1 datalist,
preprocessing and 2D slice batches. Skipped where the shared folder is absent."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest
import torch

from custom.data.datalist import load_split, main
from custom.data.slices import SliceDataset
from custom.data.transforms import volume_preprocessing

ACDC_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "acdc"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not ACDC_DIR.is_dir(), reason=f"real ACDC data not found at {ACDC_DIR} (../shared/data/acdc)"),
]

WITHHELD = [f"patient{n:03d}" for start in (7, 27, 47, 67, 87) for n in range(start, start + 4)]
L8_C1 = {f"patient{n:03d}" for n in (2, 22, 42, 62, 95, 3, 23, 43)}


@pytest.fixture(scope="module")
def datalist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real_acdc") / "acdc_paper_L8_c1.json"
    code = main(["--dataset-dir", str(ACDC_DIR), "--protocol", "acdc_paper", "--labeled", "L8", "--subset", "c1",
                 "--allow-missing", "--out", str(out)])
    assert code == 0
    return out


def test_acdc_paper_l8_c1_datalist(datalist):
    d = json.loads(datalist.read_text())
    assert d["name"] == "acdc_paper_L8_c1"
    assert d["missing"] == WITHHELD  # the 20 withheld test patients, and nothing else
    assert d["test"] == []
    assert len(d["training"]) == 16
    assert {i["case"] for i in d["training"]} == L8_C1
    assert sorted((i["case"], i["frame"]) for i in d["training"]) == sorted((c, f) for c in L8_C1 for f in (1, 2))
    assert len(d["validation"]) == 4
    assert sorted({i["case"] for i in d["validation"]}) == ["patient031", "patient071"]
    assert len(d["unlabeled"]) == 140
    assert not {i["case"] for i in d["unlabeled"]} & (L8_C1 | {"patient031", "patient071"} | set(WITHHELD))
    assert len(d["pretraining"]) == 16 + 140 + 4
    for item in d["training"] + d["validation"]:
        assert (ACDC_DIR / item["image"]).is_file() and (ACDC_DIR / item["label"]).is_file()


def test_labeled_slices_preprocessed(datalist):
    items = load_split(datalist, "training", ACDC_DIR)
    ds = SliceDataset(items, volume_preprocessing(spatial_size=128))
    assert len(ds) == sum(nib.load(item["image"]).shape[2] for item in items)
    assert len({(s["case"], s["slice"]) for s in ds.slices}) == len(ds) // 2  # ED and ES share slice indices
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (8, 1, 128, 128)
    assert tuple(batch["label"].shape) == (8, 1, 128, 128)
    assert batch["image"].dtype == torch.float32
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    present = set()
    for s in ds.slices:
        present |= set(torch.unique(s["label"]).tolist())
        assert float(s["image"].min()) >= 0.0 and float(s["image"].max()) <= 1.0
    assert present == {0, 1, 2, 3}
    # the heart is kept by the 128 x 128 centre crop: every volume still has LV pixels
    for case in L8_C1:
        lv = sum(int((s["label"] == 3).sum()) for s in ds.slices if s["case"] == case)
        assert lv > 0, case


def test_fov_fraction_of_the_configs_keeps_every_heart_whole():
    """The bundles' ``fov_fraction`` crops the border of geometry-less slices; on every volume of the shared copy
    the heart must stay inside the crop: no labeled pixel on the border rows or columns of the 128 px slice."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[1] / "bundles/ideal_finetune/configs/train.yaml"))
    pre = volume_preprocessing(keys=("image", "label"), spatial_size=128, fov_fraction=parser["fov_fraction"])
    for label in sorted(ACDC_DIR.glob("patient*/patient*_gt.nii.gz")):
        heart = pre({"image": str(label).replace("_gt", ""), "label": str(label)})["label"][0] > 0
        border = heart[[0, -1]].any() or heart[:, [0, -1]].any()
        assert heart.any() and not border, label.name
