"""Where things are: bundle roots and configs, the built-in dataset, committed datalists and protocols.

The only module that knows the layout around ``custom/``. Works both in this repository (``bundles/<name>``,
``datalists/``, ``datalists/protocols/``, ``data/``) and inside an exported bundle where ``custom/``,
``datalists/`` and ``data/`` are vendored at the bundle root. ``IDEAL_DATA_DIR`` overrides where built-in data
are generated.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "root",
    "bundle_root",
    "bundle_config",
    "datalists_dir",
    "protocols_dir",
    "default_dataset",
    "datalist_path",
]

_HERE = Path(__file__).resolve().parents[1]


def _vendored() -> bool:
    return (_HERE / "configs" / "metadata.json").is_file()


def root() -> Path:
    """The folder holding ``custom/``: this repository, or an exported bundle."""
    return _HERE


def bundle_root(name: str) -> str:
    """The bundle folder: where ``custom`` is vendored, or ``bundles/<name>`` of this repository."""
    return str(_HERE if _vendored() else _HERE / "bundles" / name)


def bundle_config(name: str, filename: str) -> str:
    """A file of the ``configs/`` folder of bundle ``name`` (e.g. ``logging.conf``)."""
    return str(Path(bundle_root(name)) / "configs" / filename)


def datalists_dir() -> Path:
    """The committed datalists (``datalists/``)."""
    return _HERE / "datalists"


def protocols_dir() -> Path:
    """The protocol definitions (``datalists/protocols/``)."""
    return datalists_dir() / "protocols"


def default_dataset(layout: str = "acdc", cases: int = 20, seed: int = 0) -> str:
    """The built-in synthetic dataset folder, generated on first use (a few seconds)."""
    from custom.data.synthetic import ensure_dataset

    root = Path(os.environ.get("IDEAL_DATA_DIR", _HERE / "data"))
    return str(ensure_dataset(root / f"synthetic_{layout}", layout=layout, cases=cases, seed=seed))


def datalist_path(filename: str) -> str:
    """A committed datalist (``datalists/<filename>``); raises if it does not exist."""
    path = datalists_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist not found")
    return str(path)
