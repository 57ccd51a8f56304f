"""Datalist files at run time: written atomically, read back as items of one split; input images found by glob.

These are what the bundle configs call (as ``custom.data.datalist.load_split`` and ``custom.data.datalist.glob_images``).
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from custom.data.datalist.checks import DatasetError

__all__ = ["load_split", "glob_images"]

logger = logging.getLogger(__name__)


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
