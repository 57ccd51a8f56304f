"""Export a bundle of this repository as a self-contained MONAI bundle folder (and optionally a zip).

``python -m custom.export BUNDLE_DIR OUT_DIR [--weights PATH] [--zip] [--with-data] [--set KEY=VALUE ...]``

The exported folder is what the MONAI Model Zoo expects of a bundle, plus the code it needs::

    OUT_DIR/configs/            the bundle's configs (metadata.json, train/inference/... yaml, logging.conf)
    OUT_DIR/docs/               the bundle's documentation
    OUT_DIR/LICENSE
    OUT_DIR/models/model.pt     the trained weights, a plain state dict (``torch.load(..., weights_only=True)``)
    OUT_DIR/models/encoder.pt   only for a pre-training network: its ``encoder.*`` entries (what ideal_finetune loads)
    OUT_DIR/custom/             this package, vendored: ``custom.paths.bundle_root`` then points at OUT_DIR
    OUT_DIR/datalists/          the committed datalists (``*.json``) and split protocols (``protocols/``)
    OUT_DIR/data/synthetic_acdc only with ``--with-data``: the built-in synthetic dataset, generated (not copied)

Run from inside OUT_DIR, the configs need nothing from this repository::

    cd OUT_DIR && python -m monai.bundle run --config_file configs/inference.yaml --input_glob '/data/*.nii.gz'

``--set KEY=VALUE`` (repeatable) rewrites the top-level ``KEY:`` line of every ``configs/*.yaml`` of the copy that
defines it, e.g. ``--set backbone=resnet18`` for weights trained with ``cpu.yaml``; ``--set CONFIG:KEY=VALUE`` only
that of ``configs/CONFIG.yaml`` (e.g. ``--set train:datalist=/studies/unlabeled.json``, since ``datalist`` means
another thing in inference.yaml). A bundle served by MONAI Label (or another app that reads the configs as they are)
cannot be given command-line overrides, so such settings must be written into the bundle. Only keys with a one-line
value can be set; VALUE is YAML text.

Never copied: ``runs/``, ``eval/``, checkpoints other than the weights, ``__pycache__``, generated data. The folder is
assembled under a hidden temporary name next to OUT_DIR and renamed into place at the end, so a failed export leaves
no half-written bundle.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from custom import paths
from custom.atomic import atomic_path, staged_dir
from custom.errors import ExportError, InputError
from custom.export_settings import apply_settings, parse_settings
from custom.handlers.pretrained_weights import ENCODER_PREFIX, encoder_state_dict

__all__ = ["ExportError", "ExportResult", "export_bundle", "main"]

#: never copied from configs/, docs/, custom/
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "*.egg-info", "*.tmp")
#: entries of a pre-training network's state dict that the encoder-only file leaves out
_PRETRAIN_HEADS = ("dense_head.", "global_head.")


def _package_dir() -> Path:
    """The ``custom/`` package to vendor: of this repository, or of an exported bundle when re-exporting from one."""
    return paths.root() / "custom"


@dataclass
class ExportResult:
    """What :func:`export_bundle` wrote: the bundle folder, its files (relative paths), and the zip if any."""

    bundle_dir: Path
    files: list[str] = field(default_factory=list)
    zip_path: Path | None = None
    weights_source: Path | None = None
    num_tensors: int = 0
    dataset_dir: Path | None = None
    #: ``--set`` keys and the config files (relative paths) rewritten for each
    settings: dict[str, list[str]] = field(default_factory=dict)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights at ``path`` as a plain state dict; an :class:`ExportError` naming the file otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is reported with the file name
        raise ExportError(f"{path}: not a loadable weights-only checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, Mapping) or not state:
        raise ExportError(f"{path}: expected a state dict (parameter name -> tensor), got {type(state).__name__}")
    nested = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if nested:
        raise ExportError(
            f"{path}: not a plain state dict (entries {', '.join(map(repr, nested[:5]))} are not tensors); a resumable "
            "checkpoint such as models/last_checkpoint.pt is not the model: export the best weights models/model.pt"
        )
    return dict(state)


def _check_out_dir(out_dir: Path, bundle_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir}: output folder exists and is not empty; remove it or choose another OUT_DIR")
    for source in (_package_dir(), paths.datalists_dir(), bundle_dir / "configs", bundle_dir / "docs"):
        if out_dir == source or source in out_dir.parents:
            raise ExportError(f"{out_dir}: output folder is inside {source}, which the export copies")


def _default_dataset_args() -> dict:
    """The layout, cases and seed of ``custom.paths.default_dataset``, the dataset the configs use by default."""
    params = inspect.signature(paths.default_dataset).parameters
    return {name: params[name].default for name in ("layout", "cases", "seed")}


def export_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    make_zip: bool = False,
    with_data: bool = False,
    settings: Mapping[str, object] | Sequence[str] | None = None,
) -> ExportResult:
    """Write a self-contained copy of the bundle ``bundle_dir`` to ``out_dir`` (see the module docstring).

    Args:
        bundle_dir: the bundle folder, e.g. ``bundles/ideal_finetune`` (must hold ``configs/metadata.json``).
        out_dir: the new bundle folder; must not exist or be empty.
        weights: the trained weights (a plain state dict); default ``bundle_dir/models/model.pt``.
        make_zip: also write ``<out_dir>.zip`` holding the folder (``<name>/configs/...``).
        with_data: generate the built-in synthetic dataset into ``out_dir/data`` so the default configs run offline
            without generating it on first use.
        settings: top-level config values to write into the copied ``configs/*.yaml`` (see the module docstring),
            ``{"backbone": "resnet18", "train:max_iterations": 300}`` or ``["backbone=resnet18", ...]``; values are
            YAML text (non-strings of a mapping as JSON).

    Raises:
        ExportError: ``bundle_dir`` is not a bundle, the weights are missing or not a plain state dict, ``out_dir``
            (or the zip) already exists with content, a setting is invalid or names no top-level config key.
    """
    bundle_dir = Path(bundle_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if not (bundle_dir / "configs" / "metadata.json").is_file():
        raise ExportError(f"{bundle_dir}: not a bundle folder (no configs/metadata.json)")
    weights_path = Path(weights).resolve() if weights is not None else bundle_dir / "models" / "model.pt"
    if not weights_path.is_file():
        hint = "" if weights is not None else "; train the bundle first or pass --weights PATH"
        raise ExportError(f"{weights_path}: trained weights not found{hint}")
    _check_out_dir(out_dir, bundle_dir)
    zip_path = out_dir.parent / f"{out_dir.name}.zip" if make_zip else None
    if zip_path is not None and zip_path.exists():
        raise ExportError(f"{zip_path}: zip file already exists; remove it or choose another OUT_DIR")
    if not (_package_dir() / "paths.py").is_file() or not paths.datalists_dir().is_dir():
        raise ExportError(f"{paths.root()}: the custom/ package or datalists/ to vendor are missing")
    state = _load_state_dict(weights_path)
    settings = parse_settings(settings)

    result = ExportResult(bundle_dir=out_dir, weights_source=weights_path, num_tensors=len(state))
    with staged_dir(out_dir) as tmp:
        shutil.copytree(bundle_dir / "configs", tmp / "configs", ignore=_IGNORE)
        result.settings = apply_settings(tmp / "configs", settings)
        if (bundle_dir / "docs").is_dir():
            shutil.copytree(bundle_dir / "docs", tmp / "docs", ignore=_IGNORE)
        for name in ("LICENSE", "large_files.yml"):  # large_files.yml: only once weights are published somewhere
            if (bundle_dir / name).is_file():
                shutil.copy2(bundle_dir / name, tmp / name)
        (tmp / "models").mkdir()
        shutil.copyfile(weights_path, tmp / "models" / "model.pt")
        if any(k.startswith(_PRETRAIN_HEADS) for k in state):
            encoder = encoder_state_dict(state)
            if not encoder:
                raise ExportError(f"{weights_path}: pre-training weights without '{ENCODER_PREFIX}*' entries")
            torch.save(encoder, tmp / "models" / "encoder.pt")
        shutil.copytree(_package_dir(), tmp / "custom", ignore=_IGNORE)
        (tmp / "datalists").mkdir()
        for src in sorted(paths.datalists_dir().glob("*.json")):
            shutil.copy2(src, tmp / "datalists" / src.name)
        if paths.protocols_dir().is_dir():
            shutil.copytree(paths.protocols_dir(), tmp / "datalists" / "protocols", ignore=_IGNORE)
        if with_data:
            from custom.data.synthetic import ensure_dataset

            args = _default_dataset_args()
            ensure_dataset(tmp / "data" / f"synthetic_{args['layout']}", **args)
            result.dataset_dir = out_dir / "data" / f"synthetic_{args['layout']}"
        result.files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    if zip_path is not None:
        with atomic_path(zip_path, suffix=".zip") as tmp_zip:
            # make_archive appends ".zip" to the name it is given: it writes tmp_zip itself
            shutil.make_archive(str(tmp_zip)[: -len(".zip")], "zip", root_dir=out_dir.parent, base_dir=out_dir.name)
        result.zip_path = zip_path
    return result


def _summary(result: ExportResult) -> str:
    root = result.bundle_dir
    size = sum((root / f).stat().st_size for f in result.files)
    groups: dict[str, list[str]] = {}
    for f in result.files:
        groups.setdefault(f.split("/", 1)[0] if "/" in f else f, []).append(f)
    lines = [f"exported {root} ({len(result.files)} files, {size / 1e6:.1f} MB):"]
    for top, files in groups.items():
        if top == "models":
            for f in files:
                note = f"from {result.weights_source}, {result.num_tensors} tensors" if f == "models/model.pt" else \
                    "encoder.* entries of model.pt"
                lines.append(f"  {f}  ({(root / f).stat().st_size / 1e6:.1f} MB, {note})")
        elif top == "data":
            lines.append(f"  data/  ({len(files)} files, generated built-in synthetic dataset)")
        elif len(files) == 1 and files[0] == top:
            lines.append(f"  {top}")
        else:
            shown = ", ".join(f.split("/", 1)[1] for f in files[:6]) + (", ..." if len(files) > 6 else "")
            lines.append(f"  {top}/  ({len(files)} file{'s' if len(files) > 1 else ''}: {shown})")
    for key, files in result.settings.items():
        lines.append(f"set {key} in {', '.join(files)}")
    if result.zip_path is not None:
        lines.append(f"zip: {result.zip_path} ({result.zip_path.stat().st_size / 1e6:.1f} MB)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0, or 1 with ``error: ...`` on stderr)."""
    parser = argparse.ArgumentParser(
        prog="python -m custom.export",
        description="Write a self-contained MONAI bundle: configs, docs, LICENSE, models/model.pt, "
        "the vendored custom/ package and the committed datalists.",
    )
    parser.add_argument("bundle_dir", help="bundle folder, e.g. bundles/ideal_finetune")
    parser.add_argument("out_dir", help="new bundle folder (must not exist or be empty)")
    parser.add_argument("--weights", default=None, help="trained weights (default BUNDLE_DIR/models/model.pt)")
    parser.add_argument("--zip", action="store_true", help="also write OUT_DIR.zip")
    parser.add_argument("--with-data", action="store_true",
                        help="generate the built-in synthetic dataset into OUT_DIR/data (else made on first use)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="[CONFIG:]KEY=VALUE",
                        help="write a top-level config value into the copied configs/*.yaml that define KEY (or into "
                        "configs/CONFIG.yaml only), e.g. --set backbone=resnet18, --set train:datalist=/s/u.json "
                        "(repeatable; needed where no command-line overrides can be given, e.g. MONAI Label)")
    args = parser.parse_args(argv)
    try:
        result = export_bundle(args.bundle_dir, args.out_dir, weights=args.weights, make_zip=args.zip,
                               with_data=args.with_data, settings=args.settings)
    except (InputError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
