"""The report files: ``clinical.csv``, a figure per patient and, with references, the agreement table and figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from custom.metrics import write_metrics_csv
from custom.report.indices import INDEX_COLUMNS, LABELS, agreement
from custom.report.volumes import CaseResult

__all__ = ["BLAND_ALTMAN_COLUMNS", "clinical_row", "plot_case", "plot_bland_altman", "write_report"]

#: the indices shown in the Bland-Altman figure.
BLAND_ALTMAN_COLUMNS = ("LV_EF_pct", "RV_EF_pct", "LV_EDV_ml", "MYO_mass_g")
CONTOUR_COLORS = {"RV": "tab:blue", "MYO": "tab:green", "LV": "tab:red"}


def clinical_row(result: CaseResult) -> dict[str, object]:
    """One ``clinical.csv`` row: patient, frames, indices, and reference values and errors when available."""
    files = result.files
    row: dict[str, object] = {"patient": files.patient, "ed_frame": files.ed_frame, "es_frame": files.es_frame}
    row.update(result.indices)
    if result.reference is not None:
        row.update({f"gt_{k}": v for k, v in result.reference.items()})
        row.update({f"err_{k}": result.indices[k] - result.reference[k] for k in INDEX_COLUMNS})
    row.update({"ed_pred": str(files.ed_pred), "es_pred": str(files.es_pred)})
    return row


def _title(patient: str, ind: Mapping[str, float]) -> str:
    return (
        f"{patient}\nLV: EDV {ind['LV_EDV_ml']:.1f} ml, ESV {ind['LV_ESV_ml']:.1f} ml, EF {ind['LV_EF_pct']:.1f}%"
        f"  |  RV: EDV {ind['RV_EDV_ml']:.1f} ml, ESV {ind['RV_ESV_ml']:.1f} ml, EF {ind['RV_EF_pct']:.1f}%"
        f"  |  myocardial mass {ind['MYO_mass_g']:.1f} g"
    )


def plot_case(result: CaseResult, path: Path) -> None:
    """Save the ED and ES mid-ventricular slices with RV, MYO and LV contours, indices in the title."""
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, panel in zip(axes, result.panels):
        lo, hi = np.percentile(panel.image, (1, 99)) if panel.image.size else (0.0, 1.0)
        ax.imshow(panel.image.T, cmap="gray", origin="lower", vmin=lo, vmax=max(hi, lo + 1e-6))
        for name, value in LABELS.items():
            mask = panel.labels == value
            if mask.any():
                ax.contour(mask.T.astype(np.float32), levels=[0.5], colors=CONTOUR_COLORS[name], linewidths=1.2)
        ax.set_title(panel.title, fontsize=10)
        ax.set_axis_off()
    handles = [axes[1].plot([], [], color=c, label=n)[0] for n, c in CONTOUR_COLORS.items()]
    axes[1].legend(handles=handles, loc="lower right", fontsize=8)
    fig.suptitle(_title(result.files.patient, result.indices), fontsize=9)
    fig.savefig(path, dpi=100)


def plot_bland_altman(results: Sequence[CaseResult], path: Path) -> None:
    """Save Bland-Altman plots (difference against mean) of :data:`BLAND_ALTMAN_COLUMNS`."""
    fig = Figure(figsize=(10, 8), layout="constrained")
    for ax, key in zip(fig.subplots(2, 2).ravel(), BLAND_ALTMAN_COLUMNS):
        pred = np.array([r.indices[key] for r in results])
        ref = np.array([r.reference[key] for r in results if r.reference is not None])
        stats = agreement(pred, ref)
        ax.scatter((pred + ref) / 2, pred - ref, s=14)
        for value, style in ((stats["bias"], "-"), (stats["loa_lower"], "--"), (stats["loa_upper"], "--")):
            if math.isfinite(value):
                ax.axhline(value, color="tab:red", linestyle=style, linewidth=1)
        ax.set_title(
            f"{key}: bias {stats['bias']:.2f}, LoA [{stats['loa_lower']:.2f}, {stats['loa_upper']:.2f}]",
            fontsize=9,
        )
        ax.set_xlabel("mean of prediction and reference")
        ax.set_ylabel("prediction - reference")
    fig.savefig(path, dpi=100)


def write_report(results: Sequence[CaseResult], out_dir: Path) -> list[Path]:
    """Write ``clinical.csv``, one PNG per patient and, with references, the agreement table and figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "clinical.csv"]
    write_metrics_csv([clinical_row(r) for r in results], written[0])
    for result in results:
        written.append(out_dir / f"{result.files.patient}.png")
        plot_case(result, written[-1])
    if all(r.reference is not None for r in results):
        rows = []
        for key in INDEX_COLUMNS:
            pred = [r.indices[key] for r in results]
            ref = [r.reference[key] for r in results if r.reference is not None]
            rows.append({"index": key, **agreement(pred, ref)})
        written.append(out_dir / "agreement.csv")
        write_metrics_csv(rows, written[-1])
        written.append(out_dir / "bland_altman.png")
        plot_bland_altman(results, written[-1])
    return written
