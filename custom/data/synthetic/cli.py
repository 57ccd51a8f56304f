"""``python -m custom.data.synthetic``: generate (or find) a synthetic dataset, optionally with a preview."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from custom.data.synthetic.cache import LAYOUTS, RECORD_NAME, ensure_dataset
from custom.data.synthetic.preview import save_preview

__all__ = ["main"]

_DESCRIPTION = "Built-in, deterministic synthetic cardiac MRI in the ACDC and MM-WHS file layouts."


def _du(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m custom.data.synthetic --out DIR [--cases N] [--seed S] [--layout acdc|mmwhs] [--preview PNG]``."""
    parser = argparse.ArgumentParser(prog="python -m custom.data.synthetic", description=_DESCRIPTION)
    parser.add_argument("--out", required=True, help="dataset folder (generated unless it already holds this data)")
    parser.add_argument("--cases", type=int, default=20, help="number of patients / volumes (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--layout", choices=LAYOUTS, default="acdc", help="file layout (default acdc)")
    parser.add_argument("--preview", default=None, help="also save a PNG of a few cases with labels overlaid")
    args = parser.parse_args(argv)

    root = Path(args.out)
    existed = (root / RECORD_NAME).is_file()
    start = time.perf_counter()
    try:
        ensure_dataset(root, layout=args.layout, cases=args.cases, seed=args.seed)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    files = json.loads((root / RECORD_NAME).read_text())["files"]
    verb = "found existing" if existed else f"wrote ({time.perf_counter() - start:.1f} s)"
    print(f"{verb} {args.layout} dataset: {args.cases} cases, seed {args.seed}, {len(files)} files, "
          f"{_du(root) / 1e6:.1f} MB in {root}")
    if args.preview:
        print(f"preview: {save_preview(root, args.preview, layout=args.layout)}")
    return 0
