"""Split protocols: which cases are labeled, unlabeled, validation and test.

A protocol definition is a JSON file under ``datalists/protocols/`` (``acdc_paper``, ``mmwhs_paper``,
``synthetic_acdc``), or the ``folder`` protocol built from command-line options (a seeded random split of any
folder). :class:`Protocol` is the one place that knows a definition: it is loaded and checked once, then passed
to whoever needs its labeled sets, named cases, labels or splits. This module knows nothing about files:
:mod:`custom.data.datalist` maps cases to paths.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from custom import paths
from custom.errors import ProtocolError

__all__ = [
    "PROTOCOL_DIR",
    "FOLDER",
    "ProtocolError",
    "Splits",
    "Protocol",
    "available_protocols",
    "load_protocol",
    "acdc_splits",
    "mmwhs_splits",
    "random_case_splits",
    "folder_splits",
    "label_mapping",
]

PROTOCOL_DIR = paths.protocols_dir()
FOLDER = "folder"  # the protocol name of a seeded random split of any folder (no definition file)


@dataclass
class Splits:
    """Case-level splits. ``labeled_slices`` optionally restricts labeled cases to some slice indices
    (slice-fraction protocols such as ``mmwhs_paper``); the other slices of those cases are unlabeled."""

    labeled: list[str]
    unlabeled: list[str]
    validation: list[str]
    test: list[str]
    labeled_slices: dict[str, list[int]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def available_protocols(protocol_dir: Path = PROTOCOL_DIR) -> list[str]:
    return sorted(p.stem for p in protocol_dir.glob("*.json"))


def load_protocol(name_or_path: str | Path, protocol_dir: Path = PROTOCOL_DIR) -> dict[str, Any]:
    """Load a protocol definition by name (``acdc_paper``) or by path to its JSON file."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = protocol_dir / f"{name_or_path}.json"
    if not path.is_file():
        raise ProtocolError(
            f"unknown protocol {str(name_or_path)!r}: no file {path}; available: {', '.join(available_protocols(protocol_dir))}"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ProtocolError(f"{path}: not valid JSON ({e})") from e


def _acdc_id(number: int) -> str:
    return f"patient{number:03d}"


def _mmwhs_id(number: int) -> str:
    return f"mr_train_{number}"


def _check_missing(wanted: Sequence[str], present: set[str], allow_missing: bool, protocol: str) -> list[str]:
    missing = [c for c in wanted if c not in present]
    if missing and not allow_missing:
        raise ProtocolError(
            f"protocol {protocol!r} names {len(missing)} case(s) missing from the dataset folder: "
            f"{', '.join(missing)} (pass --allow-missing to continue without them)"
        )
    return missing


def acdc_splits(
    protocol: Mapping[str, Any], present: Sequence[str], labeled: str, subset: str = "c1", allow_missing: bool = False
) -> Splits:
    """Splits of an ACDC-style protocol (``acdc_paper``, ``synthetic_acdc``).

    Args:
        protocol: the loaded definition.
        present: case ids found in the folder, e.g. ``["patient001", ...]``.
        labeled: labeled-set name, e.g. ``"L8"``.
        subset: subset name within it, e.g. ``"c1"``.
        allow_missing: drop (and report) cases the protocol names but the folder lacks, instead of failing.
    """
    name = protocol["name"]
    sets = protocol["labeled"]
    if labeled not in sets:
        raise ProtocolError(f"protocol {name!r} has no labeled set {labeled!r}; choose one of {', '.join(sets)}")
    subsets = {k: v for k, v in sets[labeled].items() if k != "fraction"}
    if subset not in subsets:
        raise ProtocolError(f"labeled set {labeled!r} of {name!r} has no subset {subset!r}; choose one of {', '.join(subsets)}")
    first, last = protocol["all_cases"]["first"], protocol["all_cases"]["last"]
    test = [_acdc_id(n) for n in protocol["test"]]
    validation = [_acdc_id(n) for n in protocol["validation"]]
    pool = [_acdc_id(n) for n in range(first, last + 1) if _acdc_id(n) not in set(test) | set(validation)]
    chosen = subsets[subset]
    labeled_ids = pool if chosen == "all" else [_acdc_id(n) for n in chosen]
    if not set(labeled_ids) <= set(pool):
        raise ProtocolError(f"protocol {name!r}: labeled set {labeled}/{subset} names cases outside the training pool")
    present_set = set(present)
    missing = _check_missing(sorted(set(pool) | set(test) | set(validation)), present_set, allow_missing, name)
    keep = lambda ids: [c for c in ids if c in present_set]  # noqa: E731
    labeled_kept = keep(labeled_ids)
    if not labeled_kept:
        raise ProtocolError(f"protocol {name!r}: none of the labeled cases {labeled_ids} is in the dataset folder")
    return Splits(
        labeled=labeled_kept,
        unlabeled=keep([c for c in pool if c not in set(labeled_ids)]),
        validation=keep(validation),
        test=keep(test),
        missing=missing,
    )


def mmwhs_splits(
    protocol: Mapping[str, Any],
    present: Sequence[str],
    fraction: str,
    num_slices: Mapping[str, int],
    seed: int = 0,
    allow_missing: bool = False,
) -> Splits:
    """Splits of the ``mmwhs_paper`` protocol: a seeded random ``fraction`` of all training slices is labeled.

    Args:
        fraction: a key of ``slice_fractions`` (``"F10"``) or a number in (0, 1].
        num_slices: slices per training case (last array axis), used to draw the labeled slices.
    """
    name = protocol["name"]
    fractions = protocol["slice_fractions"]
    try:
        frac = float(fractions[fraction]) if fraction in fractions else float(fraction)
    except ValueError:
        raise ProtocolError(f"protocol {name!r} has no fraction {fraction!r}; choose one of {', '.join(fractions)}") from None
    if not 0.0 < frac <= 1.0:
        raise ProtocolError(f"labeled fraction must be in (0, 1], got {frac}")
    train = [_mmwhs_id(n) for n in protocol["train"]]
    validation = [_mmwhs_id(n) for n in protocol["validation"]]
    test = [_mmwhs_id(n) for n in protocol["test"]]
    present_set = set(present)
    missing = _check_missing(train + validation + test, present_set, allow_missing, name)
    train = [c for c in train if c in present_set]
    if not train:
        raise ProtocolError(f"protocol {name!r}: no training case is in the dataset folder")
    all_slices = [(c, z) for c in train for z in range(num_slices[c])]
    n_labeled = max(1, round(frac * len(all_slices)))
    chosen = sorted(random.Random(seed).sample(all_slices, n_labeled))
    labeled_slices: dict[str, list[int]] = {}
    for case, z in chosen:
        labeled_slices.setdefault(case, []).append(z)
    return Splits(
        labeled=sorted(labeled_slices),
        unlabeled=train,  # each case contributes its slices that are not labeled
        validation=[c for c in validation if c in present_set],
        test=[c for c in test if c in present_set],
        labeled_slices=labeled_slices,
        missing=missing,
    )


def random_case_splits(
    cases: Sequence[str], labeled_fraction: float, val_fraction: float, test_fraction: float, seed: int = 0
) -> Splits:
    """Seeded case-level split for bring-your-own folders: test and validation first, then labeled cases."""
    if not 0.0 < labeled_fraction <= 1.0:
        raise ProtocolError(f"labeled fraction must be in (0, 1], got {labeled_fraction}")
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1.0:
        raise ProtocolError(f"validation + test fractions must be >= 0 and < 1, got {val_fraction} + {test_fraction}")
    order = sorted(cases)
    random.Random(seed).shuffle(order)
    n_test, n_val = round(test_fraction * len(order)), round(val_fraction * len(order))
    test, validation, pool = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if not pool:
        raise ProtocolError(f"no training cases left out of {len(order)} after the validation/test split")
    n_labeled = max(1, round(labeled_fraction * len(pool)))
    return Splits(
        labeled=sorted(pool[:n_labeled]), unlabeled=sorted(pool[n_labeled:]), validation=sorted(validation), test=sorted(test)
    )


def folder_splits(
    cases: Sequence[str],
    with_label: Collection[str],
    labeled_fraction: float,
    val_fraction: float,
    test_fraction: float,
    seed: int = 0,
) -> Splits:
    """Splits of the ``folder`` protocol: validation, test and labeled cases are drawn (:func:`random_case_splits`)
    from the cases ``with_label``; every other case is unlabeled (a folder of images only is for pre-training)."""
    labeled = sorted(c for c in cases if c in with_label)
    splits = random_case_splits(labeled, labeled_fraction, val_fraction, test_fraction, seed) if labeled else Splits([], [], [], [])
    splits.unlabeled = sorted(set(splits.unlabeled) | (set(cases) - set(labeled)))
    return splits


def label_mapping(protocol: Mapping[str, Any]) -> dict[int, int]:
    """Raw label value -> training class index (background first), e.g. MMWHS ``{0: 0, 205: 1, 420: 2, ...}``."""
    return {int(raw): i for i, raw in enumerate(protocol["labels"].values())}


_REQUIRED_KEYS = {
    "acdc": ("name", "labels", "all_cases", "test", "validation", "labeled"),
    "mmwhs": ("name", "labels", "train", "validation", "test", "slice_fractions"),
}


@dataclass(frozen=True)
class Protocol:
    """A checked protocol: its labeled sets, the cases it names, its labels, and the splits of a folder's cases.

    Load it once (:meth:`load`, :meth:`folder`) and pass it down. ``definition`` is the protocol JSON (for
    ``folder``: the image glob, the image -> label name substitution and the split fractions); ``source`` is what
    the user called it (a name or a JSON path), for messages.
    """

    definition: Mapping[str, Any]
    source: str

    @classmethod
    def load(cls, name_or_path: str | Path, protocol_dir: Path = PROTOCOL_DIR) -> Protocol:
        """The protocol of that name (``acdc_paper``) or JSON path, with the keys its layout needs checked."""
        definition = load_protocol(name_or_path, protocol_dir)
        layout = definition.get("layout")
        if layout not in _REQUIRED_KEYS:
            raise ProtocolError(f"protocol {name_or_path}: 'layout' must be one of {sorted(_REQUIRED_KEYS)}, got {layout!r}")
        missing = [k for k in _REQUIRED_KEYS[layout] if k not in definition]
        if missing:
            raise ProtocolError(f"protocol {name_or_path}: definition lacks {', '.join(missing)}")
        return cls(definition, str(name_or_path))

    @classmethod
    def folder(
        cls,
        images: str | None,
        label_replace: Sequence[str] | None = None,
        labeled_fraction: float = 0.1,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
    ) -> Protocol:
        """The ``folder`` protocol: the files matching the glob ``images`` are the cases; ``label_replace`` (old, new)
        turns an image file name into its label file name; the fractions size the seeded random splits."""
        if not images:
            raise ProtocolError("protocol 'folder' needs --images GLOB (e.g. '*_image.nii.gz')")
        definition = {
            "name": FOLDER,
            "layout": FOLDER,
            "labels": None,
            "images": images,
            "label_replace": list(label_replace) if label_replace else None,
            "fractions": {"labeled": labeled_fraction, "validation": val_fraction, "test": test_fraction},
        }
        return cls(definition, FOLDER)

    @classmethod
    def of(cls, protocol: Protocol | str | Path) -> Protocol:
        """``protocol`` itself, or the protocol of that name or path."""
        return protocol if isinstance(protocol, Protocol) else cls.load(protocol)

    @property
    def name(self) -> str:
        return self.definition["name"]

    @property
    def layout(self) -> str:
        """``"acdc"`` (patient folders, ED/ES frames), ``"mmwhs"`` (one volume per case) or ``"folder"``."""
        return self.definition["layout"]

    @property
    def labels(self) -> dict[str, int] | None:
        """``{structure: raw label value}`` with background first, e.g. ``{"background": 0, "RV": 1, ...}``; None for
        ``folder``."""
        return self.definition.get("labels")

    def label_mapping(self) -> dict[int, int] | None:
        """Raw label value -> training class index (:func:`label_mapping`); None without labels."""
        return None if self.labels is None else label_mapping(self.definition)

    @property
    def labeled_sets(self) -> dict[str, float]:
        """``{labeled set: labeled fraction}``: ACDC-style named subsets (``{"L8": 0.1, ...}``) or slice fractions
        (``{"F10": 0.1, ...}``); empty for ``folder``."""
        sets = {k: float(v["fraction"]) for k, v in (self.definition.get("labeled") or {}).items()}
        sets.update({k: float(v) for k, v in (self.definition.get("slice_fractions") or {}).items()})
        return sets

    def named_cases(self) -> set[str]:
        """Case ids that some labeled subset names (ACDC layout), e.g. ``{"patient002", "patient022", ...}``."""
        named = set()
        for subsets in (self.definition.get("labeled") or {}).values():
            for key, cases in subsets.items():
                if key != "fraction" and isinstance(cases, list):
                    named.update(_acdc_id(int(c)) for c in cases)
        return named

    def training_pool(self) -> list[str]:
        """The ACDC-layout training pool: every case of ``all_cases`` outside the test and validation splits."""
        if self.layout != "acdc":
            raise ProtocolError(f"protocol {self.name!r}: only ACDC-layout protocols have a named training pool")
        held = {_acdc_id(n) for n in (*self.definition["test"], *self.definition["validation"])}
        first, last = self.definition["all_cases"]["first"], self.definition["all_cases"]["last"]
        return [_acdc_id(n) for n in range(first, last + 1) if _acdc_id(n) not in held]

    def splits(
        self,
        present: Sequence[str],
        labeled: str,
        subset: str = "c1",
        seed: int = 0,
        num_slices: Mapping[str, int] | None = None,
        with_label: Collection[str] | None = None,
        allow_missing: bool = False,
    ) -> Splits:
        """Case-level splits of the cases ``present`` in a folder for one labeled set.

        Args:
            labeled, subset: the labeled set (``"L8"``, ``"F10"``; ignored by ``folder``) and its subset (ACDC).
            seed: draws the labeled slices (MMWHS) and the random splits (``folder``).
            num_slices: slices per case; needed by slice-fraction protocols (MMWHS).
            with_label: the present cases that have a label file (``folder``; default: all of them).
            allow_missing: drop (and list in ``missing``) cases the protocol names but the folder lacks, instead of failing.
        """
        if self.layout == "acdc":
            return acdc_splits(self.definition, present, labeled, subset, allow_missing)
        if self.layout == "mmwhs":
            return mmwhs_splits(self.definition, present, labeled, num_slices or {}, seed, allow_missing)
        fractions = self.definition["fractions"]
        return folder_splits(present, present if with_label is None else with_label, fractions["labeled"],
                             fractions["validation"], fractions["test"], seed)

    def datalist_name(self, labeled: str, subset: str, seed: int) -> str:
        """The ``name`` of a datalist of this protocol, e.g. ``acdc_paper_L8_c1`` or ``mmwhs_paper_F10_seed0``."""
        return f"{self.name}_{labeled}_seed{seed}" if self.layout == "mmwhs" else f"{self.name}_{labeled}_{subset}"
