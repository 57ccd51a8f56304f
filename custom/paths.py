"""Default locations used by the bundle configs: bundle roots, the built-in dataset and committed datalists.

Works both in this repository (``bundles/<name>``, ``datalists/``, ``data/``) and inside an exported bundle
where ``custom/`` is vendored at the bundle root. ``IDEAL_DATA_DIR`` overrides where built-in data are generated.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bundle_root", "default_dataset", "datalist_path"]

_HERE = Path(__file__).resolve().parents[1]


def _vendored() -> bool:
    return (_HERE / "configs" / "metadata.json").is_file()


def bundle_root(name: str) -> str:
    """The bundle folder: where ``custom`` is vendored, or ``bundles/<name>`` of this repository."""
    return str(_HERE if _vendored() else _HERE / "bundles" / name)


def default_dataset(layout: str = "acdc", cases: int = 20, seed: int = 0) -> str:
    """The built-in synthetic dataset folder, generated on first use (a few seconds)."""
    from custom.data.synthetic import ensure_dataset

    root = Path(os.environ.get("IDEAL_DATA_DIR", _HERE / "data"))
    return str(ensure_dataset(root / f"synthetic_{layout}", layout=layout, cases=cases, seed=seed))


def datalist_path(filename: str) -> str:
    """A committed datalist (``datalists/<filename>``); raises if it does not exist."""
    path = _HERE / "datalists" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist not found")
    return str(path)
