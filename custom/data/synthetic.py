"""Built-in, deterministic synthetic cardiac MRI in the ACDC and MM-WHS file layouts.

The bundles train on this data when no real dataset is configured, so it has to be small, quick to make,
bit-for-bit reproducible and hard enough that a segmentation network has something to learn.

* ACDC layout (short-axis cine, :func:`generate_acdc`)::

      out_dir/patient001/Info.cfg
      out_dir/patient001/patient001_frame01.nii.gz        # ED image, int16, (W, H, slices)
      out_dir/patient001/patient001_frame01_gt.nii.gz     # ED label, uint8: 0 bg, 1 RV, 2 MYO, 3 LV
      out_dir/patient001/patient001_frame12.nii.gz        # ES image (ES frame number varies, 08..15)
      out_dir/patient001/patient001_frame12_gt.nii.gz

* MM-WHS layout (3D whole heart, :func:`generate_mmwhs`)::

      out_dir/mr_train_1001_image.nii.gz   # int16, about (96, 96, 64)
      out_dir/mr_train_1001_label.nii.gz   # uint16 raw MM-WHS values, see ``MMWHS_LABELS``

Images are raw, un-normalised intensities (roughly 0..2000) made from piecewise-constant tissue classes with
texture, partial-volume blur, a multiplicative bias field and Rician noise. Patient ``k`` is drawn from
``np.random.default_rng([seed, k])``, so it does not depend on how many cases are generated.

Use :func:`ensure_dataset` to generate on first use; ``python -m custom.data.synthetic --help`` for the CLI.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = [
    "ACDC_LABELS",
    "MMWHS_LABELS",
    "GENERATOR_VERSION",
    "LAYOUTS",
    "generate_acdc",
    "generate_mmwhs",
    "ensure_dataset",
    "save_preview",
    "save_overview",
    "main",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Bumped whenever the generated arrays change, so :func:`ensure_dataset` notices stale data.
GENERATOR_VERSION = 1
LAYOUTS = ("acdc", "mmwhs")
ACDC_LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
MMWHS_LABELS = {"background": 0, "MYO": 205, "LA": 420, "LV": 500, "RA": 550, "RV": 600, "AA": 820, "PA": 850}
ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
_META_NAME = "dataset.json"
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


# ----------------------------------------------------------------------------------------------------------------
# shared image model
# ----------------------------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: Sequence[float]) -> np.ndarray:
    """Gaussian noise smoothed by ``sigma`` (voxels, per axis) and rescaled to unit std; same shape as ``shape``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative field (mean log 0) of shape ``shape``: exp of a random low-order polynomial."""
    x, y, z = (np.linspace(-1.0, 1.0, n) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    terms = (x, y, x * x, y * y, x * y, 0.5 * z, 0.5 * z * x, 0.5 * z * y)
    log_field = sum(c * term for c, term in zip(rng.normal(0.0, strength, len(terms)), terms))
    log_field = np.broadcast_to(log_field, shape)
    return np.exp(log_field - log_field.mean())


def _acquire(
    rng: np.random.Generator,
    clean: np.ndarray,
    bias: np.ndarray,
    scale: float,
    noise: float,
    blur: Sequence[float],
) -> np.ndarray:
    """Simulate the scanner on a relative-intensity volume.

    Args:
        rng: random generator for the noise.
        clean: (x, y, z) tissue intensities relative to blood (blood ~ 1).
        bias: (x, y, z) multiplicative bias field.
        scale: raw intensity of blood.
        noise: std of each quadrature noise channel, relative to ``scale``.
        blur: partial-volume Gaussian sigma in voxels per axis.

    Returns:
        (x, y, z) int16 magnitude image (Rician noise: magnitude of complex Gaussian noise added to the signal).
    """
    signal = ndimage.gaussian_filter(clean, blur) * bias * scale
    sigma = noise * scale
    magnitude = np.hypot(signal + rng.normal(0.0, sigma, signal.shape), rng.normal(0.0, sigma, signal.shape))
    return np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angle difference wrapped into [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``array`` as a gzipped NIfTI-1 file with a fixed gzip header, so equal arrays give equal bytes."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


def _affine(rng: np.random.Generator, shape: tuple[int, int, int], spacing: Sequence[float]) -> np.ndarray:
    """Diagonal voxel-to-mm affine with the given spacing and a random, roughly centring, non-zero origin."""
    affine = np.diag([*spacing, 1.0])
    centre = (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
    affine[:3, 3] = np.round(-centre + rng.uniform(-20.0, 20.0, 3), 2)
    return affine


def _ellipsoid_r2(coords: Sequence[np.ndarray], centre: Sequence[float], semi: Sequence[float]) -> np.ndarray:
    """Squared normalised radius of an axis-aligned ellipsoid (< 1 inside) on broadcastable mm ``coords``."""
    return sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, semi))


def _ellipsoid(coords: Sequence[np.ndarray], centre: Sequence[float], semi: Sequence[float]) -> np.ndarray:
    """Boolean axis-aligned ellipsoid on broadcastable mm ``coords``."""
    return _ellipsoid_r2(coords, centre, semi) < 1.0


@dataclass
class _Torso:
    """Parameters of the body around the heart (mm, intensities relative to blood)."""

    tissue: float
    fat: float
    muscle: float
    lung: float
    liver: float


def _body_and_organs(
    rng: np.random.Generator,
    coords: tuple[np.ndarray, np.ndarray, np.ndarray],
    fov: tuple[float, float],
    heart: tuple[float, float, float],
    heart_radius: float,
    liver_dir: Sequence[float],
    texture: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Relative intensities of everything but the heart: air, body outline, chest wall, lungs, liver, spine, aorta.

    Args:
        rng: random generator.
        coords: broadcastable (x, y, z) mm coordinates; the volume is ``np.broadcast(*coords).shape``.
        fov: in-plane field of view (mm) along x and y; the body outline is sized to fit inside it.
        heart: heart centre (mm), organs are placed around it.
        heart_radius: rough in-plane heart radius (mm), organs are kept outside it.
        liver_dir: direction (x, y, z) from the heart to the liver.
        texture: (fine, coarse) unit-std texture fields of the volume's shape.

    Returns:
        (x, y, z) float array, 0 in air.
    """
    x, y, _ = coords
    fine, coarse = texture
    p = _Torso(
        tissue=rng.uniform(0.30, 0.48),
        fat=rng.uniform(0.75, 1.05),
        muscle=rng.uniform(0.20, 0.30),
        lung=rng.uniform(0.04, 0.10),
        liver=rng.uniform(0.28, 0.42),
    )
    hx, hy, hz = heart
    # body outline: perturbed ellipse; ``depth`` approximates the distance (mm) inside the skin
    ax, ay = rng.uniform(0.40, 0.47) * fov[0], rng.uniform(0.35, 0.43) * fov[1]
    bx, by = rng.uniform(-0.04, 0.04) * fov[0], rng.uniform(-0.04, 0.04) * fov[1]
    harm = rng.uniform(0.0, 0.04, 2)
    harm_phase = rng.uniform(0.0, 2.0 * np.pi, 2)
    rho = np.hypot((x - bx) / ax, (y - by) / ay)
    phi = np.arctan2((y - by) / ay, (x - bx) / ax)
    edge = 1.0 + harm[0] * np.cos(2.0 * phi + harm_phase[0]) + harm[1] * np.cos(3.0 * phi + harm_phase[1])
    depth = np.broadcast_to((edge - rho) * min(ax, ay), np.broadcast(*coords).shape)
    out = p.tissue * (1.0 + 0.10 * fine + 0.12 * coarse)
    chest_wall = rng.uniform(4.0, 10.0), rng.uniform(5.0, 10.0)  # subcutaneous fat, muscle thickness (mm)
    cw_phase = rng.uniform(0.0, 2.0 * np.pi, 3)

    # lungs, one each side of the heart, pushed away from it
    for side in (1.0, -1.0):
        angle = rng.uniform(-0.5, 0.5) + (0.0 if side > 0 else np.pi)
        dist = heart_radius + rng.uniform(15.0, 30.0)
        centre = (hx + dist * np.cos(angle), hy + dist * np.sin(angle))
        semi = rng.uniform(22.0, 35.0), rng.uniform(35.0, 55.0), rng.uniform(70.0, 110.0)
        lung = np.sqrt(_ellipsoid_r2(coords, (*centre, hz), semi)) + 0.12 * coarse < 1.0  # irregular outline
        vessels = fine > 2.0  # small bright vessels crossing the lung
        out = np.where(lung, np.where(vessels, 3.0 * p.lung, p.lung) * (1.0 + 0.3 * coarse), out)

    # liver grows along ``liver_dir`` (toward the apex / inferiorly)
    ldir = np.asarray(liver_dir, dtype=float) / np.linalg.norm(liver_dir)
    lc = np.array([hx, hy, hz]) + ldir * (heart_radius + rng.uniform(25.0, 45.0))
    lsemi = rng.uniform(45.0, 65.0), rng.uniform(30.0, 45.0), rng.uniform(40.0, 60.0)
    liver = _ellipsoid(coords, lc, lsemi)
    out = np.where(liver, p.liver * (1.0 + 0.05 * fine + 0.06 * coarse), out)

    # descending aorta (bright, a distractor for the LV) and spine behind it
    angle = rng.uniform(0.5, 1.2)
    ac = (hx + (heart_radius + rng.uniform(8.0, 16.0)) * np.cos(angle), hy + (heart_radius + 10.0) * np.sin(angle))
    a_r = rng.uniform(8.0, 12.0)
    out = np.where(np.hypot(x - ac[0], y - ac[1]) < a_r, rng.uniform(0.75, 1.0) * (1.0 + 0.03 * fine), out)
    sc = (ac[0] - rng.uniform(12.0, 22.0), ac[1] + a_r + rng.uniform(12.0, 18.0))
    s_r = rng.uniform(12.0, 16.0)
    s_dist = np.hypot(x - sc[0], y - sc[1])
    out = np.where(s_dist < s_r, np.where(s_dist > s_r - 2.5, 0.08, rng.uniform(0.35, 0.5) * (1.0 + 0.1 * fine)), out)

    # a few unlabeled blobs of random contrast (bowel, vessels, fluid) away from the heart
    for _ in range(4):
        centre = rng.uniform(-0.35, 0.35, 2) * np.asarray(fov)
        semi = rng.uniform(6.0, 18.0, 3)
        level = rng.uniform(0.08, 0.85)
        if np.hypot(centre[0] - hx, centre[1] - hy) < heart_radius + max(semi[:2]) + 10.0:
            continue
        blob = _ellipsoid(coords, (*centre, hz), (semi[0], semi[1], 3.0 * semi[2]))
        out = np.where(blob, level * (1.0 + 0.05 * fine), out)

    # subcutaneous fat and chest-wall muscle of uneven thickness around the body
    fat_w = 1.0 + 0.6 * np.cos(phi - cw_phase[0]) + 0.3 * np.cos(2 * phi - cw_phase[1])
    fat_w = chest_wall[0] * np.clip(fat_w, 0.3, None)
    muscle_w = chest_wall[1] * np.clip(1.0 + 0.5 * np.cos(phi - cw_phase[2]), 0.3, None)
    fat_w, muscle_w = fat_w + 1.5 * coarse, muscle_w + 1.5 * coarse
    out = np.where((depth > fat_w) & (depth < fat_w + muscle_w), p.muscle * (1.0 + 0.08 * fine), out)
    out = np.where((depth > 0) & (depth <= fat_w), p.fat * (1.0 + 0.06 * fine + 0.05 * coarse), out)
    return np.where(depth > 0, out, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# ACDC: short-axis cine
# ----------------------------------------------------------------------------------------------------------------


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
    wall = wall * (1.0 - depth * np.exp(-0.5 * (_wrap(phi - centre) / half_width) ** 2))
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
    rel = _wrap(phi - p.rv_offset)
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
    affine = _affine(rng, p.shape, p.spacing)
    w, h, n = p.shape
    sx, sy, sz = p.spacing
    coords = (
        ((np.arange(w) - (w - 1) / 2.0) * sx)[:, None, None],
        ((np.arange(h) - (h - 1) / 2.0) * sy)[None, :, None],
        (np.arange(n) * sz)[None, None, :],
    )
    fine = _smooth_noise(rng, p.shape, (1.0, 1.0, 0.0))
    coarse = _smooth_noise(rng, p.shape, (4.0, 4.0, 0.3))
    heart_radius = p.r_lv + p.wall + 0.6 * p.rv_thick
    mid_z = (n - 1) * sz / 2.0
    torso = _body_and_organs(
        rng, coords, (w * sx, h * sy), (*p.centre, mid_z), heart_radius, (0.2, 0.6, 0.8), (fine, coarse)
    )
    bias = _bias_field(rng, p.shape, rng.uniform(0.12, 0.2))
    levels = {  # relative to LV blood
        "myo": rng.uniform(0.20, 0.34),
        "rv": rng.uniform(0.80, 1.00),
        "fat": rng.uniform(0.70, 1.00),
        "slice": 1.0 + rng.normal(0.0, 0.04, n),  # breath-hold to breath-hold signal changes
    }
    scale, noise, blur = rng.uniform(500.0, 1300.0), rng.uniform(0.03, 0.065), rng.uniform(0.5, 0.9)
    blood_tex = _smooth_noise(rng, p.shape, (3.0, 3.0, 0.0))
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
        image = _acquire(rng, clean * levels["slice"], bias, scale, noise, (blur, blur, 0.0))
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
    _check_cases(cases)
    _check_seed(seed)
    root = Path(out_dir)
    for index in range(1, cases + 1):
        p, affine, frames = _acdc_case(seed, index)
        case_dir = root / f"patient{index:03d}"
        case_dir.mkdir(parents=True, exist_ok=True)
        for frame, (image, labels) in frames.items():
            stem = case_dir / f"patient{index:03d}_frame{frame:02d}"
            _save_nifti(image, affine, stem.with_name(stem.name + ".nii.gz"))
            _save_nifti(labels, affine, stem.with_name(stem.name + "_gt.nii.gz"))
        (case_dir / "Info.cfg").write_text(_info_cfg(p))
    return root


# ----------------------------------------------------------------------------------------------------------------
# MM-WHS: 3D whole heart
# ----------------------------------------------------------------------------------------------------------------


def _unit(vector: Sequence[float]) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    return vector / np.linalg.norm(vector)


def _rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """Random (3, 3) rotation by at most ``max_angle`` rad about a random axis (Rodrigues)."""
    k = _unit(rng.normal(size=3))
    angle = rng.uniform(-max_angle, max_angle)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * kx @ kx


def _bezier(points: np.ndarray, step: float) -> np.ndarray:
    """Samples (N, 3) along the quadratic Bezier curve through control ``points`` (3, 3), about ``step`` mm apart."""
    length = np.linalg.norm(np.diff(points, axis=0), axis=1).sum()
    s = np.linspace(0.0, 1.0, max(int(length / step), 2))[:, None]
    return (1 - s) ** 2 * points[0] + 2 * s * (1 - s) * points[1] + s**2 * points[2]


def _tube(centreline: np.ndarray, radius: float, origin: np.ndarray, spacing: np.ndarray, shape: tuple) -> np.ndarray:
    """Boolean volume of voxels within ``radius`` mm of the (N, 3) mm ``centreline``."""
    seeds = np.zeros(shape, dtype=bool)
    idx = np.rint((centreline - origin) / spacing).astype(int)
    idx = idx[np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)]
    if len(idx) == 0:
        return seeds
    seeds[tuple(idx.T)] = True
    return ndimage.distance_transform_edt(~seeds, sampling=spacing) < radius


