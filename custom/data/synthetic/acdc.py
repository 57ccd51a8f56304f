"""Synthetic ACDC short-axis cine patients: ED and ES frames, labels RV, MYO and LV, ``Info.cfg``.

Layout written by :func:`generate_acdc`::

    out_dir/patient001/Info.cfg
    out_dir/patient001/patient001_frame01.nii.gz        # ED image, int16, (W, H, slices)
    out_dir/patient001/patient001_frame01_gt.nii.gz     # ED label, uint8: 0 bg, 1 RV, 2 MYO, 3 LV
    out_dir/patient001/patient001_frame12.nii.gz        # ES image (ES frame number varies, 08..15)
    out_dir/patient001/patient001_frame12_gt.nii.gz
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from custom.data.synthetic.image_model import (
    PathLike,
    acquire,
    bias_field,
    body_and_organs,
    check_cases,
    check_seed,
    random_affine,
    save_nifti,
    smooth_noise,
    wrap_angle,
)

__all__ = ["ACDC_LABELS", "ACDC_GROUPS", "generate_acdc"]

ACDC_LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
_MIN_WALL_MM = 4.0  # keeps the LV cavity enclosed by >= 2 pixels of MYO at the coarsest spacing (1.8 mm)

# Per-group ACDC heart parameters (mm, before the field-of-view scaling): LV cavity radius, LV wall thickness,
# basal RV thickness, fraction of LV cavity volume lost at ES, fraction of RV thickness lost at ES.
_GROUP_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "NOR": {"r_lv": (20, 25), "wall": (6, 8), "rv": (14, 20), "lv_loss": (0.40, 0.55), "rv_loss": (0.35, 0.50)},
    "MINF": {"r_lv": (23, 28), "wall": (6, 8), "rv": (13, 19), "lv_loss": (0.25, 0.40), "rv_loss": (0.30, 0.45)},
    "DCM": {"r_lv": (27, 32), "wall": (5, 7), "rv": (13, 19), "lv_loss": (0.25, 0.35), "rv_loss": (0.25, 0.40)},
    "HCM": {"r_lv": (16, 20), "wall": (11, 15), "rv": (12, 17), "lv_loss": (0.45, 0.55), "rv_loss": (0.35, 0.50)},
    "RV": {"r_lv": (19, 24), "wall": (6, 8), "rv": (22, 30), "lv_loss": (0.35, 0.50), "rv_loss": (0.20, 0.35)},
}


@dataclass
class _AcdcPatient:
    """Random parameters of one synthetic ACDC patient (lengths in mm, angles in rad)."""

    group: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    es_frame: int
    height: float
    weight: float
    centre: tuple[float, float]  # LV centre on the basal slice
    drift: tuple[float, float]  # LV centre shift per slice, apex-ward
    theta: float  # direction from the LV centre to the RV (septum)
    ellipticity: float
    r_lv: float
    wall: float
    endo_harm: np.ndarray  # amplitudes of the 2nd/3rd harmonic of the endocardial contour
    endo_phase: np.ndarray
    wall_var: float
    wall_phase: float
    infarct: tuple[float, float, float]  # depth (fraction of wall), centre angle, half-width; depth 0 = none
    apex_k: float  # outer radius on the apical slice is sqrt(1 - apex_k**2) of the basal one
    lv_loss: float
    rv_thick: float
    rv_span: tuple[float, float]  # angular extent of the RV on each side of the septum
    rv_offset: float
    rv_gamma: float
    rv_vanish: float  # RV thickness reaches zero at this fraction of the base-to-apex distance
    rv_loss: float
    rv_wall: float
    pap_size: float
    pap_angles: np.ndarray
    bed_width: float
    bed_fat: float  # mean fat fraction of the epicardial bed (before clipping to [0, 1])
    bed_harm: np.ndarray
    bed_phase: np.ndarray


def _draw_acdc_patient(rng: np.random.Generator, group: str) -> _AcdcPatient:
    """Draw one patient's anatomy, geometry and acquisition parameters (a fixed number of draws, in fixed order)."""
    ranges = _GROUP_RANGES[group]
    width, height_px = (int(v) for v in rng.integers(112, 145, 2))
    n_slices = int(rng.integers(6, 13))
    sxy, sz = round(float(rng.uniform(1.3, 1.8)), 4), round(float(rng.uniform(8.0, 10.0)), 2)
    fov = (width * sxy, height_px * sxy)
    size = float(np.clip(min(fov) / 190.0, 0.8, 1.15))  # the FOV is prescribed around the patient's heart
    r_lv, wall, rv_thick = (size * rng.uniform(*ranges[k]) for k in ("r_lv", "wall", "rv"))
    theta = np.pi + rng.uniform(-0.6, 0.6)
    lv_shift = 0.4 * rv_thick  # keep the LV+RV complex roughly centred
    centre = (
        -lv_shift * np.cos(theta) + rng.uniform(-0.06, 0.06) * fov[0],
        -lv_shift * np.sin(theta) + rng.uniform(-0.06, 0.06) * fov[1],
    )
    infarct_depth = rng.uniform(0.3, 0.5)
    infarct = (infarct_depth if group == "MINF" else 0.0, rng.uniform(-np.pi, np.pi), rng.uniform(0.4, 0.8))
    return _AcdcPatient(
        group=group,
        shape=(width, height_px, n_slices),
        spacing=(sxy, sxy, sz),
        es_frame=int(rng.integers(8, 16)),
        height=float(np.round(rng.normal(170.0, 9.0))),
        weight=float(np.round(rng.normal(76.0, 14.0))),
        centre=centre,
        drift=tuple(rng.uniform(-1.5, 1.5, 2)),
        theta=theta,
        ellipticity=rng.uniform(0.9, 1.1),
        r_lv=r_lv,
        wall=wall,
        endo_harm=rng.uniform(0.0, 0.05, 2),
        endo_phase=rng.uniform(0.0, 2.0 * np.pi, 2),
        wall_var=rng.uniform(0.0, 0.15),
        wall_phase=rng.uniform(0.0, 2.0 * np.pi),
        infarct=infarct,
        apex_k=rng.uniform(0.88, 0.97),
        lv_loss=rng.uniform(*ranges["lv_loss"]),
        rv_thick=rv_thick,
        rv_span=tuple(rng.uniform(0.9, 1.4, 2)),
        rv_offset=rng.uniform(-0.2, 0.2),
        rv_gamma=rng.uniform(0.5, 0.9),
        rv_vanish=rng.uniform(0.8, 1.3),
        rv_loss=rng.uniform(*ranges["rv_loss"]),
        rv_wall=rng.uniform(2.0, 3.0),
        pap_size=rng.uniform(0.10, 0.15),
        pap_angles=np.pi + np.array([0.9, -0.9]) + rng.uniform(-0.25, 0.25, 2),
        bed_width=rng.uniform(3.0, 7.0),
        bed_fat=rng.uniform(-0.5, 0.3),
        bed_harm=rng.uniform(0.3, 0.7, 3),
        bed_phase=rng.uniform(0.0, 2.0 * np.pi, 3),
    )


