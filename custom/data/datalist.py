"""Dataset folder + protocol -> MONAI (decathlon-style) datalist JSON.

The datalist has the keys ``training`` (labeled), ``unlabeled``, ``validation``, ``test`` and ``pretraining``
(every image of the training pool and the validation split, labels unused), with paths relative to the
dataset folder, so ``monai.data.load_decathlon_datalist(path, data_list_key=..., base_dir=dataset_dir)`` reads it.

Examples::

    python -m custom.data.datalist --dataset-dir ../shared/data/acdc --protocol acdc_paper \\
        --labeled L8 --subset c1 --allow-missing --out datalists/acdc_L8_c1.json
    python -m custom.data.datalist --dataset-dir DIR --protocol folder --images "*_image.nii.gz" \\
        --label-replace _image _label --labeled-fraction 0.1 --out my.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from custom.errors import InputError
from custom.data.protocols import (
    ProtocolError,
    Splits,
    acdc_splits,
    available_protocols,
    label_mapping,
    load_protocol,
    mmwhs_splits,
    random_case_splits,
)

__all__ = [
    "check_items",
    "DatasetError",
    "find_acdc_cases",
    "find_mmwhs_cases",
    "check_pair",
    "build_datalist",
    "write_json_atomic",
    "load_split",
    "glob_images",
    "main",
]

logger = logging.getLogger(__name__)

_ACDC_FRAME = re.compile(r"^(patient\d{3})_frame(\d{2})\.nii(\.gz)?$")
_MMWHS_IMAGE = re.compile(r"^(mr_train_\d{4})_image\.nii(\.gz)?$")


class DatasetError(InputError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""


def find_acdc_cases(dataset_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Map ``patientXXX`` -> its annotated frames ``[{"image", "label", "case", "frame"}]`` (paths relative).

    Only frames with a ``_gt`` label file are listed (ED and ES in ACDC); 4D cine files are ignored.
    """
    cases: dict[str, list[dict[str, Any]]] = {}
    for image in sorted(dataset_dir.glob("patient*/patient*_frame*.nii*")):
        match = _ACDC_FRAME.match(image.name)
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


