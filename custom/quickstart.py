"""``python -m custom.quickstart``: the whole method on the built-in data, as one command.

IDEAL pre-training (``bundles/ideal_pretrain``), fine-tuning from the pre-trained encoder with cross pseudo-labels
(``bundles/ideal_finetune``), evaluation on the built-in test split (Dice, ASD, HD, HD95 per structure), then
inference on one built-in NIfTI volume; all with the bundles' CPU profiles (``configs/cpu.yaml``) and a shorter
schedule, then a summary: the Dice table, where the model, the evaluation CSV and the predicted NIfTI are, and
what to run next. About 10-15 minutes on 2 CPU cores.

``IDEAL_QUICKSTART_ITERATIONS`` (or ``--iterations``) sets the fine-tuning iterations (pre-training runs a third of
them); CI uses it to shorten the schedule, nothing else changes. Finished steps in ``--out`` are reused on a rerun
(an interrupted one resumes); remove the folder to start over.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from custom.errors import InputError

__all__ = ["main", "dice_table", "real_acdc_duration", "DEFAULT_ITERATIONS"]

DEFAULT_ITERATIONS = 500
_PRETRAIN = ["bundles/ideal_pretrain/configs/train.yaml", "bundles/ideal_pretrain/configs/cpu.yaml"]
_FINETUNE = ["bundles/ideal_finetune/configs/train.yaml", "bundles/ideal_finetune/configs/cpu.yaml"]


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def real_acdc_duration() -> str:
    """What one real-ACDC ``cpu`` profile run costs on this CPU: measured on 2 cores, bf16 and fp32 machines."""
    from custom.engines.precision import cpu_has_native_bf16

    if cpu_has_native_bf16():
        return "about 6-16 min a run on 2 cores with bf16"
    return "about 20-35 min (supervised) to 65 min (ideal) a run on 2 cores in fp32, as this CPU has no bf16"


def _schedule(iterations: int) -> tuple[dict, dict]:
    """Bundle overrides of the pre-training and fine-tuning runs for ``iterations`` fine-tuning iterations."""
    epoch = max(1, min(50, iterations // 4))
    fine = {"max_iterations": iterations, "epoch_length": epoch, "val_interval": 1}
    pre_iterations = max(2, iterations // 3)
    pre = {"max_iterations": pre_iterations, "epoch_length": max(1, min(50, pre_iterations // 2))}
    return pre, fine


def dice_table(summary: dict) -> str:
    """The per-structure Dice / HD95 (mm) table of an evaluation ``summary.csv`` read by ``read_summary``."""
    rows = ["  structure   Dice    HD95 mm", "  ---------   -----   -------"]
    for name in ("RV", "MYO", "LV", "mean"):
        dice, hd = summary.get(f"dice_{name}"), summary.get(f"hd95_{name}")
        if dice is not None:
            rows.append(f"  {name:<9}   {dice['mean']:.3f}   " + (f"{hd['mean']:7.2f}" if hd else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    parser.add_argument("--iterations", type=int, default=int(os.environ.get("IDEAL_QUICKSTART_ITERATIONS", DEFAULT_ITERATIONS)),
                        help=f"fine-tuning iterations (default {DEFAULT_ITERATIONS}; pre-training runs a third of them)")
    args = parser.parse_args(argv)
    if args.iterations < 2:
        raise InputError(f"--iterations {args.iterations}: need at least 2")

    from custom.experiments.runner import BundleRun, bundle_command, child_env, run_logged
    from custom.paths import bundle_config, datalist_path, default_dataset

    out = Path(args.out).resolve()
    dataset = default_dataset("acdc")
    datalist = datalist_path("synthetic_acdc_L2_c1.json")
    pre, fine = _schedule(args.iterations)
    common = {"dataset_dir": dataset, "datalist": datalist, "seed": 0}
    started = time.perf_counter()
    _log(f"built-in synthetic ACDC-like data: {dataset} (labeled set L2 c1: 2 labeled patients, 12 unlabeled)")

    _log(f"1/4 IDEAL pre-training, {pre['max_iterations']} iterations (log: {out / 'pretrain' / 'train.log'})")
    pretrain = BundleRun(out / "pretrain", "ideal_pretrain", _PRETRAIN, {**common, **pre})
    pretrain.train(_log)
    encoder = out / "pretrain" / "models" / "encoder.pt"

    _log(f"2/4 fine-tuning from the pre-trained encoder, {fine['max_iterations']} iterations "
         f"(log: {out / 'finetune' / 'train.log'})")
    finetune = BundleRun(
        out / "finetune", "ideal_finetune", _FINETUNE, {**common, **fine, "pretrained_encoder": str(encoder)},
        eval_configs=[*_FINETUNE, "bundles/ideal_finetune/configs/evaluate.yaml"],
        eval_overrides={"eval_split": "test", "save_predictions": False},
    )
    finetune.train(_log)

    _log("3/4 evaluation on the built-in test split (8 volumes)")
    summary = finetune.evaluate()

    _log("4/4 inference on one built-in NIfTI volume")
    volume = Path(dataset) / "patient017" / "patient017_frame01.nii.gz"
    infer_dir = out / "inference"
    cmd = bundle_command("run", ["bundles/ideal_finetune/configs/inference.yaml", "bundles/ideal_finetune/configs/cpu.yaml"],
                         {"bundle_root": str(out / "finetune"), "input_glob": str(volume), "output_dir": str(infer_dir)},
                         bundle_config("ideal_finetune", "logging.conf"))
    run_logged(cmd, out / "inference.log", child_env())
    predicted = sorted(infer_dir.glob("*_seg.nii.gz"))

    minutes = (time.perf_counter() - started) / 60
    print(f"\nIDEAL quick start finished in {minutes:.1f} min: Dice on the built-in test split\n", flush=True)
    print(dice_table(summary))
    print(f"""
model:            {out / 'finetune' / 'models' / 'model.pt'}
encoder:          {encoder}
evaluation CSV:   {out / 'finetune' / 'eval' / 'metrics.csv'} (per volume), {out / 'finetune' / 'eval' / 'summary.csv'}
predicted NIfTI:  {predicted[0] if predicted else '(none written: see ' + str(out / 'inference.log') + ')'}

next: real ACDC on this CPU ({real_acdc_duration()}):
  python -m custom.experiments --dataset-dir /data/ACDC/training --protocol acdc_paper --holdout 10 --fractions L1 L8 \\
      --subsets c1 --methods supervised ideal --profile cpu
or the paper-sized profile on a GPU: add --profile paper""", flush=True)
    return 0 if predicted else 1


if __name__ == "__main__":
    from custom.errors import install_excepthook

    install_excepthook()
    sys.exit(main())
