"""The image model shared by both synthetic layouts: tissue texture, body and organs, scanner, NIfTI files.

Intensities are relative to blood (~1) until :func:`acquire` turns them into raw int16 magnitudes with partial-volume
blur, a multiplicative bias field and Rician noise.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = [
    "PathLike",
    "smooth_noise",
    "bias_field",
    "acquire",
    "wrap_angle",
    "save_nifti",
    "random_affine",
    "ellipsoid_r2",
    "ellipsoid",
    "body_and_organs",
    "check_cases",
    "check_seed",
]

PathLike = Union[str, "os.PathLike[str]"]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: Sequence[float]) -> np.ndarray:
    """Gaussian noise smoothed by ``sigma`` (voxels, per axis) and rescaled to unit std; same shape as ``shape``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-12)


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative field (mean log 0) of shape ``shape``: exp of a random low-order polynomial."""
    x, y, z = (np.linspace(-1.0, 1.0, n) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    terms = (x, y, x * x, y * y, x * y, 0.5 * z, 0.5 * z * x, 0.5 * z * y)
    log_field = sum(c * term for c, term in zip(rng.normal(0.0, strength, len(terms)), terms))
    log_field = np.broadcast_to(log_field, shape)
    return np.exp(log_field - log_field.mean())


def acquire(
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


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angle difference wrapped into [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``array`` as a gzipped NIfTI-1 file with a fixed gzip header, so equal arrays give equal bytes."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


def random_affine(rng: np.random.Generator, shape: tuple[int, int, int], spacing: Sequence[float]) -> np.ndarray:
    """Diagonal voxel-to-mm affine with the given spacing and a random, roughly centring, non-zero origin."""
    affine = np.diag([*spacing, 1.0])
    centre = (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
    affine[:3, 3] = np.round(-centre + rng.uniform(-20.0, 20.0, 3), 2)
    return affine


def ellipsoid_r2(coords: Sequence[np.ndarray], centre: Sequence[float], semi: Sequence[float]) -> np.ndarray:
    """Squared normalised radius of an axis-aligned ellipsoid (< 1 inside) on broadcastable mm ``coords``."""
    return sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, semi))


def ellipsoid(coords: Sequence[np.ndarray], centre: Sequence[float], semi: Sequence[float]) -> np.ndarray:
    """Boolean axis-aligned ellipsoid on broadcastable mm ``coords``."""
    return ellipsoid_r2(coords, centre, semi) < 1.0


@dataclass
class _Torso:
    """Parameters of the body around the heart (mm, intensities relative to blood)."""

    tissue: float
    fat: float
    muscle: float
    lung: float
    liver: float


def body_and_organs(
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
        lung = np.sqrt(ellipsoid_r2(coords, (*centre, hz), semi)) + 0.12 * coarse < 1.0  # irregular outline
        vessels = fine > 2.0  # small bright vessels crossing the lung
        out = np.where(lung, np.where(vessels, 3.0 * p.lung, p.lung) * (1.0 + 0.3 * coarse), out)

    # liver grows along ``liver_dir`` (toward the apex / inferiorly)
    ldir = np.asarray(liver_dir, dtype=float) / np.linalg.norm(liver_dir)
    lc = np.array([hx, hy, hz]) + ldir * (heart_radius + rng.uniform(25.0, 45.0))
    lsemi = rng.uniform(45.0, 65.0), rng.uniform(30.0, 45.0), rng.uniform(40.0, 60.0)
    liver = ellipsoid(coords, lc, lsemi)
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
        blob = ellipsoid(coords, (*centre, hz), (semi[0], semi[1], 3.0 * semi[2]))
        out = np.where(blob, level * (1.0 + 0.05 * fine), out)

    # subcutaneous fat and chest-wall muscle of uneven thickness around the body
    fat_w = 1.0 + 0.6 * np.cos(phi - cw_phase[0]) + 0.3 * np.cos(2 * phi - cw_phase[1])
    fat_w = chest_wall[0] * np.clip(fat_w, 0.3, None)
    muscle_w = chest_wall[1] * np.clip(1.0 + 0.5 * np.cos(phi - cw_phase[2]), 0.3, None)
    fat_w, muscle_w = fat_w + 1.5 * coarse, muscle_w + 1.5 * coarse
    out = np.where((depth > fat_w) & (depth < fat_w + muscle_w), p.muscle * (1.0 + 0.08 * fine), out)
    out = np.where((depth > 0) & (depth <= fat_w), p.fat * (1.0 + 0.06 * fine + 0.05 * coarse), out)
    return np.where(depth > 0, out, 0.0)


def check_cases(cases: int) -> None:
    if int(cases) != cases or cases < 1 or cases > 999:
        raise ValueError(f"cases must be an integer in [1, 999], got {cases!r}.")


def check_seed(seed: int) -> None:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