def find_mmwhs_cases(dataset_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Map ``mr_train_10XX`` -> ``[{"image", "label", "case"}]`` for the MMWHS file layout."""
    cases: dict[str, list[dict[str, Any]]] = {}
    for image in sorted(dataset_dir.glob("mr_train_*_image.nii*")):
        match = _MMWHS_IMAGE.match(image.name)
        if not match:
            continue
        label = image.with_name(image.name.replace("_image", "_label"))
        if not label.exists():
            raise DatasetError(f"{label}: label file missing for image {image.name}")
        cases[match.group(1)] = [{"image": _rel(image, dataset_dir), "label": _rel(label, dataset_dir), "case": match.group(1)}]
    return cases


def _find_folder_cases(dataset_dir: Path, images: str, label_replace: Sequence[str] | None) -> dict[str, list[dict[str, Any]]]:
    cases: dict[str, list[dict[str, Any]]] = {}
    for image in sorted(dataset_dir.glob(images)):
        item: dict[str, Any] = {"image": _rel(image, dataset_dir), "case": _rel(image, dataset_dir).split(".nii")[0]}
        if label_replace:
            label = image.with_name(image.name.replace(label_replace[0], label_replace[1]))
            if label != image and label.exists():
                item["label"] = _rel(label, dataset_dir)
        cases[item["case"]] = [item]
    return cases


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _header(path: Path):
    import nibabel as nib

    if not path.exists():
        raise DatasetError(f"{path}: file not found")
    try:
        return nib.load(str(path))
    except Exception as e:  # nibabel raises many types for non-NIfTI or damaged headers
        raise DatasetError(f"{path}: cannot read as NIfTI ({type(e).__name__}: {e})") from None


def _check_image_data(path: Path, img) -> None:
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as e:  # truncated gzip streams, short files
        raise DatasetError(f"{path}: cannot read as NIfTI ({type(e).__name__}: {e})") from None
    if not np.isfinite(data).all():
        raise DatasetError(f"{path}: image contains NaN or infinite values")
    if data.size == 0 or data.min() == data.max():
        raise DatasetError(f"{path}: image is constant (value {data.flat[0] if data.size else 'none'})")


def check_pair(image: Path, label: Path | None, allowed_labels: Iterable[int] | None = None, check_values: bool = True) -> int:
    """Validate one image (and label): headers, shapes, affines; with ``check_values`` also decode both and check
    that the image is finite and not constant and that the label values are allowed.

    Returns the number of slices (last axis). Raises :class:`DatasetError` naming the file and the problem.
    """
    img = _header(image)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        hint = " (a 4D cine volume: extract the ED/ES frames first)" if len(shape) == 4 else ""
        raise DatasetError(f"{image}: expected a 3D volume, got shape {tuple(img.shape)}{hint}")
    if check_values:
        _check_image_data(image, img)
    if label is not None:
        lab = _header(label)
        lab_shape = lab.shape[:3] if len(lab.shape) == 4 and lab.shape[3] == 1 else lab.shape
        if tuple(lab_shape) != tuple(shape):
            raise DatasetError(f"{label}: label shape {tuple(lab.shape)} does not match image shape {tuple(img.shape)} of {image.name}")
        if not np.allclose(lab.affine, img.affine, atol=1e-3):
            raise DatasetError(f"{label}: label affine differs from the image affine of {image.name}")
        if check_values and allowed_labels is not None:
            try:
                values = np.unique(np.asarray(lab.dataobj))
            except Exception as e:
                raise DatasetError(f"{label}: cannot read as NIfTI ({type(e).__name__}: {e})") from None
            unexpected = sorted(set(values.tolist()) - {float(v) for v in allowed_labels})
            if unexpected:
                raise DatasetError(
                    f"{label}: unexpected label values {unexpected[:10]} (allowed: {sorted(allowed_labels)})"
                )
    return int(shape[2])


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
        cases = _find_folder_cases(root, images, label_replace)
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


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    """Write JSON to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m custom.data.datalist", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset-dir", required=True, help="dataset folder (ACDC, MMWHS or any layout with --protocol folder)")
    p.add_argument("--protocol", default="acdc_paper", help=f"one of {', '.join(available_protocols() + ['folder'])} or a protocol JSON path")
    p.add_argument("--labeled", default="L8", help="labeled set: L1/L2/L8/L100 (ACDC), F10/F20/F40/F100 (MMWHS)")
    p.add_argument("--subset", default="c1", help="subset of the labeled set (ACDC: c1..c5)")
    p.add_argument("--seed", type=int, default=0, help="seed for slice fractions (MMWHS) and folder splits")
    p.add_argument("--allow-missing", action="store_true", help="warn, instead of failing, about cases the protocol names but the folder lacks")
    p.add_argument("--no-check", action="store_true", help="skip header/label-value validation of every file")
    p.add_argument("--images", help="folder protocol: image glob relative to --dataset-dir")
    p.add_argument("--label-replace", nargs=2, metavar=("OLD", "NEW"), help="folder protocol: image name -> label name substitution")
    p.add_argument("--labeled-fraction", type=float, default=0.1)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--out", required=True, help="output datalist JSON path")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        datalist = build_datalist(
            args.dataset_dir,
            protocol=args.protocol,
            labeled=args.labeled,
            subset=args.subset,
            seed=args.seed,
            allow_missing=args.allow_missing,
            check_files=not args.no_check,
            images=args.images,
            label_replace=args.label_replace,
            labeled_fraction=args.labeled_fraction,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
        )
    except (DatasetError, ProtocolError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        write_json_atomic(datalist, args.out)
    except OSError as e:
        print(f"error: {args.out}: cannot write the datalist ({e.strerror or e})", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {len(datalist[k])}" for k in ("training", "unlabeled", "validation", "test", "pretraining"))
    print(f"wrote {args.out}: {counts} items")
    return 0



def load_split(datalist: str | Path, split: str, dataset_dir: str | Path) -> list[dict[str, Any]]:
    """Items of one split of a datalist JSON with ``image``/``label`` joined to ``dataset_dir``.

    Raises :class:`DatasetError` naming the datalist when it is unreadable or the split is missing or empty.
    """
    path = Path(datalist)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: datalist not found") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: datalist is not valid JSON ({e})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: datalist must be a JSON object with split keys, got {type(content).__name__}")
    items = content.get(split)
    if not items:
        raise DatasetError(f"{path}: split {split!r} is missing or empty")
    root = Path(dataset_dir)
    out = []
    for item in items:
        item = dict(item)
        for key in ("image", "label"):
            if key in item:
                item[key] = str(root / item[key])
        out.append(item)
    return out



def check_items(items: Sequence[Mapping[str, Any]], allowed_labels: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Validate every item (:func:`check_pair`: readable, 3D, finite, not constant, label shape/affine/values) before
    any work starts, so that a bad file stops a command before it writes anything; returns the items unchanged."""
    items = [dict(item) for item in items]
    allowed = None if allowed_labels is None else list(allowed_labels)
    for item in items:
        check_pair(Path(item["image"]), Path(item["label"]) if item.get("label") else None, allowed)
    return items


def glob_images(
    pattern: str,
    exclude_suffixes: Sequence[str] = ("_gt.nii.gz", "_seg.nii.gz", "_disagreement.nii.gz"),
    skip_existing_in: str | Path | None = None,
    postfix: str = "seg",
) -> list[dict[str, str]]:
    """``[{"image": path}]`` for the files matching ``pattern``; raises :class:`DatasetError` when none does.

    With ``skip_existing_in``, images whose output ``<skip_existing_in>/<name>_<postfix>.nii.gz`` already exists are
    left out (outputs are written atomically, so an existing one is complete).
    """
    import glob

    files = [f for f in sorted(glob.glob(pattern, recursive=True)) if not f.endswith(tuple(exclude_suffixes))]
    if not files:
        raise DatasetError(f"{pattern}: no input image matches")
    if skip_existing_in is not None:
        done = lambda f: (Path(skip_existing_in) / f"{Path(f).name.split('.nii')[0]}_{postfix}.nii.gz").exists()  # noqa: E731
        skipped = [f for f in files if done(f)]
        files = [f for f in files if not done(f)]
        if skipped:
            logger.info("skipping %d image(s) whose output exists in %s", len(skipped), skip_existing_in)
    return [{"image": f} for f in files]


if __name__ == "__main__":
    sys.exit(main())
