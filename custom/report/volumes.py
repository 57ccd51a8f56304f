"""Reading and checking the NIfTI files of a patient, and its indices.

Every segmentation must carry its voxel spacing, and the spacing must not look unset (all zooms 1.0 with an identity
affine) unless a spacing is given, which then replaces the header spacing of every segmentation; it must be a 3D
volume of ACDC labels (0-3) with the shape of its image. Problems raise :class:`~custom.errors.ReportError` naming
the file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from custom.errors import ReportError, warn
from custom.report.acdc_files import CaseFiles
from custom.report.indices import LABELS, cardiac_indices

__all__ = [
    "header_spacing",
    "Segmentation",
    "load_segmentation",
    "mid_ventricular_slice",
    "Panel",
    "CaseResult",
    "analyse_case",
]


def _load_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    if not path.is_file():
        raise ReportError(f"{path}: file not found")
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises several types for unreadable files
        raise ReportError(f"{path}: cannot read as NIfTI ({e})") from None


def _spatial_shape(img: nib.spatialimages.SpatialImage, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise ReportError(f"{path}: expected a 3D volume, got shape {shape}")
    return shape[:3]  # type: ignore[return-value]


def header_spacing(img: nib.spatialimages.SpatialImage, path: Path) -> tuple[float, float, float]:
    """Voxel size (mm) from the header zooms; raises when it is missing or looks unset (1, 1, 1 + identity)."""
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if len(zooms) < 3 or not all(math.isfinite(z) and z > 0 for z in zooms):
        raise ReportError(f"{path}: no voxel spacing in the header (zooms {zooms}); pass --spacing SX SY SZ")
    if all(z == 1.0 for z in zooms) and np.allclose(img.affine, np.eye(4)):
        raise ReportError(
            f"{path}: voxel spacing looks unset (zooms 1 1 1 and identity affine); pass --spacing SX SY SZ"
        )
    return zooms  # type: ignore[return-value]


@dataclass
class Segmentation:
    """A label volume (X, Y, Z) with its voxel size in mm."""

    path: Path
    labels: np.ndarray
    spacing: tuple[float, float, float]


def load_segmentation(path: Path, spacing: Sequence[float] | None) -> Segmentation:
    """Read an ACDC label volume; ``spacing`` replaces the header spacing when given."""
    img = _load_nifti(path)
    shape = _spatial_shape(img, path)
    if spacing is None:
        voxel = header_spacing(img, path)
    else:
        voxel = tuple(float(s) for s in spacing)
        try:
            header = header_spacing(img, path)
        except ReportError:
            header = None
        if header is not None and not np.allclose(header, voxel, rtol=1e-3):
            warn(f"{path}: header spacing {header} differs from --spacing {voxel}; using --spacing")
    data = np.asarray(img.dataobj).reshape(shape)
    labels = np.rint(data).astype(np.int64)
    if not np.array_equal(labels, data):
        raise ReportError(f"{path}: not a label volume (non-integer values)")
    unexpected = sorted(set(np.unique(labels).tolist()) - {0, *LABELS.values()})
    if unexpected:
        raise ReportError(f"{path}: unexpected label value(s) {unexpected}; expected 0-3 (ACDC)")
    return Segmentation(path, labels, voxel)  # type: ignore[arg-type]


def mid_ventricular_slice(labels: np.ndarray) -> int:
    """Index along the last axis halfway through the slices that contain the LV (MYO or cavity).

    Falls back to any labelled slice, then to the middle of the volume.
    """
    for values in ((LABELS["MYO"], LABELS["LV"]), tuple(LABELS.values())):
        slices = np.flatnonzero(np.isin(labels, values).any(axis=(0, 1)))
        if slices.size:
            return int((slices[0] + slices[-1]) // 2)
    return labels.shape[2] // 2


@dataclass
class Panel:
    """What is drawn for one frame: a 2D image slice and the label slice on top of it."""

    title: str
    image: np.ndarray
    labels: np.ndarray


@dataclass
class CaseResult:
    """Indices of one patient (and of its reference), with the two panels of its figure."""

    files: CaseFiles
    indices: dict[str, float]
    reference: dict[str, float] | None
    panels: list[Panel] = field(default_factory=list)


def _panel(phase: str, frame: int | None, seg: Segmentation, image_path: Path) -> Panel:
    z = mid_ventricular_slice(seg.labels)
    img = _load_nifti(image_path)
    shape = _spatial_shape(img, image_path)
    if shape != seg.labels.shape:
        raise ReportError(
            f"shape mismatch: segmentation {seg.path} {seg.labels.shape} vs image {image_path} {shape}"
        )
    image = np.asarray(img.dataobj[:, :, z, ...]).reshape(shape[:2])
    label = f"{phase}" + ("" if frame is None else f" (frame {frame})") + f", slice {z}"
    return Panel(label, image.astype(np.float32), seg.labels[:, :, z])


def analyse_case(case: CaseFiles, spacing: Sequence[float] | None, density: float) -> CaseResult:
    """Load the files of one patient, check them, and compute its indices (and the reference's)."""
    ed, es = load_segmentation(case.ed_pred, spacing), load_segmentation(case.es_pred, spacing)
    panels = [_panel("ED", case.ed_frame, ed, case.ed_image), _panel("ES", case.es_frame, es, case.es_image)]
    indices = cardiac_indices(ed.labels, es.labels, ed.spacing, es.spacing, density)
    reference = None
    if case.ed_gt is not None and case.es_gt is not None:
        ed_gt, es_gt = load_segmentation(case.ed_gt, spacing), load_segmentation(case.es_gt, spacing)
        reference = cardiac_indices(ed_gt.labels, es_gt.labels, ed_gt.spacing, es_gt.spacing, density)
    for name in ("LV", "RV"):
        if math.isnan(indices[f"{name}_EF_pct"]):
            warn(f"{case.patient}: {name} EF undefined (no {name} cavity at ED in {case.ed_pred})")
    return CaseResult(case, indices, reference, panels)