def _lv_radii(p: _AcdcPatient, phi: np.ndarray, t: np.ndarray, es: bool) -> tuple[np.ndarray, np.ndarray]:
    """Endocardial and epicardial radius (mm) at polar angle ``phi`` on slices at relative depth ``t``.

    Args:
        p: patient parameters.
        phi: polar angle around the LV centre, 0 toward the septum/RV; broadcastable with ``t``.
        t: 0 on the basal slice, 1 on the apical slice.
        es: end-systole (cavity shrinks, the myocardium keeps its area so the wall thickens).
    """
    shape = 1.0 + sum(a * np.cos((k + 2) * (phi - ph)) for k, (a, ph) in enumerate(zip(p.endo_harm, p.endo_phase)))
    wall = p.wall * (1.0 + p.wall_var * np.cos(phi - p.wall_phase)) * (1.0 - 0.15 * t)
    depth, centre, half_width = p.infarct
    wall = wall * (1.0 - depth * np.exp(-0.5 * (wrap_angle(phi - centre) / half_width) ** 2))
    wall = np.maximum(wall, _MIN_WALL_MM)
    r_out = (p.r_lv * shape + wall) * np.sqrt(np.clip(1.0 - (p.apex_k * t) ** 2, 0.0, None))
    r_in = np.maximum(r_out - wall, 0.0)
    if es:
        r_in_es = r_in * np.sqrt(1.0 - p.lv_loss)
        r_out = np.sqrt(r_in_es**2 + r_out**2 - r_in**2)
        r_in = r_in_es
    return r_in, r_out


