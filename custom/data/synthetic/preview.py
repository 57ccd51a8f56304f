"""Preview figures of a generated dataset: a few cases, labels overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
from scipy import ndimage

from custom.data.synthetic.cache import check_layout
from custom.data.synthetic.image_model import PathLike
from custom.data.synthetic.mmwhs import MMWHS_LABELS

__all__ = ["save_preview"]

_Panel = tuple[str, np.ndarray, Union[np.ndarray, None], float]  # title, image (x, y), labels (x, y) or None, aspect


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _acdc_panels(root: Path, patients: int = 3) -> list[list[_Panel]]:
    """Rows of panels (ED image, ED mid, ES mid, apical slice) for the first ``patients`` patients."""
    rows = []
    for case_dir in sorted(root.glob("patient[0-9][0-9][0-9]"))[:patients]:
        info = dict(line.split(":", 1) for line in (case_dir / "Info.cfg").read_text().splitlines() if ":" in line)
        es = int(info["ES"])
        ed_img, ed_lab = (_load(case_dir / f"{case_dir.name}_frame01{s}.nii.gz") for s in ("", "_gt"))
        es_img, es_lab = (_load(case_dir / f"{case_dir.name}_frame{es:02d}{s}.nii.gz") for s in ("", "_gt"))
        mid, apex = ed_img.shape[2] // 2, ed_img.shape[2] - 1
        name = f"{case_dir.name} ({info['Group'].strip()})"
        rows.append([
            (f"{name} ED", ed_img[:, :, mid], None, 1.0),
            (f"ED slice {mid}", ed_img[:, :, mid], ed_lab[:, :, mid], 1.0),
            (f"ES slice {mid}", es_img[:, :, mid], es_lab[:, :, mid], 1.0),
            (f"ED apical slice {apex}", ed_img[:, :, apex], ed_lab[:, :, apex], 1.0),
        ])
    return rows


def _mmwhs_panels(root: Path, cases: int = 3) -> list[list[_Panel]]:
    """Rows of panels (axial image, axial, coronal, sagittal with labels) through the LV of the first cases."""
    rows = []
    for image_path in sorted(root.glob("mr_train_*_image.nii.gz"))[:cases]:
        nii = nib.load(str(image_path))
        image, labels = np.asanyarray(nii.dataobj), _load(Path(str(image_path).replace("_image", "_label")))
        sx, sy, sz = nii.header.get_zooms()[:3]
        cx, cy, cz = (int(round(c)) for c in ndimage.center_of_mass(labels == MMWHS_LABELS["LV"]))
        name = image_path.name.replace("_image.nii.gz", "")
        rows.append([
            (f"{name} axial", image[:, :, cz], None, sy / sx),
            ("axial", image[:, :, cz], labels[:, :, cz], sy / sx),
            ("coronal", image[:, cy, :], labels[:, cy, :], sz / sx),
            ("sagittal", image[cx, :, :], labels[cx, :, :], sz / sy),
        ])
    return rows


# overlay colours shared by both layouts: RV blue, MYO green, LV red
_OVERLAY = {
    1: "#1f4fff", 2: "#3cb44b", 3: "#e6194b",
    205: "#3cb44b", 420: "#f58231", 500: "#e6194b", 550: "#ffe119", 600: "#1f4fff", 820: "#f032e6", 850: "#42d4f4",
}


def _overlay_rgba(labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(x, y) labels to an (x, y, 4) RGBA overlay, transparent on background."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*labels.shape, 4))
    for value, colour in _OVERLAY.items():
        rgba[labels == value] = to_rgba(colour, alpha)
    return rgba


def _plot_rows(rows: list[list[_Panel]], png_path: PathLike, panel_inches: float = 2.4) -> Path:
    """Draw panels (image grey, labels as a semi-transparent overlay) on a grid and save a palette PNG."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    ncols = max(len(r) for r in rows)
    fig = Figure(figsize=(panel_inches * ncols, panel_inches * len(rows)))
    FigureCanvasAgg(fig)  # Agg rendering without touching pyplot's global backend
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (title, image, labels, aspect) in enumerate(row):
            # arrays are (x, y) in-plane or (., z): show x left-right and, for z, superior at the top
            flip = title in ("coronal", "sagittal")
            orient = (lambda a: np.swapaxes(a, 0, 1)[::-1]) if flip else (lambda a: np.swapaxes(a, 0, 1))
            lo, hi = np.percentile(image, (0.5, 99.5))
            ax = axes[r, c]
            ax.imshow(orient(image), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            if labels is not None:
                ax.imshow(orient(_overlay_rgba(labels)), aspect=aspect, interpolation="nearest")
            ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    # an adaptive palette keeps the noisy greyscale figure small
    Image.open(buffer).convert("RGB").quantize(colors=128).save(png_path, optimize=True)
    return png_path


def save_preview(dataset_dir: PathLike, png_path: PathLike, layout: str = "acdc") -> Path:
    """Save a PNG of a few cases of a generated dataset, labels overlaid; returns ``png_path``.

    ACDC: one row per patient (first three) with the ED mid slice alone, then ED mid, ES mid and ED apical
    slices with labels. MM-WHS: one row per case with axial, coronal and sagittal slices through the LV.
    """
    check_layout(layout)
    rows = _acdc_panels(Path(dataset_dir)) if layout == "acdc" else _mmwhs_panels(Path(dataset_dir))
    if not rows:
        raise FileNotFoundError(f"no {layout} cases found in {dataset_dir}.")
    return _plot_rows(rows, png_path)
