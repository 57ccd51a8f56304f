"""Generate a synthetic dataset on first use, into a folder that is either complete or absent."""

from __future__ import annotations

import json
from pathlib import Path

from custom.atomic import staged_dir
from custom.data.synthetic.acdc import generate_acdc
from custom.data.synthetic.image_model import PathLike, check_cases, check_seed
from custom.data.synthetic.mmwhs import generate_mmwhs

__all__ = ["GENERATOR_VERSION", "LAYOUTS", "RECORD_NAME", "check_layout", "ensure_dataset"]

#: Bumped whenever the generated arrays change, so :func:`ensure_dataset` notices stale data.
GENERATOR_VERSION = 1
LAYOUTS = ("acdc", "mmwhs")
#: the record of a generated dataset, written last.
RECORD_NAME = "dataset.json"


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")


def _expected_meta(layout: str, cases: int, seed: int) -> dict:
    return {
        "generator": "custom.data.synthetic",
        "version": GENERATOR_VERSION,
        "layout": layout,
        "cases": int(cases),
        "seed": int(seed),
    }


def _read_meta(root: Path) -> dict | None:
    """Parsed ``root/dataset.json``, or None if there is none."""
    meta = root / RECORD_NAME
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise FileExistsError(f"{meta} is not a readable synthetic-dataset record; remove {root} to regenerate.") from e


def _is_match(record: dict | None, expected: dict) -> bool:
    return record is not None and all(record.get(k) == v for k, v in expected.items())


def ensure_dataset(out_dir: PathLike, layout: str = "acdc", cases: int = 20, seed: int = 0) -> Path:
    """Generate the synthetic dataset into ``out_dir`` unless it is already there; return ``out_dir``.

    ``out_dir/dataset.json`` records ``generator``, ``version``, ``layout``, ``cases``, ``seed`` and the relative
    ``files``. When it matches the request (and the files exist) nothing is written. Otherwise the data is made
    in a hidden sibling folder, the record is written last, and the folder is renamed into place, so an
    interrupted run never leaves a dataset that looks complete. Concurrent callers (e.g. one per DDP rank) are
    safe: the loser of the rename discards its copy.

    Args:
        out_dir: dataset folder; must be absent, empty, or a previous result of this function.
        layout: ``"acdc"`` or ``"mmwhs"``.
        cases: number of cases.
        seed: dataset seed.

    Raises:
        FileExistsError: ``out_dir`` holds other files, a dataset made with other parameters or generator
            version, an unreadable record, or a record whose files are missing. Nothing is deleted: remove it
            or pick another folder.
    """
    check_layout(layout)
    check_cases(cases)
    check_seed(seed)
    root = Path(out_dir)
    expected = _expected_meta(layout, cases, seed)
    if _verify_existing(root, expected):
        return root
    # a concurrent caller (one per DDP rank, say) that wins the rename leaves the same data: keep it
    with staged_dir(root, accept_existing=lambda found: _verify_existing(found, expected)) as tmp:
        (generate_acdc if layout == "acdc" else generate_mmwhs)(tmp, cases, seed)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / RECORD_NAME).write_text(json.dumps({**expected, "files": files}, indent=1) + "\n")
    return root


def _verify_existing(root: Path, expected: dict) -> bool:
    """True if ``root`` already holds the expected dataset, False if it is absent or empty; raise otherwise."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return False
    record = _read_meta(root)
    if record is None:
        raise FileExistsError(
            f"{root} exists but is not a synthetic dataset (no {RECORD_NAME}); refusing to write into it. "
            "Remove it or choose another directory."
        )
    if not _is_match(record, expected):
        found = {k: record.get(k) for k in expected}
        raise FileExistsError(
            f"{root} holds a synthetic dataset made with {found}, not the requested {expected}. "
            "Remove it or choose another directory."
        )
    missing = [f for f in record.get("files", []) if not (root / f).is_file()]
    if missing:
        raise FileExistsError(
            f"{root} is missing {len(missing)} file(s) listed in {RECORD_NAME} (e.g. {missing[0]}). "
            "Remove it to regenerate."
        )
    return True
