"""``python -m custom.experiments``: the paper's comparison (Tables 1-2, Fig. 3) with one command.

Per dataset it pre-trains once per pre-training kind (reused across labeled sets), fine-tunes every
(method, labeled set, subset, seed), evaluates each on whole volumes of the evaluation split, and writes
``results.csv``, ``results.md``, ``dice_vs_fraction.png`` and ``qualitative_<labeled set>.png`` into ``--out``.
Runs are resumable: finished runs are skipped, interrupted ones continue from their last checkpoint.

Example (real ACDC with the 20 test patients withheld: evaluate on 10 held-out training-pool patients)::

    python -m custom.experiments --dataset-dir ../shared/data/acdc --protocol acdc_paper --allow-missing \\
        --holdout 10 --fractions L1 L2 L8 --methods supervised cps_scratch ideal --profile cpu --out runs/acdc_cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from custom.atomic import write_json_atomic
from custom.data.datalist import load_split
from custom.data.protocols import Protocol
from custom.errors import InputError
from custom.experiments.compare import paired_markdown
from custom.experiments.plan import REPO_ROOT, ExperimentDatalists, load_methods, load_profile, plan_runs
from custom.experiments.runner import RunFailed, finetune_run, install_signal_forwarding, label_overrides, pretrain_run
from custom.experiments.tables import (PAPER_ACDC_DICE, plot_dice_vs_fraction, qualitative_figure, result_rows,
                                       results_markdown, write_results_csv)

DEFAULT_METHODS = ["supervised", "cps_scratch", "ideal"]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m custom.experiments", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset-dir", help="dataset folder (default: the built-in synthetic ACDC data)")
    p.add_argument("--protocol", default="synthetic_acdc", help="acdc_paper, mmwhs_paper, synthetic_acdc or a protocol JSON")
    p.add_argument("--fractions", nargs="+", default=None, help="labeled sets, e.g. L1 L2 L8 (default: all of the protocol but L100)")
    p.add_argument("--subsets", nargs="+", default=["c1"], help="labeled subsets (ACDC: c1..c5)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="methods of custom/experiments/methods.yaml")
    p.add_argument("--profile", default="cpu", help="tiny, cpu, paper, or a profile YAML")
    p.add_argument("--out", help="output folder (default: runs/experiments/<protocol>_<profile>)")
    p.add_argument("--allow-missing", action="store_true", help="accept cases the protocol names but the folder lacks")
    p.add_argument("--holdout", type=int, default=0,
                   help="move N training-pool patients that no labeled subset names into the test split (no run trains on them)")
    p.add_argument("--extra-validation", type=int, default=0,
                   help="add N more training-pool patients that no labeled subset names and --holdout does not take to "
                        "the validation split that picks the saved model (acdc_paper's own: 2 patients); the test "
                        "split is unchanged")
    p.add_argument("--eval-split", default="test", help="datalist split to evaluate on (default: test)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables and figures from finished runs")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    return p.parse_args(argv)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# A run with an unlabeled term against a supervised-only run of the same profile, until one is timed: its warm-up (a
# quarter of the iterations) costs the same, later iterations 2-2.2x as much. Measured ideal / supervised training
# time: 0.7-1.8x on bf16 CPUs, 2.1-3.0x in fp32 on an AVX2 CPU.
UNLABELED_COST = 2.0


def _estimate_s(timed: Sequence[tuple[str, bool, float]], method: str, uses_unlabeled: bool) -> float:
    """Seconds one run of ``method`` should take, from the ``(method, uses_unlabeled, seconds)`` of timed runs: their
    mean for the same method, else for methods of the same kind, else all of them scaled by ``UNLABELED_COST``."""
    for same in ([t for m, _, t in timed if m == method], [t for _, u, t in timed if u == uses_unlabeled]):
        if same:
            return sum(same) / len(same)
    others = sum(t for _, _, t in timed) / len(timed)
    return others * UNLABELED_COST if uses_unlabeled else others / UNLABELED_COST


def _eta(timed: Sequence[tuple[str, bool, float]], pending: Sequence[tuple[str, bool]]) -> str:
    """``; ETA ...`` for the ``(method, uses_unlabeled)`` runs left, from the runs of this invocation timed so far
    ('' when none is left or none is timed)."""
    if not pending or not timed:
        return ""
    seconds = sum(_estimate_s(timed, method, unlabeled) for method, unlabeled in pending)
    finish = time.strftime("%H:%M", time.localtime(time.time() + seconds))
    return f"; {len(pending)} run(s) left, ETA {seconds / 60:.0f} min (about {finish})"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    from custom.paths import default_dataset

    dataset_dir = str(Path(args.dataset_dir).resolve()) if args.dataset_dir else default_dataset("acdc")
    protocol = Protocol.load(args.protocol)
    labeled_sets = protocol.labeled_sets
    fractions = args.fractions or [k for k in labeled_sets if labeled_sets[k] < 1.0]
    if not fractions:
        raise InputError(f"protocol {protocol.name}: no labeled sets; pass --fractions")
    for f in fractions:
        if labeled_sets and f not in labeled_sets:
            raise InputError(f"--fractions {f}: protocol {protocol.name} has {', '.join(labeled_sets)}")
    profile = load_profile(args.profile)
    methods_all, pretraining = load_methods()
    unknown = [m for m in args.methods if m not in methods_all]
    if unknown:
        raise InputError(f"--methods {' '.join(unknown)}: unknown (known: {', '.join(methods_all)})")
    methods = [methods_all[m] for m in args.methods]
    out = Path(args.out or REPO_ROOT / "runs" / "experiments" / f"{protocol.name}_{profile.name}").resolve()
    structures = {k: v for k, v in (protocol.labels or {}).items() if v != 0}
    specs = plan_runs(methods, fractions, args.subsets, args.seeds)
    kinds = sorted({m.pretraining for m in methods if m.pretraining})
    _log(f"experiment {out}: profile {profile.name} ({profile.description}); {len(kinds)} pre-training(s), {len(specs)} fine-tuning runs")
    if args.dry_run:
        for k in kinds:
            print(f"  pretrain/{k}")
        for s in specs:
            print(f"  runs/{s.name}")
        return 0

    failures: list[str] = []
    datalists: dict[tuple[str, str, int], Path] = {}
    experiment_datalists = ExperimentDatalists(dataset_dir, protocol, args.allow_missing, args.holdout,
                                               args.extra_validation)
    for i, (seed, f, s) in enumerate(dict.fromkeys((sp.seed, sp.fraction, sp.subset) for sp in specs)):
        path = out / "datalists" / f"{f}_{s}_seed{seed}.json"
        made_with = {"dataset_dir": dataset_dir, "protocol": args.protocol, "holdout": args.holdout,
                     "allow_missing": args.allow_missing}
        if args.extra_validation:  # (left out when 0: the record of datalists made before the option)
            made_with["extra_validation"] = args.extra_validation
        if path.is_file():
            cached = json.loads(path.read_text()).get("experiment", {})
            if cached and cached != made_with:  # (datalists of older runner versions carry no record)
                raise InputError(f"{path}: made with {cached}, not {made_with}; use another --out (or delete it)")
        else:
            dl = experiment_datalists.build(f, s, seed, check_files=(i == 0))
            if not dl.get(args.eval_split):
                raise InputError(f"{path.name}: the {args.eval_split!r} split is empty (withheld test set? use --holdout N "
                                 "or --eval-split validation)")
            write_json_atomic({**dl, "experiment": made_with}, path)
        datalists[(f, s, seed)] = path
    first_datalist = next(iter(datalists.values()))

    if not args.report_only:
        install_signal_forwarding()
        encoders: dict[str, Path] = {}
        for kind in kinds:
            run = pretrain_run(out / "pretrain" / kind, kind, pretraining[kind], profile, dataset_dir, first_datalist, args.seeds[0])
            _log(f"pre-training {kind}: {'done' if run.done() else 'running'} ({run.folder})")
            try:
                run.run({"pretraining": kind, "profile": profile.name}, log=_log)
                encoders[kind] = run.folder / "models" / "encoder.pt"
            except RunFailed as e:
                failures.append(f"pretrain/{kind}: {e}")
                _log(f"FAILED pre-training {kind}: {e}")
        runs = []
        for n, spec in enumerate(specs, 1):
            if spec.method.pretraining and spec.method.pretraining not in encoders:
                failures.append(f"{spec.name}: skipped, its pre-training failed")
                continue
            runs.append((n, spec, finetune_run(out / "runs" / spec.name, spec, profile, dataset_dir,
                                               datalists[(spec.fraction, spec.subset, spec.seed)], args.eval_split,
                                               encoders.get(spec.method.pretraining), protocol.labels)))
        pending = [(spec.method.name, spec.method.uses_unlabeled) for _, spec, run in runs if not run.done()]
        timed: list[tuple[str, bool, float]] = []
        for n, spec, run in runs:
            if run.done():
                _log(f"[{n}/{len(specs)}] {spec.name}: done before, skipped")
                continue
            _log(f"[{n}/{len(specs)}] {spec.name}: training ({run.folder / 'train.log'})")
            extra = {"method": spec.method.name, "fraction": spec.fraction, "subset": spec.subset, "seed": spec.seed,
                     "profile": profile.name, "eval_split": args.eval_split,
                     "fraction_percent": round(100 * labeled_sets.get(spec.fraction, 0.0), 3) or None}
            started, pending = time.perf_counter(), pending[1:]
            try:
                result = run.run(extra, log=_log)
            except RunFailed as e:
                failures.append(f"{spec.name}: {e}")
                _log(f"FAILED {spec.name}: {e}")
                continue
            if result.get("train_attempts", 1) == 1:  # a resumed run's time is only its last part
                timed.append((spec.method.name, spec.method.uses_unlabeled, time.perf_counter() - started))
            dice = result["metrics"].get("dice_mean", {}).get("mean")
            _log((f"[{n}/{len(specs)}] {spec.name}: mean Dice {dice:.3f}, {result['train_min']:.1f} min training"
                  if dice is not None else f"[{n}/{len(specs)}] {spec.name}: finished") + _eta(timed, pending))

    write_reports(out, specs, [m.name for m in methods], fractions, structures, profile, protocol, args, dataset_dir,
                  datalists)
    if failures:
        print("error: some runs failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def write_reports(out: Path, specs, methods: list[str], fractions: list[str], structures: dict[str, int], profile,
                  protocol: Protocol, args: argparse.Namespace, dataset_dir: str, datalists: dict) -> None:
    """results.csv / results.md / dice_vs_fraction.png / qualitative_<L>.png from every finished run in ``out``."""
    results: list[dict[str, Any]] = []
    for spec in specs:
        path = out / "runs" / spec.name / "result.json"
        if path.is_file():
            results.append(json.loads(path.read_text()))
    if not results:
        _log("no finished run yet: no tables")
        return
    rows = result_rows(results, list(structures))
    write_results_csv(rows, out / "results.csv")
    label_values = label_overrides(protocol.labels)[0].get("label_values")
    reference = PAPER_ACDC_DICE if protocol.name == "acdc_paper" else None
    first = datalists[next(iter(datalists))]
    held = json.loads(Path(first).read_text()).get("held_out")
    split = f"{args.eval_split} split" + (f" = {len(held)} held-out training-pool patients ({', '.join(held)})" if held else "")
    header = (f"## {protocol.name}, profile `{profile.name}` ({profile.description})\n\nEvaluated on whole volumes of the {split}; "
              f"dataset `{dataset_dir}`.")
    baseline = "supervised" if "supervised" in methods else methods[0]
    pairs = []
    for spec in specs:
        a = out / "runs" / baseline / f"{spec.fraction}_{spec.subset}_seed{spec.seed}" / "eval" / "metrics.csv"
        b = out / "runs" / spec.name / "eval" / "metrics.csv"
        if spec.method.name != baseline and a.is_file() and b.is_file():
            pairs.append((spec.name, a, b))
    paired = paired_markdown(pairs, baseline)
    (out / "results.md").write_text(results_markdown(rows, methods, fractions, list(structures), header, reference)
                                    + ("\n" + paired if paired else ""))
    plot_dice_vs_fraction(rows, methods, fractions, out / "dice_vs_fraction.png",
                          f"{protocol.name}, profile {profile.name}: mean Dice on the {args.eval_split} split", reference)
    for f in fractions:
        key = next((k for k in datalists if k[0] == f), None)
        if key is None:
            continue
        cases = load_split(datalists[key], args.eval_split, dataset_dir)
        runs = {m: out / "runs" / m / f"{f}_{key[1]}_seed{key[2]}" for m in methods
                if (out / "runs" / m / f"{f}_{key[1]}_seed{key[2]}" / "result.json").is_file()}
        qualitative_figure(cases, runs, out / f"qualitative_{f}.png", f"{protocol.name} {f} {key[1]} seed {key[2]}: ground truth and predictions",
                           label_values=label_values)
    _log(f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'dice_vs_fraction.png'}")

