"""Cardiac function indices from ACDC label volumes, and agreement of paired measurements.

Volumes come from voxel counts and the voxel size: ``V = count * sx * sy * sz / 1000`` in ml (1 ml = 1000 mm^3).
Per patient:

* LV EDV (ml): LV cavity volume at ED.
* LV ESV (ml): LV cavity volume at ES.
* LV SV (ml), stroke volume: ``EDV - ESV``.
* LV EF (%), ejection fraction: ``(EDV - ESV) / EDV * 100`` (undefined, NaN, when EDV is 0).
* RV EDV, ESV, SV, EF: the same from the RV cavity.
* Myocardial volume at ED and at ES (ml), from the MYO label.
* LV myocardial mass (g): myocardial volume at ED times the density of myocardium, 1.05 g/ml.

Agreement with a reference, over patients, for every index: the mean absolute error, the Pearson correlation
coefficient (NaN with fewer than two patients or a constant series), the mean bias (mean error) and the 95% limits
of agreement of Bland and Altman, ``bias +- 1.96 * SD`` with SD the sample standard deviation of the errors (0 for a
single patient).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["LABELS", "MYOCARDIAL_DENSITY", "INDEX_COLUMNS", "structure_volumes_ml", "cardiac_indices", "agreement"]

#: ACDC label values.
LABELS: dict[str, int] = {"RV": 1, "MYO": 2, "LV": 3}
#: density of myocardium in g/ml.
MYOCARDIAL_DENSITY = 1.05
#: the per-patient indices, in the order of ``clinical.csv``.
INDEX_COLUMNS = (
    "LV_EDV_ml",
    "LV_ESV_ml",
    "LV_SV_ml",
    "LV_EF_pct",
    "RV_EDV_ml",
    "RV_ESV_ml",
    "RV_SV_ml",
    "RV_EF_pct",
    "MYO_ED_ml",
    "MYO_ES_ml",
    "MYO_mass_g",
)


def structure_volumes_ml(labels: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Volume in ml of each ACDC structure of a label volume.

    Args:
        labels: integer label volume of shape (X, Y, Z).
        spacing: voxel size in mm, ``(sx, sy, sz)``.

    Returns:
        ``{"RV": ml, "MYO": ml, "LV": ml}``.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {name: int(np.count_nonzero(labels == value)) * voxel_ml for name, value in LABELS.items()}


def _ejection_fraction(edv: float, esv: float) -> float:
    return (edv - esv) / edv * 100.0 if edv > 0 else math.nan


def cardiac_indices(
    ed_labels: np.ndarray,
    es_labels: np.ndarray,
    ed_spacing: Sequence[float],
    es_spacing: Sequence[float],
    density: float = MYOCARDIAL_DENSITY,
) -> dict[str, float]:
    """LV and RV volumes, stroke volumes and ejection fractions, and myocardial volumes and mass.

    Args:
        ed_labels: end-diastolic label volume (X, Y, Z), ACDC labels.
        es_labels: end-systolic label volume (X', Y', Z').
        ed_spacing: ED voxel size in mm.
        es_spacing: ES voxel size in mm.
        density: myocardial density in g/ml.

    Returns:
        a dictionary with the keys of :data:`INDEX_COLUMNS` (ml, %, g); EF is NaN when EDV is 0.
    """
    ed, es = structure_volumes_ml(ed_labels, ed_spacing), structure_volumes_ml(es_labels, es_spacing)
    out: dict[str, float] = {}
    for name in ("LV", "RV"):
        out[f"{name}_EDV_ml"] = ed[name]
        out[f"{name}_ESV_ml"] = es[name]
        out[f"{name}_SV_ml"] = ed[name] - es[name]
        out[f"{name}_EF_pct"] = _ejection_fraction(ed[name], es[name])
    out["MYO_ED_ml"] = ed["MYO"]
    out["MYO_ES_ml"] = es["MYO"]
    out["MYO_mass_g"] = ed["MYO"] * density
    return out


def agreement(pred: Sequence[float], ref: Sequence[float]) -> dict[str, float]:
    """Agreement of paired measurements; pairs with a NaN are left out.

    Args:
        pred: values from the predictions, one per patient.
        ref: the reference values, same length.

    Returns:
        ``n``, ``mae`` (mean absolute error), ``pearson_r``, ``bias`` (mean of ``pred - ref``), ``sd`` (sample SD of
        the errors, 0 when n == 1), ``loa_lower`` and ``loa_upper`` (``bias -+ 1.96 sd``). With no valid pair all
        values but ``n`` are NaN; ``pearson_r`` is NaN when n < 2 or either series is constant.
    """
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    valid = np.isfinite(p) & np.isfinite(r)
    p, r = p[valid], r[valid]
    n = int(p.size)
    if n == 0:
        nan = math.nan
        return {"n": 0, "mae": nan, "pearson_r": nan, "bias": nan, "sd": nan, "loa_lower": nan, "loa_upper": nan}
    err = p - r
    bias = float(err.mean())
    sd = float(err.std(ddof=1)) if n > 1 else 0.0
    pearson = math.nan
    if n > 1 and p.std() > 0 and r.std() > 0:
        pearson = float(np.corrcoef(p, r)[0, 1])
    return {
        "n": n,
        "mae": float(np.abs(err).mean()),
        "pearson_r": pearson,
        "bias": bias,
        "sd": sd,
        "loa_lower": bias - 1.96 * sd,
        "loa_upper": bias + 1.96 * sd,
    }