def _mmwhs_anatomy(
    rng: np.random.Generator, coords: tuple[np.ndarray, ...], origin: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Rasterise a whole heart centred in the volume.

    Args:
        rng: random generator.
        coords: broadcastable (x, y, z) mm coordinates of the voxel centres (x: patient left, y: posterior,
            z: superior).
        origin: mm coordinate of voxel (0, 0, 0).
        spacing: voxel size (mm).

    Returns:
        labels (W, H, D) uint16 with MM-WHS values, the LV centre (mm) and a rough heart radius (mm).
    """
    shape = np.broadcast(*coords).shape
    up, post, left = np.eye(3)[2], np.eye(3)[1], np.eye(3)[0]
    # heart frame: long axis (base -> apex) points left, anterior, inferior; RV lies anterior-right of the LV
    rot = _rotation(rng, 0.25)
    e_l = rot @ _unit([0.6, -0.55, -0.58])
    e_s = rot @ _unit([-0.5, -0.7, 0.1])
    e_s = _unit(e_s - e_s @ e_l * e_l)
    e_a = np.cross(e_l, e_s)
    lc, rc, ell = rng.uniform(38.0, 46.0), rng.uniform(22.0, 27.0), rng.uniform(0.9, 1.1)  # LV cavity
    lo, ro = lc + rng.uniform(6.0, 9.0), rc + rng.uniform(8.0, 11.0)  # epicardium
    base = -0.45 * lc  # basal plane, on the long axis
    rv_t, rv_span = rng.uniform(16.0, 24.0), rng.uniform(1.0, 1.4)
    la_r, ra_r = rng.uniform(20.0, 26.0, 3), rng.uniform(20.0, 26.0, 3)
    base_c = base * e_l  # relative to the LV centre until the heart is placed
    la_c = base_c - e_l * 0.8 * la_r[0] + post * 12.0 + rng.uniform(-4.0, 4.0, 3)
    ra_c = base_c - e_l * 0.6 * ra_r[0] - left * (rc + 18.0) + rng.uniform(-4.0, 4.0, 3)
    aa_0 = base_c + e_s * 0.3 * rc - e_a * 0.2 * rc
    aa_ctrl = np.stack([aa_0, aa_0 + up * 40.0 - post * 5.0, aa_0 + up * 60.0 + post * 30.0 + left * 5.0])
    pa_0 = base_c + e_s * (ro + 8.0) - post * 10.0
    pa_ctrl = np.stack([pa_0, pa_0 + up * 28.0 + left * 22.0, pa_0 + up * 32.0 + left * 32.0 + post * 40.0])
    aa_ctrl = aa_ctrl + rng.uniform(-4.0, 4.0, (3, 3))
    pa_ctrl = pa_ctrl + rng.uniform(-4.0, 4.0, (3, 3))
    aa_r, pa_r = rng.uniform(12.0, 15.0), rng.uniform(11.0, 14.0)

    # centre the heart's bounding box in the field of view
    points = np.concatenate([
        [lo * e_l + ro * e_s, lo * e_l - ro * e_s, e_s * (ro + rv_t), -e_s * ro, e_a * ro, -e_a * ro],
        la_c + np.diag(la_r), la_c - np.diag(la_r), ra_c + np.diag(ra_r), ra_c - np.diag(ra_r),
        aa_ctrl + aa_r, aa_ctrl - aa_r, pa_ctrl + pa_r, pa_ctrl - pa_r,
    ])
    centre = -(points.max(0) + points.min(0)) / 2.0 + rng.uniform(-6.0, 6.0, 3)
    centre += origin + (np.asarray(shape) - 1) / 2.0 * spacing

    rel = [c - m for c, m in zip(coords, centre)]
    ll, ss, aa = (sum(r * a for r, a in zip(rel, axis)) for axis in (e_l, e_s, e_a))
    rho = np.hypot(ss, aa / ell)
    phi = np.arctan2(aa, ss)  # 0 toward the RV
    lv = ((ll / lc) ** 2 + (rho / rc) ** 2 < 1.0) & (ll > base)
    r_epi = ro * np.sqrt(np.clip(1.0 - (ll / lo) ** 2, 0.0, None))
    myo = (rho < r_epi) & (ll > base) & ~lv
    thick = rv_t * np.clip(1.0 - ((ll - base) / (1.5 * lc)) ** 2, 0.0, None)
    thick = thick * np.clip(1.0 - (_wrap(phi) / rv_span) ** 2, 0.0, None) ** 0.6
    rv = (rho >= r_epi) & (rho < r_epi + thick) & (ll > base - 4.0) & (r_epi > 0)
    masks = {
        "LA": _ellipsoid(coords, centre + la_c, la_r),
        "RA": _ellipsoid(coords, centre + ra_c, ra_r),
        "AA": _tube(_bezier(centre + aa_ctrl, 0.5), aa_r, origin, spacing, shape),
        "PA": _tube(_bezier(centre + pa_ctrl, 0.5), pa_r, origin, spacing, shape),
        "RV": rv,
        "MYO": myo,
        "LV": lv,
    }
    labels = np.zeros(shape, dtype=np.uint16)
    for name, mask in masks.items():  # later structures win where they overlap
        labels[np.broadcast_to(mask, shape)] = MMWHS_LABELS[name]
    return labels, centre, ro + 0.5 * rv_t


def _mmwhs_case(seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate case ``index`` (1-based): image int16 (W, H, D), label uint16 (W, H, D) and the (4, 4) affine."""
    rng = np.random.default_rng([seed, index])
    shape = (int(rng.integers(44, 53)) * 2, int(rng.integers(44, 53)) * 2, int(rng.integers(28, 37)) * 2)
    spacing = np.array([*(2 * [round(float(rng.uniform(1.8, 2.2)), 4)]), round(float(rng.uniform(1.8, 2.3)), 4)])
    affine = _affine(rng, shape, spacing)
    origin = -(np.asarray(shape) - 1) / 2.0 * spacing  # mm coordinates centred on the volume
    x, y, z = (origin[i] + np.arange(shape[i]) * spacing[i] for i in range(3))
    coords = (x[:, None, None], y[None, :, None], z[None, None, :])
    labels, heart_c, heart_r = _mmwhs_anatomy(rng, coords, origin, spacing)

    fine = _smooth_noise(rng, shape, (1.0, 1.0, 1.0))
    coarse = _smooth_noise(rng, shape, (4.0, 4.0, 4.0))
    torso = _body_and_organs(
        rng, coords, (shape[0] * spacing[0], shape[1] * spacing[1]), tuple(heart_c), heart_r, (-0.4, 0.3, -0.9),
        (fine, coarse),
    )
    myo_level = rng.uniform(0.22, 0.34)
    blood = labels > 0
    blood[labels == MMWHS_LABELS["MYO"]] = False
    heart = labels > 0
    walls = ndimage.binary_dilation(blood, iterations=1) & ~heart
    bed = ndimage.binary_dilation(heart | walls, iterations=2) & ~heart & ~walls
    fat = np.clip(0.5 + 0.5 * coarse, 0.0, 1.0) * rng.uniform(0.7, 1.0)
    clean = np.where(bed, torso * (1.0 - fat) + fat, torso)
    clean = np.where(walls, 1.1 * myo_level * (1.0 + 0.05 * fine), clean)
    blood_tex = _smooth_noise(rng, shape, (3.0, 3.0, 3.0))
    for name, value in MMWHS_LABELS.items():
        if name == "background":
            continue
        level = myo_level * (1.0 + 0.06 * fine) if name == "MYO" else rng.uniform(0.85, 1.0) * (1 + 0.05 * blood_tex)
        clean = np.where(labels == value, level, clean)
    # thin darker seams where two blood pools of different labels meet (valves, vessel walls)
    seam = np.zeros(shape, dtype=bool)
    for axis in range(3):
        a, b = np.swapaxes(labels, 0, axis)[1:], np.swapaxes(labels, 0, axis)[:-1]
        edge = (a != b) & np.swapaxes(blood, 0, axis)[1:] & np.swapaxes(blood, 0, axis)[:-1]
        np.swapaxes(seam, 0, axis)[1:] |= edge
    clean = np.where(seam, 0.7 * clean, clean)
    bias = _bias_field(rng, shape, rng.uniform(0.12, 0.2))
    scale, noise, blur = rng.uniform(500.0, 1300.0), rng.uniform(0.03, 0.06), rng.uniform(0.5, 0.8)
    image = _acquire(rng, clean, bias, scale, noise, (blur, blur, blur))
    return image, labels, affine


def generate_mmwhs(out_dir: PathLike, cases: int = 20, seed: int = 0) -> Path:
    """Write ``cases`` synthetic whole-heart volumes in the MM-WHS MR layout (see the module docstring).

    Args:
        out_dir: output folder, created if needed; existing files of the same names are overwritten.
        cases: number of volumes, numbered ``mr_train_1001`` .. ``mr_train_{1000 + cases}``.
        seed: dataset seed; case ``k`` depends only on ``(seed, k)``.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    _check_cases(cases)
    _check_seed(seed)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for index in range(1, cases + 1):
        image, labels, affine = _mmwhs_case(seed, index)
        _save_nifti(image, affine, root / f"mr_train_{1000 + index}_image.nii.gz")
        _save_nifti(labels, affine, root / f"mr_train_{1000 + index}_label.nii.gz")
    return root


# ----------------------------------------------------------------------------------------------------------------
# generate on first use
# ----------------------------------------------------------------------------------------------------------------


def _check_cases(cases: int) -> None:
    if int(cases) != cases or cases < 1 or cases > 999:
        raise ValueError(f"cases must be an integer in [1, 999], got {cases!r}.")


def _check_seed(seed: int) -> None:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")


def _expected_meta(layout: str, cases: int, seed: int) -> dict:
    return {
        "generator": "custom.data.synthetic",
        "version": GENERATOR_VERSION,
        "layout": layout,
        "cases": int(cases),
        "seed": int(seed),
    }


def _read_meta(root: Path) -> dict | None:
    """Parsed ``root/dataset.json``, or None if there is none."""
    meta = root / _META_NAME
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise FileExistsError(f"{meta} is not a readable synthetic-dataset record; remove {root} to regenerate.") from e


def _is_match(record: dict | None, expected: dict) -> bool:
    return record is not None and all(record.get(k) == v for k, v in expected.items())


def ensure_dataset(out_dir: PathLike, layout: str = "acdc", cases: int = 20, seed: int = 0) -> Path:
    """Generate the synthetic dataset into ``out_dir`` unless it is already there; return ``out_dir``.

    ``out_dir/dataset.json`` records ``generator``, ``version``, ``layout``, ``cases``, ``seed`` and the relative
    ``files``. When it matches the request (and the files exist) nothing is written. Otherwise the data is made
    in a hidden sibling folder, the record is written last, and the folder is renamed into place, so an
    interrupted run never leaves a dataset that looks complete. Concurrent callers (e.g. one per DDP rank) are
    safe: the loser of the rename discards its copy.

    Args:
        out_dir: dataset folder; must be absent, empty, or a previous result of this function.
        layout: ``"acdc"`` or ``"mmwhs"``.
        cases: number of cases.
        seed: dataset seed.

    Raises:
        FileExistsError: ``out_dir`` holds other files, a dataset made with other parameters or generator
            version, an unreadable record, or a record whose files are missing. Nothing is deleted: remove it
            or pick another folder.
    """
    _check_layout(layout)
    _check_cases(cases)
    _check_seed(seed)
    root = Path(out_dir)
    expected = _expected_meta(layout, cases, seed)
    if _verify_existing(root, expected):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        (generate_acdc if layout == "acdc" else generate_mmwhs)(tmp, cases, seed)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / _META_NAME).write_text(json.dumps({**expected, "files": files}, indent=1) + "\n")
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        try:
            os.rename(tmp, root)
        except OSError:
            if not _verify_existing(root, expected):  # raises if someone else left something else there
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def _verify_existing(root: Path, expected: dict) -> bool:
    """True if ``root`` already holds the expected dataset, False if it is absent or empty; raise otherwise."""
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return False
    record = _read_meta(root)
    if record is None:
        raise FileExistsError(
            f"{root} exists but is not a synthetic dataset (no {_META_NAME}); refusing to write into it. "
            "Remove it or choose another directory."
        )
    if not _is_match(record, expected):
        found = {k: record.get(k) for k in expected}
        raise FileExistsError(
            f"{root} holds a synthetic dataset made with {found}, not the requested {expected}. "
            "Remove it or choose another directory."
        )
    missing = [f for f in record.get("files", []) if not (root / f).is_file()]
    if missing:
        raise FileExistsError(
            f"{root} is missing {len(missing)} file(s) listed in {_META_NAME} (e.g. {missing[0]}). "
            "Remove it to regenerate."
        )
    return True


# ----------------------------------------------------------------------------------------------------------------
# preview figures
# ----------------------------------------------------------------------------------------------------------------

_Panel = tuple[str, np.ndarray, Union[np.ndarray, None], float]  # title, image (x, y), labels (x, y) or None, aspect


def _load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def _acdc_panels(root: Path, patients: int = 3) -> list[list[_Panel]]:
    """Rows of panels (ED image, ED mid, ES mid, apical slice) for the first ``patients`` patients."""
    rows = []
    for case_dir in sorted(root.glob("patient[0-9][0-9][0-9]"))[:patients]:
        info = dict(line.split(":", 1) for line in (case_dir / "Info.cfg").read_text().splitlines() if ":" in line)
        es = int(info["ES"])
        ed_img, ed_lab = (_load(case_dir / f"{case_dir.name}_frame01{s}.nii.gz") for s in ("", "_gt"))
        es_img, es_lab = (_load(case_dir / f"{case_dir.name}_frame{es:02d}{s}.nii.gz") for s in ("", "_gt"))
        mid, apex = ed_img.shape[2] // 2, ed_img.shape[2] - 1
        name = f"{case_dir.name} ({info['Group'].strip()})"
        rows.append([
            (f"{name} ED", ed_img[:, :, mid], None, 1.0),
            (f"ED slice {mid}", ed_img[:, :, mid], ed_lab[:, :, mid], 1.0),
            (f"ES slice {mid}", es_img[:, :, mid], es_lab[:, :, mid], 1.0),
            (f"ED apical slice {apex}", ed_img[:, :, apex], ed_lab[:, :, apex], 1.0),
        ])
    return rows


def _mmwhs_panels(root: Path, cases: int = 3) -> list[list[_Panel]]:
    """Rows of panels (axial image, axial, coronal, sagittal with labels) through the LV of the first cases."""
    rows = []
    for image_path in sorted(root.glob("mr_train_*_image.nii.gz"))[:cases]:
        nii = nib.load(str(image_path))
        image, labels = np.asanyarray(nii.dataobj), _load(Path(str(image_path).replace("_image", "_label")))
        sx, sy, sz = nii.header.get_zooms()[:3]
        cx, cy, cz = (int(round(c)) for c in ndimage.center_of_mass(labels == MMWHS_LABELS["LV"]))
        name = image_path.name.replace("_image.nii.gz", "")
        rows.append([
            (f"{name} axial", image[:, :, cz], None, sy / sx),
            ("axial", image[:, :, cz], labels[:, :, cz], sy / sx),
            ("coronal", image[:, cy, :], labels[:, cy, :], sz / sx),
            ("sagittal", image[cx, :, :], labels[cx, :, :], sz / sy),
        ])
    return rows


# overlay colours shared by both layouts: RV blue, MYO green, LV red
_OVERLAY = {
    1: "#1f4fff", 2: "#3cb44b", 3: "#e6194b",
    205: "#3cb44b", 420: "#f58231", 500: "#e6194b", 550: "#ffe119", 600: "#1f4fff", 820: "#f032e6", 850: "#42d4f4",
}


def _overlay_rgba(labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(x, y) labels to an (x, y, 4) RGBA overlay, transparent on background."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*labels.shape, 4))
    for value, colour in _OVERLAY.items():
        rgba[labels == value] = to_rgba(colour, alpha)
    return rgba


def _plot_rows(rows: list[list[_Panel]], png_path: PathLike, panel_inches: float = 2.4) -> Path:
    """Draw panels (image grey, labels as a semi-transparent overlay) on a grid and save a palette PNG."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    ncols = max(len(r) for r in rows)
    fig = Figure(figsize=(panel_inches * ncols, panel_inches * len(rows)))
    FigureCanvasAgg(fig)  # Agg rendering without touching pyplot's global backend
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (title, image, labels, aspect) in enumerate(row):
            # arrays are (x, y) in-plane or (., z): show x left-right and, for z, superior at the top
            flip = title in ("coronal", "sagittal")
            orient = (lambda a: np.swapaxes(a, 0, 1)[::-1]) if flip else (lambda a: np.swapaxes(a, 0, 1))
            lo, hi = np.percentile(image, (0.5, 99.5))
            ax = axes[r, c]
            ax.imshow(orient(image), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            if labels is not None:
                ax.imshow(orient(_overlay_rgba(labels)), aspect=aspect, interpolation="nearest")
            ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80, format="png")
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    # an adaptive palette keeps the noisy greyscale figure small
    Image.open(buffer).convert("RGB").quantize(colors=128).save(png_path, optimize=True)
    return png_path


def save_preview(dataset_dir: PathLike, png_path: PathLike, layout: str = "acdc") -> Path:
    """Save a PNG of a few cases of a generated dataset, labels overlaid; returns ``png_path``.

    ACDC: one row per patient (first three) with the ED mid slice alone, then ED mid, ES mid and ED apical
    slices with labels. MM-WHS: one row per case with axial, coronal and sagittal slices through the LV.
    """
    _check_layout(layout)
    rows = _acdc_panels(Path(dataset_dir)) if layout == "acdc" else _mmwhs_panels(Path(dataset_dir))
    if not rows:
        raise FileNotFoundError(f"no {layout} cases found in {dataset_dir}.")
    return _plot_rows(rows, png_path)


def save_overview(acdc_dir: PathLike, mmwhs_dir: PathLike, png_path: PathLike) -> Path:
    """Save the documentation figure: three ACDC patients and one MM-WHS case (``docs/synthetic_examples.png``)."""
    return _plot_rows(_acdc_panels(Path(acdc_dir)) + _mmwhs_panels(Path(mmwhs_dir), cases=1), png_path)


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------


def _du(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m custom.data.synthetic --out DIR [--cases N] [--seed S] [--layout acdc|mmwhs] [--preview PNG]``."""
    parser = argparse.ArgumentParser(prog="python -m custom.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="dataset folder (generated unless it already holds this data)")
    parser.add_argument("--cases", type=int, default=20, help="number of patients / volumes (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--layout", choices=LAYOUTS, default="acdc", help="file layout (default acdc)")
    parser.add_argument("--preview", default=None, help="also save a PNG of a few cases with labels overlaid")
    args = parser.parse_args(argv)

    root = Path(args.out)
    existed = (root / _META_NAME).is_file()
    start = time.perf_counter()
    try:
        ensure_dataset(root, layout=args.layout, cases=args.cases, seed=args.seed)
    except (FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    files = json.loads((root / _META_NAME).read_text())["files"]
    verb = "found existing" if existed else f"wrote ({time.perf_counter() - start:.1f} s)"
    print(f"{verb} {args.layout} dataset: {args.cases} cases, seed {args.seed}, {len(files)} files, "
          f"{_du(root) / 1e6:.1f} MB in {root}")
    if args.preview:
        print(f"preview: {save_preview(root, args.preview, layout=args.layout)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
