"""What an experiment runs: compute profiles, methods, datalists with held-out patients, and the run list."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from custom.data.datalist import DatasetScan, assemble_datalist, scan_dataset, warn_missing
from custom.data.protocols import Protocol
from custom import paths
from custom.errors import InputError

__all__ = [
    "REPO_ROOT",
    "Profile",
    "Method",
    "RunSpec",
    "load_profile",
    "load_methods",
    "holdout_cases",
    "with_holdout",
    "with_extra_validation",
    "plan_runs",
    "ExperimentDatalists",
]

REPO_ROOT = paths.root()
_HERE = Path(__file__).resolve().parent
PROFILE_DIR = _HERE / "profiles"
METHODS_FILE = _HERE / "methods.yaml"


@dataclass(frozen=True)
class Profile:
    """Bundle config files and overrides of the pre-training and fine-tuning runs at one compute budget."""

    name: str
    description: str
    pretrain_configs: tuple[str, ...]
    pretrain_overrides: Mapping[str, Any]
    finetune_configs: tuple[str, ...]
    finetune_overrides: Mapping[str, Any]


@dataclass(frozen=True)
class Method:
    """One row of the comparison: which pre-training (if any) and which fine-tuning configuration."""

    name: str
    description: str
    pretraining: str | None = None
    finetune_configs: tuple[str, ...] = ()
    finetune_overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def uses_unlabeled(self) -> bool:
        """Whether its fine-tuning has an unlabeled term (``unsup_weight`` != 0; train.yaml's default is 1)."""
        return float(self.finetune_overrides.get("unsup_weight", 1.0)) != 0.0


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run: a method on one labeled set, subset and seed."""

    method: Method
    fraction: str
    subset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method.name}/{self.fraction}_{self.subset}_seed{self.seed}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    return data


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (``custom/experiments/profiles/<name>.yaml``: tiny, cpu, paper) or YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
            raise InputError(f"profile {name_or_path!r}: unknown (known: {', '.join(known)}, or a YAML path)")
    data = _read_yaml(path)
    try:
        return Profile(
            name=path.stem,
            description=str(data.get("description", "")),
            pretrain_configs=tuple(data["pretrain"]["configs"]),
            pretrain_overrides=dict(data["pretrain"].get("overrides") or {}),
            finetune_configs=tuple(data["finetune"]["configs"]),
            finetune_overrides=dict(data["finetune"].get("overrides") or {}),
        )
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: profile needs pretrain.configs and finetune.configs ({e})") from None


def load_methods(path: Path = METHODS_FILE) -> tuple[dict[str, Method], dict[str, dict[str, Any]]]:
    """``({method name: Method}, {pre-training name: bundle overrides})`` from ``methods.yaml``."""
    data = _read_yaml(path)
    pretraining = {k: dict(v or {}) for k, v in (data.get("pretraining") or {}).items()}
    methods = {}
    for name, spec in (data.get("methods") or {}).items():
        if spec.get("pretraining") is not None and spec["pretraining"] not in pretraining:
            raise InputError(f"{path}: method {name} uses unknown pre-training {spec['pretraining']!r}")
        methods[name] = Method(
            name=name,
            description=str(spec.get("description", "")),
            pretraining=spec.get("pretraining"),
            finetune_configs=tuple(spec.get("finetune_configs") or ()),
            finetune_overrides=dict(spec.get("finetune_overrides") or {}),
        )
    return methods, pretraining


def holdout_cases(protocol: Protocol | str, candidates: Sequence[str], count: int) -> list[str]:
    """``count`` patients of ``candidates`` that no labeled subset of the protocol names, evenly spaced in case
    order (ACDC orders patients by pathology group, so this spreads them over the groups)."""
    named = Protocol.of(protocol).named_cases()
    pool = sorted(c for c in candidates if c not in named)
    if count > len(pool):
        raise InputError(f"--holdout {count}: only {len(pool)} training-pool patients are outside every labeled subset")
    if count == 0:
        return []
    return [pool[int(i * len(pool) / count)] for i in range(count)]


def with_holdout(datalist: dict[str, Any], held_out: Sequence[str], labeled_items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The datalist with the ``held_out`` patients removed from every split and put, with labels, into ``test``.

    ``labeled_items`` supplies image/label items of those patients (e.g. the ``training`` split of the protocol's
    100 % labeled set), since the unlabeled split carries no labels.
    """
    held = set(held_out)
    out = dict(datalist)
    for split in ("training", "unlabeled", "validation", "pretraining"):
        out[split] = [item for item in datalist.get(split, []) if item.get("case") not in held]
    out["test"] = [dict(item) for item in labeled_items if item.get("case") in held]
    out["held_out"] = sorted(held)
    if not out["training"]:
        raise InputError(f"datalist {datalist.get('name')}: no labeled training item left after the hold-out")
    return out


def with_extra_validation(datalist: dict[str, Any], cases: Sequence[str],
                          labeled_items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The datalist with the patients ``cases`` added, with labels, to ``validation`` and removed from ``training``
    and ``unlabeled``. They stay in ``pretraining``, as the protocol's own validation patients do (no labels there).

    ``labeled_items`` supplies image/label items of those patients, as for :func:`with_holdout`.
    """
    extra = set(cases)
    out = dict(datalist)
    for split in ("training", "unlabeled"):
        out[split] = [item for item in datalist.get(split, []) if item.get("case") not in extra]
    out["validation"] = [*datalist.get("validation", []),
                         *(dict(item) for item in labeled_items if item.get("case") in extra)]
    out["extra_validation"] = sorted(extra)
    return out


def plan_runs(methods: Sequence[Method], fractions: Sequence[str], subsets: Sequence[str], seeds: Sequence[int]) -> list[RunSpec]:
    """Every (seed, fraction, subset, method) combination, in that nesting order (methods vary fastest, so a
    partial experiment already compares all methods on the first labeled sets)."""
    return [RunSpec(m, f, s, seed) for seed, f, s, m in itertools.product(seeds, fractions, subsets, methods)]


class ExperimentDatalists:
    """The datalists of one experiment, one per (labeled set, subset, seed), from one scan of the dataset folder.

    The folder is scanned on the first :meth:`build` (checking its files if that call asks to), and the cases the
    protocol names but the folder lacks are reported once, then. With ``holdout`` > 0 (ACDC-layout protocols),
    that many training-pool patients that no labeled subset names (:func:`holdout_cases`) are moved, with their
    labels, into the test split of every datalist (:func:`with_holdout`). With ``extra_validation`` > 0, that many
    more such patients, none of them held out, join the validation split (:func:`with_extra_validation`): the test
    split stays the same as without them.
    """

    def __init__(self, dataset_dir: str, protocol: Protocol, allow_missing: bool, holdout: int,
                 extra_validation: int = 0) -> None:
        self.dataset_dir, self.protocol, self.allow_missing, self.holdout = dataset_dir, protocol, allow_missing, holdout
        self.extra_validation = extra_validation
        self._scan: DatasetScan | None = None

    def build(self, fraction: str, subset: str, seed: int, check_files: bool) -> dict[str, Any]:
        """The datalist of labeled set ``fraction``/``subset`` (``seed`` draws MMWHS slice fractions)."""
        first = self._scan is None
        if self._scan is None:
            self._scan = scan_dataset(self.dataset_dir, self.protocol, check_files)
        datalist = assemble_datalist(self._scan, self.protocol, fraction, subset, seed, self.allow_missing)
        if first:
            warn_missing(datalist, self.protocol, self._scan.root)
        if self.holdout <= 0 and self.extra_validation <= 0:
            return datalist
        if self.protocol.layout != "acdc":
            option = "--holdout" if self.holdout > 0 else "--extra-validation"
            raise InputError(f"{option}: protocol {self.protocol.source} has its own splits; {option} needs an "
                             "ACDC-layout protocol")
        pool = [c for c in self.protocol.training_pool() if c in self._scan.cases]
        labeled_items = [item for case in pool for item in self._scan.cases[case]]
        held = holdout_cases(self.protocol, pool, self.holdout)
        if self.holdout > 0:
            datalist = with_holdout(datalist, held, labeled_items)
        if self.extra_validation > 0:
            taken = self.protocol.named_cases() | set(held)
            free = [c for c in pool if c not in taken]
            if self.extra_validation > len(free):
                raise InputError(f"--extra-validation {self.extra_validation}: only {len(free)} training-pool patients "
                                 "are outside every labeled subset and the hold-out")
            datalist = with_extra_validation(datalist, holdout_cases(self.protocol, free, self.extra_validation),
                                             labeled_items)
        return datalist