def _acdc_anatomy(p: _AcdcPatient, es: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rasterise one cardiac phase.

    Returns:
        labels: (W, H, slices) uint8 ACDC labels.
        masks: boolean (W, H, slices) masks of unlabeled structures drawn into the image: ``"papillary"``
            (inside the LV label), ``"rv_wall"``, ``"bed"`` (epicardial fat/pericardium), and the float
            ``"bed_fat"`` weight of fat in the bed.
    """
    (w, h, n), (sx, sy, _) = p.shape, p.spacing
    t = (np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1))[None, None, :]
    x = ((np.arange(w) - (w - 1) / 2.0) * sx)[:, None, None]
    y = ((np.arange(h) - (h - 1) / 2.0) * sy)[None, :, None]
    dx = x - (p.centre[0] + p.drift[0] * t * (n - 1))
    dy = y - (p.centre[1] + p.drift[1] * t * (n - 1))
    u = dx * np.cos(p.theta) + dy * np.sin(p.theta)  # toward the RV
    v = -dx * np.sin(p.theta) + dy * np.cos(p.theta)
    rho = np.hypot(u / p.ellipticity, v * p.ellipticity)
    phi = np.arctan2(v, u)
    r_in, r_out = _lv_radii(p, phi, t, es)

    # RV: crescent hugging the epicardium on the septal side, thinning to its insertion points and the apex
    rv_thick = p.rv_thick * (1.0 + 0.15 * (1.0 - t)) * np.clip(1.0 - (t / p.rv_vanish) ** 2, 0.0, None)
    if es:
        rv_thick = rv_thick * (1.0 - p.rv_loss)
    rel = wrap_angle(phi - p.rv_offset)
    span = np.where(rel >= 0, p.rv_span[0], p.rv_span[1]) * (0.9 if es else 1.0)
    profile = np.clip(1.0 - (rel / span) ** 2, 0.0, None) ** p.rv_gamma
    thick = np.where(rv_thick > 2.0, rv_thick * profile, 0.0)
    rv = (rho >= r_out) & (rho < r_out + thick)
    rv_wall = (rho >= r_out + thick) & (rho < r_out + thick + p.rv_wall) & (thick > 0)

    bed_outer = r_out + np.where(thick > 0, thick + p.rv_wall, 0.0)
    bed_w = p.bed_width * (1.0 + 0.3 * np.cos(phi - p.bed_phase[0]))
    bed = (rho >= bed_outer) & (rho < bed_outer + bed_w) & ~rv_wall
    bed_fat = np.clip(
        p.bed_fat + sum(a * np.cos((k + 1) * phi - ph) for k, (a, ph) in enumerate(zip(p.bed_harm, p.bed_phase))), 0, 1
    )

    labels = np.zeros(p.shape, dtype=np.uint8)
    labels[np.broadcast_to(rv, p.shape)] = ACDC_LABELS["RV"]
    labels[np.broadcast_to((rho >= r_in) & (rho < r_out), p.shape)] = ACDC_LABELS["MYO"]
    lv = np.broadcast_to(rho < r_in, p.shape)
    labels[lv] = ACDC_LABELS["LV"]

    papillary = np.zeros(p.shape, dtype=bool)
    r_mid = p.r_lv * (np.sqrt(1.0 - p.lv_loss) if es else 1.0)
    pap_r = p.pap_size * r_mid * (1.3 if es else 1.0)
    for angle in p.pap_angles:
        r_wall, _ = _lv_radii(p, np.asarray(angle), t, es)
        dist = np.maximum(r_wall - 1.2 * pap_r, 0.0)
        cu, cv = dist * np.cos(angle), dist * np.sin(angle)
        disc = np.hypot(u / p.ellipticity - cu, v * p.ellipticity - cv) < pap_r
        papillary |= disc & (r_wall > 3.0 * pap_r)
    masks = {
        "papillary": papillary & lv,
        "rv_wall": np.broadcast_to(rv_wall, p.shape),
        "bed": np.broadcast_to(bed, p.shape),
        "bed_fat": np.broadcast_to(bed_fat, p.shape),
    }
    return labels, masks


def _acdc_case(seed: int, index: int) -> tuple[_AcdcPatient, np.ndarray, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Generate patient ``index`` (1-based).

    Returns:
        parameters, the (4, 4) affine, and ``{frame: (image int16 (W, H, S), label uint8 (W, H, S))}`` for ED (frame 1)
        and ES.
    """
    rng = np.random.default_rng([seed, index])
    p = _draw_acdc_patient(rng, ACDC_GROUPS[(index - 1) % len(ACDC_GROUPS)])  # groups balanced, like ACDC
    affine = random_affine(rng, p.shape, p.spacing)
    w, h, n = p.shape
    sx, sy, sz = p.spacing
    coords = (
        ((np.arange(w) - (w - 1) / 2.0) * sx)[:, None, None],
        ((np.arange(h) - (h - 1) / 2.0) * sy)[None, :, None],
        (np.arange(n) * sz)[None, None, :],
    )
    fine = smooth_noise(rng, p.shape, (1.0, 1.0, 0.0))
    coarse = smooth_noise(rng, p.shape, (4.0, 4.0, 0.3))
    heart_radius = p.r_lv + p.wall + 0.6 * p.rv_thick
    mid_z = (n - 1) * sz / 2.0
    torso = body_and_organs(
        rng, coords, (w * sx, h * sy), (*p.centre, mid_z), heart_radius, (0.2, 0.6, 0.8), (fine, coarse)
    )
    bias = bias_field(rng, p.shape, rng.uniform(0.12, 0.2))
    levels = {  # relative to LV blood
        "myo": rng.uniform(0.20, 0.34),
        "rv": rng.uniform(0.80, 1.00),
        "fat": rng.uniform(0.70, 1.00),
        "slice": 1.0 + rng.normal(0.0, 0.04, n),  # breath-hold to breath-hold signal changes
    }
    scale, noise, blur = rng.uniform(500.0, 1300.0), rng.uniform(0.03, 0.065), rng.uniform(0.5, 0.9)
    blood_tex = smooth_noise(rng, p.shape, (3.0, 3.0, 0.0))
    frames = {}
    for frame in (1, p.es_frame):
        labels, masks = _acdc_anatomy(p, es=frame != 1)
        clean = torso.copy()
        bed = torso * (1.0 - masks["bed_fat"]) + levels["fat"] * masks["bed_fat"]
        clean = np.where(masks["bed"], bed, clean)
        clean = np.where(masks["rv_wall"], 1.1 * levels["myo"] * (1.0 + 0.05 * fine), clean)
        clean = np.where(labels == ACDC_LABELS["MYO"], levels["myo"] * (1.0 + 0.06 * fine), clean)
        clean = np.where(labels == ACDC_LABELS["RV"], levels["rv"] * (1.0 + 0.05 * blood_tex), clean)
        clean = np.where(labels == ACDC_LABELS["LV"], 1.0 + 0.05 * blood_tex, clean)
        clean = np.where(masks["papillary"], 1.2 * levels["myo"], clean)
        image = acquire(rng, clean * levels["slice"], bias, scale, noise, (blur, blur, 0.0))
        frames[frame] = (image, labels)
    return p, affine, frames


def _info_cfg(p: _AcdcPatient) -> str:
    """ACDC ``Info.cfg`` text."""
    return (
        f"ED: 1\nES: {p.es_frame}\nGroup: {p.group}\nHeight: {p.height:.1f}\nNbFrame: 30\nWeight: {p.weight:.1f}\n"
    )


def generate_acdc(out_dir: PathLike, cases: int = 20, seed: int = 0) -> Path:
    """Write ``cases`` synthetic patients in the ACDC layout (see the module docstring) into ``out_dir``.

    Args:
        out_dir: output folder, created if needed; existing files of the same names are overwritten.
        cases: number of patients, numbered ``patient001`` .. ``patient{cases:03d}``.
        seed: dataset seed; patient ``k`` depends only on ``(seed, k)``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    check_cases(cases)
    check_seed(seed)
    root = Path(out_dir)
    for index in range(1, cases + 1):
        p, affine, frames = _acdc_case(seed, index)
        case_dir = root / f"patient{index:03d}"
        case_dir.mkdir(parents=True, exist_ok=True)
        for frame, (image, labels) in frames.items():
            stem = case_dir / f"patient{index:03d}_frame{frame:02d}"
            save_nifti(image, affine, stem.with_name(stem.name + ".nii.gz"))
            save_nifti(labels, affine, stem.with_name(stem.name + "_gt.nii.gz"))
        (case_dir / "Info.cfg").write_text(_info_cfg(p))
    return root
