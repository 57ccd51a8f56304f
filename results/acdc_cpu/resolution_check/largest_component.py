"""Score the saved test predictions of finished runs (``--save_predictions``, as the runner evaluates) with and without
the largest 3D connected component of each class. Usage: ``python largest_component.py RUN_DIR [RUN_DIR ...]``;
reads the ground truth from /work/shared/data/acdc (edit ACDC below)."""
import sys, glob, os
import numpy as np, nibabel as nib
from scipy import ndimage
from custom.metrics import volume_metrics
ACDC = "/work/shared/data/acdc"
LABELS = {"RV": 1, "MYO": 2, "LV": 3}
def lcc(pred):
    out = np.zeros_like(pred)
    for v in LABELS.values():
        m = pred == v
        lab, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum(m, lab, range(1, n + 1)); m = lab == (1 + int(np.argmax(sizes)))
        out[m] = v
    return out
for run in sys.argv[1:]:
    rows = {"raw": [], "lcc": []}
    for p in sorted(glob.glob(f"{run}/eval/predictions/*/*_seg.nii.gz")):
        name = os.path.basename(p).replace("_seg", "")
        gt_img = nib.load(os.path.join(ACDC, os.path.basename(os.path.dirname(p)), name.replace(".nii.gz", "_gt.nii.gz")))
        gt = np.asarray(gt_img.dataobj).astype(np.int64); pred = np.asarray(nib.load(p).dataobj).astype(np.int64)
        sp = gt_img.header.get_zooms()[:3]
        rows["raw"].append(volume_metrics(pred, gt, sp, LABELS)); rows["lcc"].append(volume_metrics(lcc(pred), gt, sp, LABELS))
    for k, r in rows.items():
        print(run.split("/runs/")[-1], k, len(r), " ".join(f"{m}={np.mean([x[m] for x in r]):.4f}" for m in ["dice_RV","dice_MYO","dice_LV","dice_mean","hd95_mean"]))
