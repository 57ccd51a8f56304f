"""Dataset folder + protocol -> MONAI (decathlon-style) datalist JSON.

Examples::

    python -m custom.data.datalist --dataset-dir ../shared/data/acdc --protocol acdc_paper \\
        --labeled L8 --subset c1 --allow-missing --out datalists/acdc_L8_c1.json
    python -m custom.data.datalist --dataset-dir DIR --protocol folder --images "*_image.nii.gz" \\
        --label-replace _image _label --labeled-fraction 0.1 --out my.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from custom.data.datalist.build import build_datalist
from custom.data.datalist.checks import DatasetError
from custom.atomic import write_json_atomic
from custom.data.protocols import FOLDER, ProtocolError, available_protocols

__all__ = ["main"]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m custom.data.datalist", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset-dir", required=True, help="dataset folder (ACDC, MMWHS or any layout with --protocol folder)")
    p.add_argument("--protocol", default="acdc_paper", help=f"one of {', '.join(available_protocols() + [FOLDER])} or a protocol JSON path")
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
