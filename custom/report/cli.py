"""``python -m custom.report``: the command line of the cardiac function report."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from custom.errors import ReportError
from custom.report.acdc_files import discover_cases, read_pairs_csv
from custom.report.indices import MYOCARDIAL_DENSITY
from custom.report.outputs import write_report
from custom.report.volumes import analyse_case

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m custom.report",
        description="Cardiac function report (LV/RV volumes, EF, myocardial mass) from ACDC-style segmentations.",
    )
    parser.add_argument("--pred", type=Path, help="folder of predicted segmentations (searched recursively)")
    parser.add_argument("--image", type=Path, help="folder of the images patientXXX_frameYY.nii[.gz]")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--gt", type=Path, help="folder of reference segmentations patientXXX_frameYY_gt.nii[.gz]")
    parser.add_argument("--pairs", type=Path, help="CSV: patient, ed_pred, es_pred[, ed_image, es_image, ed_gt, es_gt]")
    parser.add_argument(
        "--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"), help="voxel size in mm, replaces the headers"
    )
    parser.add_argument("--pred-suffix", help="file-name suffix of predictions, e.g. _seg (default: any, unique)")
    parser.add_argument("--gt-suffix", default="_gt", help="file-name suffix of references (default: _gt)")
    parser.add_argument("--density", type=float, default=MYOCARDIAL_DENSITY, help="myocardial density, g/ml")
    parser.add_argument("--skip-incomplete", action="store_true", help="skip patients without ED or ES, with a warning")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pairs is None and (args.pred is None or args.image is None):
        parser.error("--pred and --image are required unless --pairs is given")
    if args.spacing is not None and not all(math.isfinite(s) and s > 0 for s in args.spacing):
        parser.error(f"--spacing values must be positive, got {args.spacing}")
    for option in ("pred", "image", "gt", "pairs"):
        path = getattr(args, option)
        if path is not None and not path.exists():
            parser.error(f"--{option} {path} does not exist")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the report; returns 0 on success and 1 (with a one-line message on stderr) on bad inputs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        if args.pairs is not None:
            cases = read_pairs_csv(args.pairs, args.image, args.gt, args.gt_suffix, args.skip_incomplete)
        else:
            cases = discover_cases(
                args.pred, args.image, args.gt, args.pred_suffix, args.gt_suffix, args.skip_incomplete
            )
        if not cases:
            raise ReportError("no complete patient to report")
        if args.spacing is not None:
            print(f"using --spacing {' '.join(f'{s:g}' for s in args.spacing)} mm for every segmentation")
        results = [analyse_case(case, args.spacing, args.density) for case in cases]
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    written = write_report(results, args.out)
    print(f"{len(results)} patient(s): wrote {len(written)} file(s) to {args.out}")
    return 0
