"""Cardiac function report from ACDC-style short-axis segmentations.

Labels follow ACDC: 0 background, 1 right-ventricular (RV) cavity, 2 left-ventricular myocardium (MYO),
3 left-ventricular (LV) cavity. Each patient needs one segmentation at end-diastole (ED) and one at end-systole (ES).

Indices
-------
Volumes come from voxel counts and the voxel size given by the NIfTI header zooms (or ``--spacing``):
``V = count * sx * sy * sz / 1000`` in ml (1 ml = 1000 mm^3). Per patient:

* LV EDV (ml): LV cavity volume at ED.
* LV ESV (ml): LV cavity volume at ES.
* LV SV (ml), stroke volume: ``EDV - ESV``.
* LV EF (%), ejection fraction: ``(EDV - ESV) / EDV * 100`` (undefined, reported as NaN with a warning, when
  EDV is 0).
* RV EDV, ESV, SV, EF: the same from the RV cavity.
* Myocardial volume at ED and at ES (ml), from the MYO label.
* LV myocardial mass (g): myocardial volume at ED times the density of myocardium, 1.05 g/ml.

Agreement with a reference (``--gt``)
-------------------------------------
The same indices are computed from the ground truth, and per patient the error ``prediction - reference``.
Over patients, for every index: the mean absolute error, the Pearson correlation coefficient (NaN with fewer than
two patients or a constant series), the mean bias (mean error) and the 95% limits of agreement of Bland and Altman,
``bias +- 1.96 * SD`` with SD the sample standard deviation of the errors (0 for a single patient).

Inputs
------
``--pred DIR`` is searched recursively for files named ``patientXXX_frameYY<suffix>.nii[.gz]``: for example
``patient001_frame01_seg.nii.gz`` as written by ``monai.transforms.SaveImage`` (possibly inside a folder per case,
``patient001_frame01/patient001_frame01_seg.nii.gz``), or ``patient001_frame01_gt.nii.gz``. ``--pred-suffix``
restricts the suffix (``_seg``, ``_gt``, or ``""`` for none); without it any suffix is accepted but each patient and
frame must match a single file. Images (``--image DIR``) are matched as ``patientXXX_frameYY.nii[.gz]`` and ground
truth (``--gt DIR``) as ``patientXXX_frameYY_gt.nii[.gz]`` (``--gt-suffix``), also recursively.

The ED and ES frame numbers of a patient come from ``ED: n`` and ``ES: n`` lines of ``patientXXX/Info.cfg`` (looked
for under the image, ground-truth and prediction folders, in that order); without it, a patient must have exactly two
frames, ED being the lower frame number and ES the higher. Alternatively, ``--pairs CSV`` lists the files, with the
columns ``patient, ed_pred, es_pred`` and optionally ``ed_image, es_image, ed_gt, es_gt`` (paths relative to the CSV
file); missing image or ground-truth columns are looked up in ``--image`` and ``--gt`` by file name.

Checks
------
Nothing is written unless every patient passes: the voxel spacing of every segmentation must be present and must not
look unset (all zooms 1.0 with an identity affine) unless ``--spacing SX SY SZ`` is given, which then replaces the
header spacing of every segmentation; each segmentation must have the shape of its image; a patient without an ED or
ES file is an error, or is skipped with a warning under ``--skip-incomplete``.

Outputs (in ``--out``)
----------------------
``clinical.csv`` (one row per patient, the indices above, and with ``--gt`` the reference values ``gt_*`` and errors
``err_*``), ``<patient>.png`` (a mid-ventricular slice at ED and ES with the RV, MYO and LV contours and the indices in
the title), and with ``--gt``: ``agreement.csv`` (one row per index) and ``bland_altman.png`` (LV EF, RV EF, LV EDV and
myocardial mass).

Example::

    python -m custom.report --pred runs/infer --image data/acdc --gt data/acdc --out runs/report --pred-suffix _seg
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure

from custom.metrics import write_metrics_csv

__all__ = [
    "LABELS",
    "MYOCARDIAL_DENSITY",
    "INDEX_COLUMNS",
    "ReportError",
    "structure_volumes_ml",
    "cardiac_indices",
    "agreement",
    "main",
]

#: ACDC label values.
LABELS: dict[str, int] = {"RV": 1, "MYO": 2, "LV": 3}
#: density of myocardium in g/ml.
MYOCARDIAL_DENSITY = 1.05
#: the per-patient indices, in the order of ``clinical.csv``.
INDEX_COLUMNS = (
    "LV_EDV_ml",
    "LV_ESV_ml",
    "LV_SV_ml",
    "LV_EF_pct",
    "RV_EDV_ml",
    "RV_ESV_ml",
    "RV_SV_ml",
    "RV_EF_pct",
    "MYO_ED_ml",
    "MYO_ES_ml",
    "MYO_mass_g",
)
#: the indices shown in the Bland-Altman figure.
BLAND_ALTMAN_COLUMNS = ("LV_EF_pct", "RV_EF_pct", "LV_EDV_ml", "MYO_mass_g")
CONTOUR_COLORS = {"RV": "tab:blue", "MYO": "tab:green", "LV": "tab:red"}
#: ``{patient: {frame: [paths]}}``
FrameTable = dict[str, dict[int, list[Path]]]
FRAME_RE = re.compile(r"^(?P<patient>patient\d+)_frame(?P<frame>\d+)(?P<suffix>.*?)\.nii(?:\.gz)?$")


class ReportError(Exception):
    """A problem with the inputs; the message names the file or patient."""


class MissingFrameError(ReportError):
    """A patient lacks its ED or ES file (skippable with ``--skip-incomplete``)."""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------- indices


def structure_volumes_ml(labels: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Volume in ml of each ACDC structure of a label volume.

    Args:
        labels: integer label volume of shape (X, Y, Z).
        spacing: voxel size in mm, ``(sx, sy, sz)``.

    Returns:
        ``{"RV": ml, "MYO": ml, "LV": ml}``.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {name: int(np.count_nonzero(labels == value)) * voxel_ml for name, value in LABELS.items()}


def _ejection_fraction(edv: float, esv: float) -> float:
    return (edv - esv) / edv * 100.0 if edv > 0 else math.nan


def cardiac_indices(
    ed_labels: np.ndarray,
    es_labels: np.ndarray,
    ed_spacing: Sequence[float],
    es_spacing: Sequence[float],
    density: float = MYOCARDIAL_DENSITY,
) -> dict[str, float]:
    """LV and RV volumes, stroke volumes and ejection fractions, and myocardial volumes and mass.

    Args:
        ed_labels: end-diastolic label volume (X, Y, Z), ACDC labels.
        es_labels: end-systolic label volume (X', Y', Z').
        ed_spacing: ED voxel size in mm.
        es_spacing: ES voxel size in mm.
        density: myocardial density in g/ml.

    Returns:
        a dictionary with the keys of :data:`INDEX_COLUMNS` (ml, %, g); EF is NaN when EDV is 0.
    """
    ed, es = structure_volumes_ml(ed_labels, ed_spacing), structure_volumes_ml(es_labels, es_spacing)
    out: dict[str, float] = {}
    for name in ("LV", "RV"):
        out[f"{name}_EDV_ml"] = ed[name]
        out[f"{name}_ESV_ml"] = es[name]
        out[f"{name}_SV_ml"] = ed[name] - es[name]
        out[f"{name}_EF_pct"] = _ejection_fraction(ed[name], es[name])
    out["MYO_ED_ml"] = ed["MYO"]
    out["MYO_ES_ml"] = es["MYO"]
    out["MYO_mass_g"] = ed["MYO"] * density
    return out


def agreement(pred: Sequence[float], ref: Sequence[float]) -> dict[str, float]:
    """Agreement of paired measurements; pairs with a NaN are left out.

    Args:
        pred: values from the predictions, one per patient.
        ref: the reference values, same length.

    Returns:
        ``n``, ``mae`` (mean absolute error), ``pearson_r``, ``bias`` (mean of ``pred - ref``), ``sd`` (sample SD of
        the errors, 0 when n == 1), ``loa_lower`` and ``loa_upper`` (``bias -+ 1.96 sd``). With no valid pair all
        values but ``n`` are NaN; ``pearson_r`` is NaN when n < 2 or either series is constant.
    """
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    valid = np.isfinite(p) & np.isfinite(r)
    p, r = p[valid], r[valid]
    n = int(p.size)
    if n == 0:
        nan = math.nan
        return {"n": 0, "mae": nan, "pearson_r": nan, "bias": nan, "sd": nan, "loa_lower": nan, "loa_upper": nan}
    err = p - r
    bias = float(err.mean())
    sd = float(err.std(ddof=1)) if n > 1 else 0.0
    pearson = math.nan
    if n > 1 and p.std() > 0 and r.std() > 0:
        pearson = float(np.corrcoef(p, r)[0, 1])
    return {
        "n": n,
        "mae": float(np.abs(err).mean()),
        "pearson_r": pearson,
        "bias": bias,
        "sd": sd,
        "loa_lower": bias - 1.96 * sd,
        "loa_upper": bias + 1.96 * sd,
    }


# ------------------------------------------------------------------------------------------------ file pairing


@dataclass
class CaseFiles:
    """The files of one patient; frames are None when unknown (``--pairs`` with unconventional names)."""

    patient: str
    ed_pred: Path
    es_pred: Path
    ed_image: Path
    es_image: Path
    ed_gt: Path | None = None
    es_gt: Path | None = None
    ed_frame: int | None = None
    es_frame: int | None = None


def scan_frames(root: Path, suffix: str | None) -> FrameTable:
    """``{patient: {frame: [paths]}}`` for the files under ``root`` matching ``patientXXX_frameYY<suffix>.nii[.gz]``.

    ``suffix=None`` accepts any suffix.
    """
    found: FrameTable = {}
    for path in sorted(root.rglob("*.nii*")):
        match = FRAME_RE.match(path.name)
        if match is None or (suffix is not None and match["suffix"] != suffix) or not path.is_file():
            continue
        found.setdefault(match["patient"], {}).setdefault(int(match["frame"]), []).append(path)
    return found


def _single(paths: list[Path], patient: str, frame: int, hint: str) -> Path:
    if len(paths) > 1:
        names = ", ".join(str(p) for p in paths)
        raise ReportError(f"{patient} frame {frame}: several files match ({names}); {hint}")
    return paths[0]


def read_info_cfg(path: Path) -> tuple[int, int]:
    """ED and ES frame numbers from an ACDC ``Info.cfg`` (``ED: 1`` and ``ES: 12`` lines)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip().upper()] = value.strip()
    try:
        return int(values["ED"]), int(values["ES"])
    except (KeyError, ValueError):
        raise ReportError(f"{path}: expected integer 'ED:' and 'ES:' lines") from None


