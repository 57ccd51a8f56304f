"""Where the images and labels of a dataset folder are: one finder per file layout.

Each finder returns ``{case id: [item, ...]}``; an item is ``{"image", "label", "case", ...}`` with paths relative
to the dataset folder (a case has one item per annotated volume: two ACDC frames, one MM-WHS volume).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

from custom.data.datalist.checks import DatasetError
from custom.data.protocols import FOLDER, Protocol

__all__ = ["ACDC_FRAME", "MMWHS_IMAGE", "find_acdc_cases", "find_mmwhs_cases", "find_folder_cases", "find_cases"]

logger = logging.getLogger(__name__)

ACDC_FRAME = re.compile(r"^(patient\d{3})_frame(\d{2})\.nii(\.gz)?$")
MMWHS_IMAGE = re.compile(r"^(mr_train_\d{4})_image\.nii(\.gz)?$")

Cases = dict[str, list[dict[str, Any]]]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def find_acdc_cases(dataset_dir: Path) -> Cases:
    """Map ``patientXXX`` -> its annotated frames ``[{"image", "label", "case", "frame"}]`` (paths relative).

    Only frames with a ``_gt`` label file are listed (ED and ES in ACDC); 4D cine files are ignored.
    """
    cases: Cases = {}
    for image in sorted(dataset_dir.glob("patient*/patient*_frame*.nii*")):
        match = ACDC_FRAME.match(image.name)
        if not match:
            continue
        label = image.with_name(image.name.replace(".nii", "_gt.nii", 1))
        if not label.exists():
            continue
        case, frame = match.group(1), int(match.group(2))
        cases.setdefault(case, []).append(
            {"image": _rel(image, dataset_dir), "label": _rel(label, dataset_dir), "case": case, "frame": frame}
        )
    return cases


def find_mmwhs_cases(dataset_dir: Path) -> Cases:
    """Map ``mr_train_10XX`` -> ``[{"image", "label", "case"}]`` for the MMWHS file layout."""
    cases: Cases = {}
    for image in sorted(dataset_dir.glob("mr_train_*_image.nii*")):
        match = MMWHS_IMAGE.match(image.name)
        if not match:
            continue
        label = image.with_name(image.name.replace("_image", "_label"))
        if not label.exists():
            raise DatasetError(f"{label}: label file missing for image {image.name}")
        cases[match.group(1)] = [{"image": _rel(image, dataset_dir), "label": _rel(label, dataset_dir), "case": match.group(1)}]
    return cases


def find_folder_cases(dataset_dir: Path, images: str, label_replace: Sequence[str] | None) -> Cases:
    """Map each file matching the glob ``images`` (its relative path without ``.nii*``) -> ``[{"image", "case"}]``,
    plus ``"label"`` where the (old, new) substitution ``label_replace`` of its name names an existing file."""
    cases: Cases = {}
    for image in sorted(dataset_dir.glob(images)):
        item: dict[str, Any] = {"image": _rel(image, dataset_dir), "case": _rel(image, dataset_dir).split(".nii")[0]}
        if label_replace:
            label = image.with_name(image.name.replace(label_replace[0], label_replace[1]))
            if label != image and label.exists():
                item["label"] = _rel(label, dataset_dir)
        cases[item["case"]] = [item]
    if cases and not any("label" in items[0] for items in cases.values()):
        logger.warning("no image under %s has a label file: every case is unlabeled", dataset_dir)
    return cases


def find_cases(dataset_dir: Path, protocol: Protocol) -> Cases:
    """The cases of ``dataset_dir`` in the file layout of ``protocol``."""
    if protocol.layout == FOLDER:
        return find_folder_cases(dataset_dir, protocol.definition["images"], protocol.definition["label_replace"])
    return find_acdc_cases(dataset_dir) if protocol.layout == "acdc" else find_mmwhs_cases(dataset_dir)
