"""Dataset folder + protocol -> datalist dictionary: scan the folder once, then assemble any labeled set from it.

The datalist has the keys ``training`` (labeled), ``unlabeled``, ``validation``, ``test`` and ``pretraining``
(every image of the training pool and the validation split, labels unused), with paths relative to the
dataset folder, so ``monai.data.load_decathlon_datalist(path, data_list_key=..., base_dir=dataset_dir)`` reads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from custom.data.datalist.checks import DatasetError, check_pair
from custom.data.datalist.layouts import Cases, find_cases
from custom.data.protocols import FOLDER, Protocol

__all__ = ["DatasetScan", "scan_dataset", "assemble_datalist", "warn_missing", "build_datalist"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetScan:
    """The cases found in a dataset folder (:func:`custom.data.datalist.layouts.find_cases`) and, where known
    (after the file checks, and always for slice-fraction protocols), the slices of each case (last axis)."""

    root: Path
    cases: Cases
    num_slices: dict[str, int]


def _dataset_folder(dataset_dir: str | Path) -> Path:
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    return root


def scan_dataset(dataset_dir: str | Path, protocol: Protocol, check_files: bool = True) -> DatasetScan:
    """Find the cases of ``dataset_dir`` in the layout of ``protocol``; with ``check_files`` validate every image
    and label (:func:`check_pair`, label values against the protocol's labels) first."""
    root = _dataset_folder(dataset_dir)
    cases = find_cases(root, protocol)
    if not cases:
        raise DatasetError(f"{root}: no cases found for protocol {protocol.source!r}")
    allowed = None if protocol.labels is None else list(protocol.labels.values())
    num_slices: dict[str, int] = {}
    if check_files:
        for case, items in cases.items():
            for item in items:
                label = root / item["label"] if "label" in item else None
                num_slices[case] = check_pair(root / item["image"], label, allowed)
    elif protocol.layout == "mmwhs":  # slice fractions draw from every slice: read the headers only
        num_slices = {c: check_pair(root / items[0]["image"], None, check_values=False) for c, items in cases.items()}
    return DatasetScan(root, cases, num_slices)


def assemble_datalist(
    scan: DatasetScan, protocol: Protocol, labeled: str, subset: str = "c1", seed: int = 0, allow_missing: bool = False
) -> dict[str, Any]:
    """The datalist (see module docstring) of one labeled set of ``protocol`` over the scanned cases.

    For slice-fraction protocols (``mmwhs_paper``) each training/unlabeled item carries ``"slices"``, the slice
    indices it contributes. Cases the protocol names but the folder lacks are listed under ``"missing"``.
    """
    cases = scan.cases
    with_label = {c for c, items in cases.items() if "label" in items[0]}
    splits = protocol.splits(sorted(cases), labeled, subset, seed, scan.num_slices, with_label, allow_missing)

    def items(ids: Sequence[str], with_label: bool = True) -> list[dict[str, Any]]:
        out = []
        for case in ids:
            for item in cases[case]:
                out.append(dict(item) if with_label else {k: v for k, v in item.items() if k != "label"})
        return out

    training = items(splits.labeled)
    unlabeled = items(splits.unlabeled, with_label=False)
    if splits.labeled_slices:
        for item in training:
            item["slices"] = splits.labeled_slices[item["case"]]
        for item in unlabeled:
            rest = sorted(set(range(scan.num_slices[item["case"]])) - set(splits.labeled_slices.get(item["case"], [])))
            item["slices"] = rest
        unlabeled = [item for item in unlabeled if item["slices"]]
    pretraining = items(sorted(set(splits.labeled) | set(splits.unlabeled) | set(splits.validation)), with_label=False)
    mapping = protocol.label_mapping()
    return {
        "name": protocol.datalist_name(labeled, subset, seed),
        "protocol": protocol.name,
        "labeled_set": labeled,
        "subset": subset,
        "seed": seed,
        "labels": protocol.labels,
        "label_mapping": None if mapping is None else {str(k): v for k, v in mapping.items()},
        "missing": splits.missing,
        "training": training,
        "unlabeled": unlabeled,
        "validation": items(splits.validation),
        "test": items(splits.test),
        "pretraining": pretraining,
    }


def warn_missing(datalist: dict[str, Any], protocol: Protocol, root: Path) -> None:
    """Log the cases ``protocol`` names but the folder ``root`` lacks (``datalist["missing"]``), if any."""
    missing = datalist["missing"]
    if missing:
        logger.warning("%d case(s) of %s missing from %s: %s", len(missing), protocol.source, root, ", ".join(missing))


def build_datalist(
    dataset_dir: str | Path,
    protocol: Protocol | str = "acdc_paper",
    labeled: str = "L8",
    subset: str = "c1",
    seed: int = 0,
    allow_missing: bool = False,
    check_files: bool = True,
    images: str | None = None,
    label_replace: Sequence[str] | None = None,
    labeled_fraction: float = 0.1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> dict[str, Any]:
    """Scan ``dataset_dir`` and assemble the datalist of one labeled set (see :func:`assemble_datalist`).

    ``protocol`` is a :class:`Protocol`, a protocol name or JSON path, or ``"folder"``: then ``images`` is a glob
    relative to ``dataset_dir``, ``label_replace`` an (old, new) substring pair turning an image file name into its
    label file name, and the fractions size the random splits (:meth:`Protocol.folder`). For ``mmwhs_paper``
    ``labeled`` is the slice fraction (``F10``, ``F20``, ``F40``, ``F100``).
    """
    root = _dataset_folder(dataset_dir)
    if protocol == FOLDER:
        protocol = Protocol.folder(images, label_replace, labeled_fraction, val_fraction, test_fraction)
    protocol = Protocol.of(protocol)
    datalist = assemble_datalist(scan_dataset(root, protocol, check_files), protocol, labeled, subset, seed, allow_missing)
    warn_missing(datalist, protocol, root)
    return datalist