def find_info_cfgs(roots: Sequence[Path | None]) -> dict[str, Path]:
    """``{patient: Info.cfg}`` from ``patientXXX/Info.cfg`` files under the roots; earlier roots win."""
    found: dict[str, Path] = {}
    for root in roots:
        if root is None:
            continue
        for path in sorted(root.rglob("Info.cfg")):
            found.setdefault(path.parent.name, path)
    return found


def select_ed_es(patient: str, frames: Sequence[int], info: Path | None, root: Path) -> tuple[int, int]:
    """ED and ES frame numbers of a patient: from ``info`` when given, else the lower and higher of two frames."""
    if info is not None:
        ed, es = read_info_cfg(info)
        for phase, frame in (("ED", ed), ("ES", es)):
            if frame not in frames:
                raise MissingFrameError(f"{patient}: no {phase} segmentation (frame {frame}, {info}) under {root}")
        return ed, es
    if len(frames) < 2:
        raise MissingFrameError(
            f"{patient}: needs an ED and an ES segmentation under {root}, found frame(s) {sorted(frames)}"
        )
    if len(frames) > 2:
        raise MissingFrameError(
            f"{patient}: {len(frames)} frames under {root} and no Info.cfg to tell ED from ES; use --pairs"
        )
    return min(frames), max(frames)


