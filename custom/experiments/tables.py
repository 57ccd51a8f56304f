"""Experiment outputs: ``results.csv`` (one row per run), ``results.md`` (the paper's table layout), a Dice vs
labeled-fraction plot and a qualitative figure (the paper's Fig. 3: the same slices, ground truth and each
method's prediction)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from custom.atomic import atomic_write

__all__ = ["PAPER_ACDC_DICE", "result_rows", "write_results_csv", "results_markdown", "plot_dice_vs_fraction",
           "qualitative_figure"]

# IDEAL's ACDC test Dice as reported in the paper (Basak et al., ICASSP 2023, Table 1), for reference only.
PAPER_ACDC_DICE = {"L1": 0.738, "L2": 0.846, "L8": 0.879, "L100": 0.882}

_FIXED = ["method", "fraction", "fraction_percent", "subset", "seed", "profile", "iterations", "train_min", "eval_min",
          "eval_split", "test_time_views", "model_selection", "eval_volumes"]


def result_rows(results: Sequence[Mapping[str, Any]], structures: Sequence[str]) -> list[dict[str, Any]]:
    """Flatten ``result.json`` records into CSV rows: per-structure Dice/ASD/HD/HD95 means over volumes plus the
    volume-averaged ``dice_mean`` (and its std over volumes)."""
    rows = []
    for r in results:
        metrics = r.get("metrics", {})
        row = {k: r.get(k) for k in _FIXED}
        row["eval_volumes"] = metrics.get("dice_mean", {}).get("n")
        for s in [*structures, "mean"]:
            for m in ("dice", "asd", "hd", "hd95"):
                stats = metrics.get(f"{m}_{s}")
                row[f"{m}_{s}"] = None if stats is None else round(stats["mean"], 4)
        row["dice_mean_std_over_volumes"] = round(metrics["dice_mean"]["std"], 4) if "dice_mean" in metrics else None
        rows.append(row)
    return rows


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write)


def _mean_std(values: Sequence[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _setting_note(rows: Sequence[Mapping[str, Any]], key: str, label: str, unrecorded: str) -> str:
    """Which value of the setting ``key`` the runs used. A finished run is skipped, not redone, so an old output
    folder can hold runs made before the setting was recorded (``unrecorded``) beside newer ones."""
    values = Counter(r.get(key) or unrecorded for r in rows)
    if len(values) == 1:
        return f"{label}: {next(iter(values))}."
    return (f"**{label}: not the same in all runs, and the cells below may mix them**: "
            + ", ".join(f"{v} in {n} run(s)" for v, n in sorted(values.items())) + ".")


def results_markdown(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], fractions: Sequence[str],
                     structures: Sequence[str], header: str, paper_reference: Mapping[str, float] | None = None) -> str:
    """Tables in the layout of the paper: mean Dice per method (rows) and labeled set (columns), mean ± std over
    subsets and seeds, then per-structure Dice and HD95 per labeled set."""
    def select(method: str, fraction: str) -> list[Mapping[str, Any]]:
        return [r for r in rows if r["method"] == method and r["fraction"] == fraction]

    percent = {r["fraction"]: r.get("fraction_percent") for r in rows}
    cols = [f"{f} ({percent[f]:g} %)" if percent.get(f) is not None else f for f in fractions]
    notes = [_setting_note(rows, "test_time_views", "Test-time views", "none (not recorded: evaluated before 0.5.0)"),
             _setting_note(rows, "model_selection", "Model selection",
                           "validation (not recorded: trained before the model_selection key)")]
    lines = [header, "", " ".join(notes), "",
             "Mean Dice over structures and volumes (mean ± std over subsets/seeds; n runs in brackets):", "",
             "| method | " + " | ".join(cols) + " |", "|---" * (len(fractions) + 1) + "|"]
    for m in methods:
        cells = []
        for f in fractions:
            sel = select(m, f)
            cells.append(f"{_mean_std([r['dice_mean'] for r in sel])} ({len(sel)})" if sel else "not run")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if paper_reference:
        cells = [f"{paper_reference[f]:.3f}" if f in paper_reference else "-" for f in fractions]
        lines.append("| IDEAL as reported in the paper (ResNet-50, full training, ACDC test set; not measured here) | "
                     + " | ".join(cells) + " |")
    for f in fractions:
        lines += ["", f"Per structure, {f}: Dice and HD95 (mm; voxels for images without spacing), mean over runs:", "",
                  "| method | " + " | ".join(f"Dice {s}" for s in structures) + " | " + " | ".join(f"HD95 {s}" for s in structures)
                  + " | train min | iterations |",
                  "|---" * (2 * len(structures) + 3) + "|"]
        for m in methods:
            sel = select(m, f)
            if not sel:
                continue
            dice = [_mean_std([r[f"dice_{s}"] for r in sel]) for s in structures]
            hd95 = [_mean_std([r[f"hd95_{s}"] for r in sel]) for s in structures]
            minutes = _mean_std([r["train_min"] for r in sel])
            its = sorted({r["iterations"] for r in sel if r["iterations"] is not None})
            lines.append(f"| {m} | " + " | ".join(dice + hd95) + f" | {minutes} | {', '.join(map(str, its))} |")
    return "\n".join(lines) + "\n"


def plot_dice_vs_fraction(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], fractions: Sequence[str], path: Path,
                          title: str, paper_reference: Mapping[str, float] | None = None) -> None:
    """Mean Dice (± std over subsets/seeds) against the labeled fraction, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    percent = {r["fraction"]: r["fraction_percent"] for r in rows if r.get("fraction_percent") is not None}
    xs_all = [percent.get(f, i + 1) for i, f in enumerate(fractions)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        pts = []
        for f, x in zip(fractions, xs_all):
            vals = [r["dice_mean"] for r in rows if r["method"] == m and r["fraction"] == f and r["dice_mean"] is not None]
            if vals:
                pts.append((x, float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0))
        if pts:
            x, y, e = zip(*pts)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=m)
    if paper_reference:
        ref = [(percent[f], paper_reference[f]) for f in fractions if f in paper_reference and f in percent]
        if ref:
            ax.plot(*zip(*ref), "k--", marker="x", label="IDEAL, paper (ResNet-50, full training)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(xs_all, [f"{f}\n{percent.get(f, '?')}%" for f in fractions])
    ax.set_xlabel("labeled set (fraction of training volumes)")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _prediction_for(run_folder: Path, image: str) -> Path | None:
    stem = Path(image).name.replace(".nii.gz", "").replace(".nii", "")
    found = sorted((run_folder / "eval" / "predictions").rglob(f"{stem}_seg.nii*"))
    return found[0] if found else None


def qualitative_figure(cases: Sequence[Mapping[str, str]], runs: Mapping[str, Path], path: Path, title: str,
                       max_cases: int = 3, label_values: Sequence[int] | None = None) -> bool:
    """Rows = evaluation volumes (the slice with the most foreground in the ground truth), columns = image, ground
    truth and each method's prediction on that slice. ``cases`` are datalist items with absolute ``image`` and
    ``label`` paths; ``runs`` maps a method name to its run folder; ``label_values``: raw ground-truth values in class
    order (MMWHS), mapped to the classes of the predictions. Returns False when no prediction is found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from matplotlib.colors import ListedColormap

    if not cases or not runs:
        return False
    picks = [cases[int(i * len(cases) / min(max_cases, len(cases)))] for i in range(min(max_cases, len(cases)))]
    classes = len(label_values) if label_values else 4
    if classes <= 4:
        cmap = ListedColormap([(0, 0, 0, 0), (0.9, 0.2, 0.2, 0.6), (0.2, 0.8, 0.2, 0.6), (0.2, 0.4, 1.0, 0.6)])
    else:
        cmap = ListedColormap([(0, 0, 0, 0)] + [(*matplotlib.colormaps["tab10"](i)[:3], 0.6) for i in range(classes - 1)])
    columns = ["image", "ground truth", *runs]
    fig, axes = plt.subplots(len(picks), len(columns), figsize=(2.2 * len(columns), 2.3 * len(picks)), squeeze=False)
    shown = False
    for row, item in enumerate(picks):
        image = np.asarray(nib.load(item["image"]).dataobj, dtype=np.float32)
        label = np.asarray(nib.load(item["label"]).dataobj).astype(np.int64)
        if label_values:
            lut = np.zeros(max(label_values) + 1, np.int64)
            lut[list(label_values)] = np.arange(len(label_values))
            label = lut[np.clip(label, 0, len(lut) - 1)]
        z = int(np.argmax((label > 0).reshape(-1, label.shape[-1]).sum(0)))
        lo, hi = np.percentile(image[..., z], [1, 99])
        for col, name in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(image[..., z].T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            overlay = None
            if name == "ground truth":
                overlay = label[..., z]
            elif name != "image":
                pred = _prediction_for(runs[name], item["image"])
                if pred is not None:
                    overlay = np.asarray(nib.load(str(pred)).dataobj).astype(np.int64).reshape(label.shape)[..., z]
                    shown = True
            if overlay is not None:
                ax.imshow(np.ma.masked_equal(overlay.T, 0), cmap=cmap, vmin=0, vmax=classes - 1, origin="lower", interpolation="nearest")
            if row == 0:
                ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"{Path(item['image']).name.split('.')[0]}\nslice {z}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return shown
