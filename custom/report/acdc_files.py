"""Finding the ED and ES files of every patient: ACDC file names, ``Info.cfg`` and ``--pairs`` CSV files.

``scan_frames`` matches ``patientXXX_frameYY<suffix>.nii[.gz]`` anywhere under a folder. The ED and ES frame numbers
of a patient come from the ``ED: n`` and ``ES: n`` lines of ``patientXXX/Info.cfg`` (looked for under the image,
ground-truth and prediction folders, in that order); without it, a patient must have exactly two frames, ED being the
lower frame number and ES the higher. A ``--pairs`` CSV lists the files instead, with the columns
``patient, ed_pred, es_pred`` and optionally ``ed_image, es_image, ed_gt, es_gt`` (paths relative to the CSV file);
missing image or ground-truth columns are looked up in the image and ground-truth folders by file name.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from custom.errors import MissingFrameError, ReportError, warn

__all__ = [
    "FRAME_RE",
    "CaseFiles",
    "scan_frames",
    "read_info_cfg",
    "find_info_cfgs",
    "select_ed_es",
    "discover_cases",
    "read_pairs_csv",
]

#: ``{patient: {frame: [paths]}}``
FrameTable = dict[str, dict[int, list[Path]]]
# Not custom.data.datalist's ACDC pattern (private there): this one also accepts any patient/frame digit count and
# a suffix after the frame number (``_seg``, ``_gt``), as predictions are named.
FRAME_RE = re.compile(r"^(?P<patient>patient\d+)_frame(?P<frame>\d+)(?P<suffix>.*?)\.nii(?:\.gz)?$")


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

    def case_of(item: tuple[str, Mapping[int, list[Path]]]) -> CaseFiles:
        patient, frames = item
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
        return case

    return _collect_cases(case_of, sorted(preds.items()), skip_incomplete)


def _collect_cases(
    case_of: Callable[[Any], CaseFiles], items: Iterable[Any], skip_incomplete: bool
) -> list[CaseFiles]:
    """``case_of(item)`` for every item; an item with a missing frame is an error, or skipped with a warning."""
    cases = []
    for item in items:
        try:
            cases.append(case_of(item))
        except MissingFrameError as e:
            if not skip_incomplete:
                raise
            warn(f"skipped: {e}")
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

    def case_of(row: Mapping[str, str]) -> CaseFiles:
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
        return case

    return _collect_cases(case_of, rows, skip_incomplete)