def _lookup(table: FrameTable, patient: str, frame: int, what: str, root: Path) -> Path:
    paths = table.get(patient, {}).get(frame)
    if not paths:
        raise MissingFrameError(f"{patient}: no {what} for frame {frame} under {root}")
    return _single(paths, patient, frame, f"keep one of them under {root}")


def discover_cases(
    pred_dir: Path,
    image_dir: Path,
    gt_dir: Path | None,
    pred_suffix: str | None,
    gt_suffix: str,
    skip_incomplete: bool,
) -> list[CaseFiles]:
    """Pair the ED and ES files of every patient found under ``pred_dir`` (see the module docstring)."""
    preds = scan_frames(pred_dir, pred_suffix)
    if not preds:
        suffix = "any suffix" if pred_suffix is None else f"suffix {pred_suffix!r}"
        raise ReportError(f"{pred_dir}: no patientXXX_frameYY*.nii[.gz] segmentation found ({suffix})")
    images = scan_frames(image_dir, "")
    gts = scan_frames(gt_dir, gt_suffix) if gt_dir is not None else {}
    infos = find_info_cfgs([image_dir, gt_dir, pred_dir])
    cases = []
    for patient, frames in sorted(preds.items()):
        try:
            ed, es = select_ed_es(patient, list(frames), infos.get(patient), pred_dir)
            case = CaseFiles(
                patient=patient,
                ed_pred=_single(frames[ed], patient, ed, "choose one with --pred-suffix"),
                es_pred=_single(frames[es], patient, es, "choose one with --pred-suffix"),
                ed_image=_lookup(images, patient, ed, "image", image_dir),
                es_image=_lookup(images, patient, es, "image", image_dir),
                ed_frame=ed,
                es_frame=es,
            )
            if gt_dir is not None:
                case.ed_gt = _lookup(gts, patient, ed, "ground truth", gt_dir)
                case.es_gt = _lookup(gts, patient, es, "ground truth", gt_dir)
        except MissingFrameError as e:
            if not skip_incomplete:
                raise
            _warn(f"skipped: {e}")
            continue
        cases.append(case)
    return cases


