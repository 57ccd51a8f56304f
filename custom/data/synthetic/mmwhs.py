"""Synthetic MM-WHS whole-heart MR volumes: seven structures in 3D, raw MM-WHS label values.

Layout written by :func:`generate_mmwhs`::

    out_dir/mr_train_1001_image.nii.gz   # int16, about (96, 96, 64)
    out_dir/mr_train_1001_label.nii.gz   # uint16 raw MM-WHS values, see ``MMWHS_LABELS``
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from custom.data.synthetic.image_model import (
    PathLike,
    acquire,
    bias_field,
    body_and_organs,
    check_cases,
    check_seed,
    ellipsoid,
    random_affine,
    save_nifti,
    smooth_noise,
    wrap_angle,
)

__all__ = ["MMWHS_LABELS", "generate_mmwhs"]

MMWHS_LABELS = {"background": 0, "MYO": 205, "LA": 420, "LV": 500, "RA": 550, "RV": 600, "AA": 820, "PA": 850}


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
    thick = thick * np.clip(1.0 - (wrap_angle(phi) / rv_span) ** 2, 0.0, None) ** 0.6
    rv = (rho >= r_epi) & (rho < r_epi + thick) & (ll > base - 4.0) & (r_epi > 0)
    masks = {
        "LA": ellipsoid(coords, centre + la_c, la_r),
        "RA": ellipsoid(coords, centre + ra_c, ra_r),
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
    affine = random_affine(rng, shape, spacing)
    origin = -(np.asarray(shape) - 1) / 2.0 * spacing  # mm coordinates centred on the volume
    x, y, z = (origin[i] + np.arange(shape[i]) * spacing[i] for i in range(3))
    coords = (x[:, None, None], y[None, :, None], z[None, None, :])
    labels, heart_c, heart_r = _mmwhs_anatomy(rng, coords, origin, spacing)

    fine = smooth_noise(rng, shape, (1.0, 1.0, 1.0))
    coarse = smooth_noise(rng, shape, (4.0, 4.0, 4.0))
    torso = body_and_organs(
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
    blood_tex = smooth_noise(rng, shape, (3.0, 3.0, 3.0))
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
    bias = bias_field(rng, shape, rng.uniform(0.12, 0.2))
    scale, noise, blur = rng.uniform(500.0, 1300.0), rng.uniform(0.03, 0.06), rng.uniform(0.5, 0.8)
    image = acquire(rng, clean, bias, scale, noise, (blur, blur, blur))
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
    check_cases(cases)
    check_seed(seed)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for index in range(1, cases + 1):
        image, labels, affine = _mmwhs_case(seed, index)
        save_nifti(image, affine, root / f"mr_train_{1000 + index}_image.nii.gz")
        save_nifti(labels, affine, root / f"mr_train_{1000 + index}_label.nii.gz")
    return root
