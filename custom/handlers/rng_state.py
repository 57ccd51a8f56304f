"""Random number generator state of a run: the global RNGs and the random states of the data augmentation.

Everything is packed as tensors and plain types, so a checkpoint holding it loads with ``weights_only=True``.
:func:`training_rng_state` / :func:`set_training_rng_state` are what a resumable checkpoint saves and restores.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Mapping

import numpy as np
import torch
from monai.transforms import Transform
from torch.utils.data import Dataset

from custom import distributed

__all__ = [
    "rng_state",
    "set_rng_state",
    "pack_random_state",
    "unpack_random_state",
    "transform_random_states",
    "training_rng_state",
    "set_training_rng_state",
]

logger = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain types (loadable with ``weights_only=True``)."""
    return {
        "python": random.getstate(),
        "numpy": pack_random_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the global RNGs from :func:`rng_state`'s dict (CUDA only where it was saved and is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(unpack_random_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pack_random_state(state: tuple) -> dict[str, Any]:
    """A ``RandomState.get_state()`` tuple as tensors and plain types (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = state
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "gauss": float(gauss)}


def unpack_random_state(packed: Mapping[str, Any]) -> tuple:
    """The ``RandomState.set_state()`` tuple of :func:`pack_random_state`'s dict."""
    return (packed["kind"], packed["keys"].numpy().astype(np.uint32), packed["pos"], packed["has_gauss"],
            packed["gauss"])


def _random_states(root: Any, path: str, found: dict[str, np.random.RandomState], seen: set[int]) -> None:
    """Collect the ``R`` of every MONAI ``Randomizable`` reachable from ``root`` (a dataset or transform)."""
    if id(root) in seen:
        return
    seen.add(id(root))
    if isinstance(root, (list, tuple)):
        for i, item in enumerate(root):
            if isinstance(item, (Transform, list, tuple)):
                _random_states(item, f"{path}[{i}]", found, seen)
        return
    if not isinstance(root, (Transform, Dataset)):
        return
    if isinstance(getattr(root, "R", None), np.random.RandomState):
        found[path] = root.R
    for key, value in vars(root).items():
        if isinstance(value, (Transform, Dataset, list, tuple)):
            _random_states(value, f"{path}.{key}", found, seen)


def transform_random_states(engine: Any) -> dict[str, np.random.RandomState]:
    """The random states of the data augmentation of a trainer's loaders (``data_loader`` and, when present,
    ``unlabeled_data_loader``), keyed by attribute path. With ``num_workers=0`` these live in the main process and
    decide every augmentation; with workers, MONAI's ``DataLoader`` reseeds them per pass from the torch RNG."""
    found: dict[str, np.random.RandomState] = {}
    seen: set[int] = set()
    for name in ("data_loader", "unlabeled_data_loader"):
        dataset = getattr(getattr(engine, name, None), "dataset", None)
        if dataset is not None:
            _random_states(dataset, name, found, seen)
    return found


def training_rng_state(engine: Any | None) -> dict[str, Any]:
    """:func:`rng_state` plus, with an ``engine``, the packed :func:`transform_random_states` under ``"transforms"``."""
    state = rng_state()
    if engine is not None:
        state["transforms"] = {k: pack_random_state(r.get_state()) for k, r in transform_random_states(engine).items()}
    return state


def set_training_rng_state(state: Mapping[str, Any], engine: Any) -> None:
    """Restore :func:`training_rng_state`'s dict into the global RNGs and ``engine``'s augmentation.

    The state is rank 0's: under ``torch.distributed`` the other ranks are reseeded from their rank and
    ``engine.state.iteration`` instead (not bit-exact, but ranks must not draw identical augmentations). A warning
    says when the augmentation's random states differ from the saved ones.
    """
    set_rng_state(state)
    live = transform_random_states(engine)
    saved = state.get("transforms", {})
    for key, packed in saved.items():
        if key in live:
            live[key].set_state(unpack_random_state(packed))
    if not distributed.is_rank0():
        rank, it = distributed.rank(), int(engine.state.iteration)
        seed = (1_000_003 * it + 7919 * rank) % (2**31)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        for i, r in enumerate(live.values()):
            r.seed((seed + i) % (2**32))
    if set(saved) != set(live):
        logger.warning("augmentation random states differ from the checkpoint's (%d saved, %d now): "
                       "the resumed run's augmentations will differ", len(saved), len(live))