def _frame_of(path: Path) -> tuple[str, int] | None:
    match = FRAME_RE.match(path.name)
    return None if match is None else (match["patient"], int(match["frame"]))


def read_pairs_csv(
    csv_path: Path, image_dir: Path | None, gt_dir: Path | None, gt_suffix: str, skip_incomplete: bool
) -> list[CaseFiles]:
    """Cases from a CSV with columns ``patient, ed_pred, es_pred[, ed_image, es_image, ed_gt, es_gt]``."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    columns = set(reader.fieldnames or ())
    missing = {"patient", "ed_pred", "es_pred"} - columns
    if missing:
        raise ReportError(f"{csv_path}: missing column(s) {', '.join(sorted(missing))}")
    use_gt = gt_dir is not None or "ed_gt" in columns
    images = scan_frames(image_dir, "") if image_dir is not None else {}
    gts = scan_frames(gt_dir, gt_suffix) if gt_dir is not None else {}

    def resolve(value: str | None) -> Path | None:
        if not value:
            return None
        path = Path(value)
        return path if path.is_absolute() else csv_path.parent / path

    def companion(
        row: Mapping[str, str], column: str, pred: Path, table: FrameTable, what: str, root: Path | None
    ) -> Path:
        path = resolve(row.get(column))
        if path is not None:
            return path
        key = _frame_of(pred)
        if root is None or key is None:
            raise MissingFrameError(f"{row['patient']}: no {column} in {csv_path} and no --{what} folder to find it")
        return _lookup(table, key[0], key[1], what, root)

    cases = []
    for row in rows:
        try:
            ed_pred, es_pred = resolve(row["ed_pred"]), resolve(row["es_pred"])
            if ed_pred is None or es_pred is None:
                raise MissingFrameError(f"{row['patient']}: empty ed_pred or es_pred in {csv_path}")
            case = CaseFiles(
                patient=row["patient"],
                ed_pred=ed_pred,
                es_pred=es_pred,
                ed_image=companion(row, "ed_image", ed_pred, images, "image", image_dir),
                es_image=companion(row, "es_image", es_pred, images, "image", image_dir),
                ed_frame=(_frame_of(ed_pred) or (None, None))[1],
                es_frame=(_frame_of(es_pred) or (None, None))[1],
            )
            if use_gt:
                case.ed_gt = companion(row, "ed_gt", ed_pred, gts, "gt", gt_dir)
                case.es_gt = companion(row, "es_gt", es_pred, gts, "gt", gt_dir)
        except MissingFrameError as e:
            if not skip_incomplete:
                raise
            _warn(f"skipped: {e}")
            continue
        cases.append(case)
    return cases


# ----------------------------------------------------------------------------------------------------- loading


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
            _warn(f"{path}: header spacing {header} differs from --spacing {voxel}; using --spacing")
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
            _warn(f"{case.patient}: {name} EF undefined (no {name} cavity at ED in {case.ed_pred})")
    return CaseResult(case, indices, reference, panels)


# ----------------------------------------------------------------------------------------------------- outputs


def clinical_row(result: CaseResult) -> dict[str, object]:
    """One ``clinical.csv`` row: patient, frames, indices, and reference values and errors when available."""
    files = result.files
    row: dict[str, object] = {"patient": files.patient, "ed_frame": files.ed_frame, "es_frame": files.es_frame}
    row.update(result.indices)
    if result.reference is not None:
        row.update({f"gt_{k}": v for k, v in result.reference.items()})
        row.update({f"err_{k}": result.indices[k] - result.reference[k] for k in INDEX_COLUMNS})
    row.update({"ed_pred": str(files.ed_pred), "es_pred": str(files.es_pred)})
    return row


def _title(patient: str, ind: Mapping[str, float]) -> str:
    return (
        f"{patient}\nLV: EDV {ind['LV_EDV_ml']:.1f} ml, ESV {ind['LV_ESV_ml']:.1f} ml, EF {ind['LV_EF_pct']:.1f}%"
        f"  |  RV: EDV {ind['RV_EDV_ml']:.1f} ml, ESV {ind['RV_ESV_ml']:.1f} ml, EF {ind['RV_EF_pct']:.1f}%"
        f"  |  myocardial mass {ind['MYO_mass_g']:.1f} g"
    )


def plot_case(result: CaseResult, path: Path) -> None:
    """Save the ED and ES mid-ventricular slices with RV, MYO and LV contours, indices in the title."""
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, panel in zip(axes, result.panels):
        lo, hi = np.percentile(panel.image, (1, 99)) if panel.image.size else (0.0, 1.0)
        ax.imshow(panel.image.T, cmap="gray", origin="lower", vmin=lo, vmax=max(hi, lo + 1e-6))
        for name, value in LABELS.items():
            mask = panel.labels == value
            if mask.any():
                ax.contour(mask.T.astype(np.float32), levels=[0.5], colors=CONTOUR_COLORS[name], linewidths=1.2)
        ax.set_title(panel.title, fontsize=10)
        ax.set_axis_off()
    handles = [axes[1].plot([], [], color=c, label=n)[0] for n, c in CONTOUR_COLORS.items()]
    axes[1].legend(handles=handles, loc="lower right", fontsize=8)
    fig.suptitle(_title(result.files.patient, result.indices), fontsize=9)
    fig.savefig(path, dpi=100)


def plot_bland_altman(results: Sequence[CaseResult], path: Path) -> None:
    """Save Bland-Altman plots (difference against mean) of :data:`BLAND_ALTMAN_COLUMNS`."""
    fig = Figure(figsize=(10, 8), layout="constrained")
    for ax, key in zip(fig.subplots(2, 2).ravel(), BLAND_ALTMAN_COLUMNS):
        pred = np.array([r.indices[key] for r in results])
        ref = np.array([r.reference[key] for r in results if r.reference is not None])
        stats = agreement(pred, ref)
        ax.scatter((pred + ref) / 2, pred - ref, s=14)
        for value, style in ((stats["bias"], "-"), (stats["loa_lower"], "--"), (stats["loa_upper"], "--")):
            if math.isfinite(value):
                ax.axhline(value, color="tab:red", linestyle=style, linewidth=1)
        ax.set_title(
            f"{key}: bias {stats['bias']:.2f}, LoA [{stats['loa_lower']:.2f}, {stats['loa_upper']:.2f}]",
            fontsize=9,
        )
        ax.set_xlabel("mean of prediction and reference")
        ax.set_ylabel("prediction - reference")
    fig.savefig(path, dpi=100)


def write_report(results: Sequence[CaseResult], out_dir: Path) -> list[Path]:
    """Write ``clinical.csv``, one PNG per patient and, with references, the agreement table and figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "clinical.csv"]
    write_metrics_csv([clinical_row(r) for r in results], written[0])
    for result in results:
        written.append(out_dir / f"{result.files.patient}.png")
        plot_case(result, written[-1])
    if all(r.reference is not None for r in results):
        rows = []
        for key in INDEX_COLUMNS:
            pred = [r.indices[key] for r in results]
            ref = [r.reference[key] for r in results if r.reference is not None]
            rows.append({"index": key, **agreement(pred, ref)})
        written.append(out_dir / "agreement.csv")
        write_metrics_csv(rows, written[-1])
        written.append(out_dir / "bland_altman.png")
        plot_bland_altman(results, written[-1])
    return written


