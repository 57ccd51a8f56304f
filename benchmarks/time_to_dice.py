"""Time to Dice: validation Dice against wall-clock minutes for the plain PyTorch loop, ``supervised`` and
``ideal``, on the same data and the same cores, and the minutes each needs to reach the plain loop's final Dice.

The two bundle methods are trained by the experiment runner (``python -m custom.experiments``; finished runs in
``--out`` are reused, so the curves can come from runs made earlier on this machine); their curves are the
``val_mean_dice`` lines of their training logs, timed from the start of the training process. ``ideal`` is shown
twice: from the start of fine-tuning, and with its pre-training time added in front (what a user waits for).

The plain loop is the recipe of ``../shared/anchors/plain_loop.py`` (MONAI ``FlexibleUNet``, every labeled slice
resized whole, 0.5 (CE + Dice), AdamW 1e-3 with poly decay, rot90/flip/intensity jitter), run here with a
validation pass every ``--val-every`` iterations on the runner's validation volumes. Its time includes those
passes, as the bundles' times include theirs; it starts at the first iteration, after the labeled slices and the
validation volumes are loaded, while a bundle's starts with its process (imports and data caching included). Validation Dice: mean over RV/MYO/LV and volumes; for the plain loop
on the original grid (both-empty counts as 1, as in the anchor), for the bundles on their network grid, as MONAI's
``MeanDice`` in ``train.yaml``. At the end the plain loop also predicts the test split, so the printout has its
test Dice on the same held-out volumes as the runner's tables.

Writes ``time_to_dice.png`` and ``time_to_dice.json`` (every curve point) into ``--out``.

    python benchmarks/time_to_dice.py --dataset-dir ../shared/data/acdc --protocol acdc_paper --allow-missing \\
        --holdout 10 --labeled L1 --subset c1 --profile cpu --out runs/time_to_dice      # ~35 min on 2 cores
    python benchmarks/time_to_dice.py --quick --out /tmp/ttd                            # smoke test, ~2 min
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Sequence

from _common import REPO, headline, markdown_table, print_machine

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

Curve = list[tuple[float, float]]  # (wall minutes, validation mean Dice)

_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_VAL_LINE = re.compile(_STAMP + r" .*Metrics -- val_mean_dice: ([0-9.]+)")
_FINISHED = re.compile(_STAMP + r" .*training finished")


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def bundle_curve(log: Path, train_s: float) -> Curve:
    """The ``val_mean_dice`` points of a bundle training log, in minutes from the start of the training process.

    The log's timestamps start only once MONAI's logging is set up, so the start is taken as the
    ``training finished`` line minus the runner's measured wall time ``train_s`` (process start included).
    """
    text = log.read_text(errors="replace")
    finished = _FINISHED.findall(text)
    if not finished:
        raise SystemExit(f"error: {log}: no 'training finished' line (the run did not end)")
    start = _stamp(finished[-1]) - train_s
    return [((_stamp(stamp) - start) / 60.0, float(dice)) for stamp, dice in _VAL_LINE.findall(text)]


def minutes_to_reach(curve: Curve, target: float) -> float | None:
    """The first time a curve reaches ``target`` (None: never)."""
    return next((minutes for minutes, dice in curve if dice >= target), None)


class PlainLoop:
    """The anchor's supervised loop over ``training`` entries of a datalist, validating as it goes."""

    def __init__(self, dataset_dir: Path, labeled: Sequence[dict], backbone: str, size: int, batch: int,
                 iterations: int, autocast: torch.dtype | None, seed: int) -> None:
        from monai.networks.nets import FlexibleUNet

        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.size, self.batch, self.iterations, self.autocast = size, batch, iterations, autocast
        images, labels = [], []
        for item in labeled:
            images.append(self._resize(self._slices(dataset_dir / item["image"]), "bilinear"))
            labels.append(self._resize(self._slices(dataset_dir / item["label"]), "nearest"))
        self.x, self.y = torch.cat(images), torch.cat(labels).long()[:, 0]
        self.net = FlexibleUNet(in_channels=1, out_channels=4, backbone=backbone, pretrained=False, spatial_dims=2)
        self.net = self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=1e-4)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda i: (1 - i / iterations) ** 0.9)

    @staticmethod
    def _slices(path: Path) -> torch.Tensor:
        """(H, W, D) volume -> (D, 1, H, W) float32 slices."""
        return torch.from_numpy(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)).permute(2, 0, 1)[:, None]

    def _resize(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        return F.interpolate(x, size=(self.size, self.size), mode=mode, **kwargs)

    def _augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = int(self.rng.integers(4))
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        if self.rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return x * float(self.rng.uniform(0.8, 1.2)) + float(self.rng.uniform(-0.1, 0.1)), y

    @staticmethod
    def _dice_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = logits.softmax(1)
        onehot = F.one_hot(y, p.shape[1]).permute(0, 3, 1, 2).float()
        inter, den = (p * onehot).sum((0, 2, 3)), p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        return 1 - ((2 * inter + 1e-5) / (den + 1e-5))[1:].mean()

    def step(self, iteration: int) -> float:
        self.net.train()
        picks = torch.randint(len(self.x), (self.batch,)).tolist()
        xb, yb = zip(*[self._augment(self.x[i], self.y[i]) for i in picks])
        xb, yb = torch.stack(xb).contiguous(memory_format=torch.channels_last), torch.stack(yb)
        with torch.autocast("cpu", dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            out = self.net(xb)
        out = out.float()
        loss = 0.5 * F.cross_entropy(out, yb) + 0.5 * self._dice_loss(out, yb)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sched.step()
        return float(loss.detach())

    def load_cases(self, dataset_dir: Path, items: Sequence[dict]) -> list[tuple[torch.Tensor, np.ndarray]]:
        """(image slices (D, 1, H, W), label volume (H, W, D)) of each item, decoded once for every scoring pass."""
        return [(self._slices(dataset_dir / item["image"]),
                 np.asarray(nib.load(str(dataset_dir / item["label"])).dataobj).astype(np.int64)) for item in items]

    @torch.no_grad()
    def predict(self, volume: torch.Tensor) -> np.ndarray:
        """Label volume (H, W, D) of image slices (D, 1, H, W), on their original grid."""
        self.net.eval()
        with torch.autocast("cpu", dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            logits = self.net(self._resize(volume, "bilinear").contiguous(memory_format=torch.channels_last)).float()
        logits = F.interpolate(logits, size=volume.shape[-2:], mode="bilinear", align_corners=False)
        return logits.argmax(1).permute(1, 2, 0).numpy()

    def mean_dice(self, cases: Sequence[tuple[torch.Tensor, np.ndarray]]) -> float:
        """Voxel Dice averaged over RV/MYO/LV and the cases of :meth:`load_cases` (both empty: 1)."""
        from custom.metrics import dice_score

        scores = []
        for volume, label in cases:
            pred = self.predict(volume)
            scores += [dice_score(pred == c, label == c) for c in (1, 2, 3)]
        return float(np.mean(scores))


def run_plain_loop(loop: PlainLoop, validation: Sequence[tuple[torch.Tensor, np.ndarray]], val_every: int) -> Curve:
    start, curve = time.perf_counter(), []
    for iteration in range(loop.iterations):
        loss = loop.step(iteration)
        if (iteration + 1) % val_every == 0 or iteration + 1 == loop.iterations:
            dice = loop.mean_dice(validation)
            minutes = (time.perf_counter() - start) / 60.0
            curve.append((minutes, dice))
            print(f"plain loop: iteration {iteration + 1}/{loop.iterations}, loss {loss:.4f}, "
                  f"validation Dice {dice:.4f}, {minutes:.1f} min", flush=True)
    return curve


def plot(curves: dict[str, Curve], target: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        if curve:
            ax.plot(*zip(*curve), marker="o", markersize=3, label=name)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"plain loop final ({target:.3f})")
    ax.set_xlabel("wall-clock minutes on this machine")
    ax.set_ylabel("validation mean Dice (RV, MYO, LV)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke test: built-in data, tiny profile, plain loop ResNet-18 at 64 px for 6 iterations")
    p.add_argument("--dataset-dir", default=None, help="dataset folder (default: the built-in synthetic data)")
    p.add_argument("--protocol", default=None, help="acdc_paper, synthetic_acdc, ... (default: the runner's)")
    p.add_argument("--allow-missing", action="store_true")
    p.add_argument("--holdout", type=int, default=None)
    p.add_argument("--labeled", default="L1", help="labeled set (default L1)")
    p.add_argument("--subset", default="c1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default=None, help="runner profile (default cpu; tiny with --quick)")
    p.add_argument("--methods", nargs="+", default=["supervised", "ideal"])
    p.add_argument("--plain-iterations", type=int, default=None, help="default 1200 (the anchor's)")
    p.add_argument("--plain-backbone", default=None, help="default resnet50 (the anchor's)")
    p.add_argument("--plain-size", type=int, default=None, help="default 128")
    p.add_argument("--plain-batch", type=int, default=None, help="default 8")
    p.add_argument("--val-every", type=int, default=None, help="plain loop validation interval (default 100)")
    p.add_argument("--precision", default="auto", help="plain loop autocast: auto (as the bundles) | fp32 | bf16")
    p.add_argument("--out", required=True, help="output folder (holds the runner's runs, the PNG and the JSON)")
    args = p.parse_args(argv)
    quick = {"profile": "tiny", "plain_iterations": 6, "plain_backbone": "resnet18", "plain_size": 64,
             "plain_batch": 2, "val_every": 3}
    full = {"profile": "cpu", "plain_iterations": 1200, "plain_backbone": "resnet50", "plain_size": 128,
            "plain_batch": 8, "val_every": 100}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    from custom.engines.precision import resolve_precision
    from custom.paths import default_dataset

    device = torch.device("cpu")
    print_machine(device)
    out = Path(args.out).resolve()
    runs = out / "runs"
    dataset_dir = Path(args.dataset_dir or default_dataset("acdc")).resolve()
    command = [sys.executable, "-m", "custom.experiments", "--dataset-dir", str(dataset_dir), "--out", str(runs),
               "--fractions", args.labeled, "--subsets", args.subset, "--seeds", str(args.seed),
               "--methods", *args.methods, "--profile", args.profile]
    command += ["--protocol", args.protocol] if args.protocol else []
    command += ["--allow-missing"] if args.allow_missing else []
    command += ["--holdout", str(args.holdout)] if args.holdout is not None else []
    print("$ " + " ".join(command), flush=True)
    if subprocess.run(command, cwd=REPO).returncode != 0:
        print("error: the experiment runner failed (its output is above)", file=sys.stderr)
        return 1

    from custom.experiments.plan import load_methods

    methods, _ = load_methods()
    run_name = f"{args.labeled}_{args.subset}_seed{args.seed}"
    curves: dict[str, Curve] = {}
    for method in args.methods:
        folder = runs / "runs" / method / run_name
        timing = json.loads((folder / "timing.json").read_text())
        log = folder / "train.log" if (folder / "train.log").exists() else folder / "train_summary.log"
        curves[method] = bundle_curve(log, timing["train_s"])
        kind = methods[method].pretraining if method in methods else None
        pretrain_timing = runs / "pretrain" / str(kind) / "timing.json"
        if kind and pretrain_timing.exists():
            offset = json.loads(pretrain_timing.read_text())["train_s"] / 60.0
            curves[f"{method} incl. pre-training"] = [(m + offset, d) for m, d in curves[method]]

    datalist = json.loads((runs / "datalists" / f"{run_name}.json").read_text())
    autocast = resolve_precision(device, args.precision)
    print(f"plain loop: {args.plain_backbone}, {args.plain_size} px, batch {args.plain_batch}, "
          f"{args.plain_iterations} iterations, precision {autocast or 'fp32'}, "
          f"{len(datalist['training'])} labeled volumes, {len(datalist['validation'])} validation volumes", flush=True)
    loop = PlainLoop(dataset_dir, datalist["training"], args.plain_backbone, args.plain_size, args.plain_batch,
                     args.plain_iterations, autocast, args.seed)
    validation = loop.load_cases(dataset_dir, datalist["validation"])
    curves = {"plain loop": run_plain_loop(loop, validation, args.val_every), **curves}
    test = datalist.get("test")
    plain_test = loop.mean_dice(loop.load_cases(dataset_dir, test)) if test else float("nan")
    target = curves["plain loop"][-1][1]
    target_minutes = minutes_to_reach(curves["plain loop"], target)  # it may get there before its last point

    rows, ratios = [], []
    for name, curve in curves.items():
        reached = minutes_to_reach(curve, target)
        ratio = target_minutes / max(reached, 1e-9) if reached is not None else None
        best = max((d for _, d in curve), default=float("nan"))
        end = curve[-1][0] if curve else float("nan")
        rows.append((name, f"{best:.3f}", f"{end:.1f}", f"{reached:.1f}" if reached is not None else "not reached",
                     f"{ratio:.2f}x" if ratio is not None else "-"))
        if name != "plain loop":
            ratios.append(f"{name} {ratio:.2f}x" if ratio is not None else f"{name} not reached in {end:.1f} min")
    title = (f"{dataset_dir.name} {args.labeled} {args.subset} seed {args.seed}, profile {args.profile}; "
             f"plain loop {args.plain_backbone} {args.plain_iterations} it")
    out.mkdir(parents=True, exist_ok=True)
    plot(curves, target, out / "time_to_dice.png", title)
    (out / "time_to_dice.json").write_text(json.dumps(
        {"target_dice": target, "target_minutes": target_minutes, "plain_loop_test_dice": plain_test,
         "settings": {k: v for k, v in vars(args).items() if k != "out"},
         "curves": {k: [list(point) for point in v] for k, v in curves.items()}}, indent=1))

    print("\n## Time to the plain loop's final validation Dice\n")
    print(markdown_table(("curve", "best validation Dice", "minutes run", "minutes to reach", "ratio plain/curve"),
                         rows))
    print(f"\nplain loop test Dice (mean RV/MYO/LV over {len(datalist.get('test', []))} volumes): {plain_test:.3f}")
    print(f"figure: {out / 'time_to_dice.png'}")
    headline(f"time_to_dice ratio plain/method minutes to the plain loop's final validation Dice {target:.3f} "
             f"({target_minutes:.1f} min; >1: faster): " + ", ".join(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
