"""Dataset folder + protocol -> datalist dictionary.

The datalist has the keys ``training`` (labeled), ``unlabeled``, ``validation``, ``test`` and ``pretraining``
(every image of the training pool and the validation split, labels unused), with paths relative to the
dataset folder, so ``monai.data.load_decathlon_datalist(path, data_list_key=..., base_dir=dataset_dir)`` reads it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from custom.data.datalist.checks import DatasetError, check_pair
from custom.data.datalist.layouts import find_acdc_cases, find_folder_cases, find_mmwhs_cases
from custom.data.protocols import (
    ProtocolError,
    Splits,
    acdc_splits,
    label_mapping,
    load_protocol,
    mmwhs_splits,
    random_case_splits,
)

__all__ = ["build_datalist"]

logger = logging.getLogger(__name__)


def build_datalist(
    dataset_dir: str | Path,
    protocol: str = "acdc_paper",
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
    """Build the datalist dictionary (see module docstring) for one protocol and labeled set.

    For ``mmwhs_paper`` ``labeled`` is the slice fraction (``F10``, ``F20``, ``F40``, ``F100``) and each
    training/unlabeled item carries ``"slices"``, the slice indices it contributes.
    For ``folder``, ``images`` is a glob relative to ``dataset_dir`` and ``label_replace`` an (old, new)
    substring pair turning an image file name into its label file name.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if protocol == "folder":
        if not images:
            raise ProtocolError("protocol 'folder' needs --images GLOB (e.g. '*_image.nii.gz')")
        cases = find_folder_cases(root, images, label_replace)
        definition: dict[str, Any] = {"name": "folder", "labels": None}
    else:
        definition = load_protocol(protocol)
        _require_keys(definition, protocol)
        cases = find_acdc_cases(root) if definition["layout"] == "acdc" else find_mmwhs_cases(root)
    if not cases:
        raise DatasetError(f"{root}: no cases found for protocol {protocol!r}")

    allowed = None if definition.get("labels") is None else list(definition["labels"].values())
    num_slices: dict[str, int] = {}
    if check_files:
        for case, items in cases.items():
            for item in items:
                label = root / item["label"] if "label" in item else None
                num_slices[case] = check_pair(root / item["image"], label, allowed)

    if protocol == "folder":
        # validation, test and labeled cases are drawn from the cases that have labels; the rest are unlabeled
        with_label = sorted(c for c in cases if "label" in cases[c][0])
        if with_label:
            splits = random_case_splits(with_label, labeled_fraction, val_fraction, test_fraction, seed)
        else:  # images only: usable for pre-training
            logger.warning("no image under %s has a label file: every case is unlabeled", root)
            splits = Splits(labeled=[], unlabeled=[], validation=[], test=[])
        splits.unlabeled = sorted(set(splits.unlabeled) | (set(cases) - set(with_label)))
    elif definition["layout"] == "acdc":
        splits = acdc_splits(definition, sorted(cases), labeled, subset, allow_missing)
    else:
        if not num_slices:
            num_slices = {c: check_pair(root / items[0]["image"], None, check_values=False) for c, items in cases.items()}
        splits = mmwhs_splits(definition, sorted(cases), labeled, num_slices, seed, allow_missing)
    if splits.missing:
        logger.warning("%d case(s) of %s missing from %s: %s", len(splits.missing), protocol, root, ", ".join(splits.missing))
    return _assemble(cases, splits, definition, protocol, labeled, subset, seed, num_slices)


_REQUIRED_KEYS = {
    "acdc": ("name", "labels", "all_cases", "test", "validation", "labeled"),
    "mmwhs": ("name", "labels", "train", "validation", "test", "slice_fractions"),
}


def _require_keys(definition: Mapping[str, Any], protocol: str) -> None:
    layout = definition.get("layout")
    if layout not in _REQUIRED_KEYS:
        raise ProtocolError(f"protocol {protocol}: 'layout' must be one of {sorted(_REQUIRED_KEYS)}, got {layout!r}")
    missing = [k for k in _REQUIRED_KEYS[layout] if k not in definition]
    if missing:
        raise ProtocolError(f"protocol {protocol}: definition lacks {', '.join(missing)}")


def _assemble(cases, splits: Splits, definition, protocol, labeled, subset, seed, num_slices) -> dict[str, Any]:
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
            rest = sorted(set(range(num_slices[item["case"]])) - set(splits.labeled_slices.get(item["case"], [])))
            item["slices"] = rest
        unlabeled = [item for item in unlabeled if item["slices"]]
    pretraining = items(sorted(set(splits.labeled) | set(splits.unlabeled) | set(splits.validation)), with_label=False)
    labels = definition.get("labels")
    name = definition.get("name", protocol)
    return {
        "name": f"{name}_{labeled}_seed{seed}" if definition.get("layout") == "mmwhs" else f"{name}_{labeled}_{subset}",
        "protocol": name,
        "labeled_set": labeled,
        "subset": subset,
        "seed": seed,
        "labels": labels,
        "label_mapping": None if labels is None else {str(k): v for k, v in label_mapping(definition).items()},
        "missing": splits.missing,
        "training": training,
        "unlabeled": unlabeled,
        "validation": items(splits.validation),
        "test": items(splits.test),
        "pretraining": pretraining,
    }