# --------------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m custom.report",
        description="Cardiac function report (LV/RV volumes, EF, myocardial mass) from ACDC-style segmentations.",
    )
    parser.add_argument("--pred", type=Path, help="folder of predicted segmentations (searched recursively)")
    parser.add_argument("--image", type=Path, help="folder of the images patientXXX_frameYY.nii[.gz]")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--gt", type=Path, help="folder of reference segmentations patientXXX_frameYY_gt.nii[.gz]")
    parser.add_argument("--pairs", type=Path, help="CSV: patient, ed_pred, es_pred[, ed_image, es_image, ed_gt, es_gt]")
    parser.add_argument(
        "--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), help="voxel size in mm, replaces the headers"
    )
    parser.add_argument("--pred-suffix", help="file-name suffix of predictions, e.g. _seg (default: any, unique)")
    parser.add_argument("--gt-suffix", default="_gt", help="file-name suffix of references (default: _gt)")
    parser.add_argument("--density", type=float, default=MYOCARDIAL_DENSITY, help="myocardial density, g/ml")
    parser.add_argument("--skip-incomplete", action="store_true", help="skip patients without ED or ES, with a warning")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pairs is None and (args.pred is None or args.image is None):
        parser.error("--pred and --image are required unless --pairs is given")
    if args.spacing is not None and not all(math.isfinite(s) and s > 0 for s in args.spacing):
        parser.error(f"--spacing values must be positive, got {args.spacing}")
    for option in ("pred", "image", "gt", "pairs"):
        path = getattr(args, option)
        if path is not None and not path.exists():
            parser.error(f"--{option} {path} does not exist")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report; returns 0 on success and 1 (with a one-line message on stderr) on bad inputs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        if args.pairs is not None:
            cases = read_pairs_csv(args.pairs, args.image, args.gt, args.gt_suffix, args.skip_incomplete)
        else:
            cases = discover_cases(
                args.pred, args.image, args.gt, args.pred_suffix, args.gt_suffix, args.skip_incomplete
            )
        if not cases:
            raise ReportError("no complete patient to report")
        if args.spacing is not None:
            print(f"using --spacing {' '.join(f'{s:g}' for s in args.spacing)} mm for every segmentation")
        results = [analyse_case(case, args.spacing, args.density) for case in cases]
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    written = write_report(results, args.out)
    print(f"{len(results)} patient(s): wrote {len(written)} file(s) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
