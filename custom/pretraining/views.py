# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""
Two-view augmentation with known geometry for dense contrastive pre-training.

Everything here works on a whole batch of 2D images in torch (on whatever device the batch lives),
and the spatial part is an affine transform whose matrix is returned, so that dense
correspondences between the two views can be computed exactly (see :mod:`custom.pretraining.correspondence`).

Convention (that of ``torch.nn.functional.affine_grid`` with ``align_corners=False``): a matrix
``theta`` of shape ``(2, 3)`` maps normalised output coordinates ``p = (x, y)`` in ``[-1, 1]^2`` to
the normalised input coordinates ``theta @ [x, y, 1]`` that are sampled, i.e. the view pixel at
``p`` shows the original image at ``theta @ [p, 1]``. ``x`` runs along the width, ``y`` along
the height.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "sample_affine",
    "warp",
    "rand_gamma",
    "rand_contrast",
    "rand_gaussian_noise",
    "rand_gaussian_blur",
    "TwoViewAugment",
]


def _rand(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str | None
) -> torch.Tensor:
    """Uniform ``[0, 1)`` samples drawn on the generator's device, then moved to ``device``."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=draw_device).to(device)


def _uniform(
    n: int,
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    return (low + (high - low) * _rand((n,), generator, device)).to(dtype)


def _as_range(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """``v -> (-v, v)``; a pair is returned as is."""
    if isinstance(value, (int, float)):
        return (-float(value), float(value))
    if len(value) != 2:
        raise ValueError(f"{name} must be a number or a (min, max) pair, got {value}.")
    return (float(value[0]), float(value[1]))


def _per_axis(value: float | Sequence[float], name: str) -> tuple[float, float]:
    """``v -> (v, v)`` for the (x, y) axes; a pair is returned as is."""
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    if len(value) != 2:
        raise ValueError(f"{name} must be a number or an (x, y) pair, got {value}.")
    return (float(value[0]), float(value[1]))


def sample_affine(
    batch_size: int,
    rotation_range: float | Sequence[float] = 0.0,
    scale_range: Sequence[float] = (1.0, 1.0),
    translate_range: float | Sequence[float] = 0.0,
    flip_prob: float | Sequence[float] = 0.0,
    generator: torch.Generator | None = None,
    spatial_size: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """
    Sample a batch of random 2D affine matrices in the ``F.affine_grid`` convention
    (``align_corners=False``): a view pixel at normalised coordinates ``p`` samples the input at
    ``theta @ [p, 1]``.

    The view is built as: flip, zoom by ``s`` (``s > 1`` zooms in), rotate, translate, i.e.
    ``theta = [R @ diag(fx, fy) / s | t]``.

    Args:
        batch_size: number of matrices ``B``.
        rotation_range: rotation angle in radians, ``a`` for ``U(-a, a)`` or a ``(min, max)`` pair.
        scale_range: ``(min, max)`` of the zoom factor ``s``.
        translate_range: maximal shift of the view centre in normalised coordinates (a fraction of
            the half-size), one number for both axes or an ``(x, y)`` pair; shifts are ``U(-t, t)``.
        flip_prob: probability of flipping along x (width) and along y (height), independently;
            one number for both axes or an ``(x, y)`` pair.
        generator: optional ``torch.Generator`` for reproducible draws.
        spatial_size: ``(H, W)`` of the images; when given and not square, the rotation is a true
            rotation in pixel space (otherwise it rotates normalised coordinates, a shear for
            non-square images).
        device: device of the returned matrices (random numbers are drawn on the generator's device).
        dtype: dtype of the returned matrices.

    Returns:
        ``theta`` of shape ``(B, 2, 3)``.
    """
    rot_lo, rot_hi = _as_range(rotation_range, "rotation_range")
    if len(scale_range) != 2 or min(scale_range) <= 0:
        raise ValueError(f"scale_range must be a positive (min, max) pair, got {scale_range}.")
    tx, ty = _per_axis(translate_range, "translate_range")
    px, py = _per_axis(flip_prob, "flip_prob")

    draws = _rand((batch_size, 6), generator, device).to(torch.float64)
    angle = rot_lo + (rot_hi - rot_lo) * draws[:, 0]
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * draws[:, 1]
    shift_x = tx * (2 * draws[:, 2] - 1)
    shift_y = ty * (2 * draws[:, 3] - 1)
    flip_x = torch.where(draws[:, 4] < px, -1.0, 1.0).to(draws)
    flip_y = torch.where(draws[:, 5] < py, -1.0, 1.0).to(draws)

    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation of pixel coordinates expressed on normalised ones: diag(1/W, 1/H) R diag(W, H)
    aspect = 1.0 if spatial_size is None else float(spatial_size[1]) / float(spatial_size[0])
    rot = torch.stack([torch.stack([cos, -sin / aspect], -1), torch.stack([sin * aspect, cos], -1)], -2)
    lin = rot * torch.stack([flip_x, flip_y], -1)[:, None, :] / scale[:, None, None]
    theta = torch.cat([lin, torch.stack([shift_x, shift_y], -1)[..., None]], dim=-1)
    return theta.to(dtype)


def warp(
    images: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """
    Resample ``images`` with the affine matrices ``theta`` (``align_corners=False``).

    Args:
        images: ``(B, C, H, W)``.
        theta: ``(B, 2, 3)``, see :func:`sample_affine`.
        mode: interpolation mode of ``F.grid_sample`` (``"bilinear"``, ``"nearest"``, ``"bicubic"``).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        the warped images, ``(B, C, H, W)``.
    """
    if images.ndim != 4 or theta.shape != (images.shape[0], 2, 3):
        raise ValueError(f"expected images (B, C, H, W) and theta (B, 2, 3), got {images.shape}, {theta.shape}.")
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def _apply_mask(images: torch.Tensor, augmented: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    return torch.where(apply.view(-1, *([1] * (images.ndim - 1))), augmented, images)


def rand_gamma(
    images: torch.Tensor,
    prob: float = 0.5,
    gamma_range: Sequence[float] = (0.7, 1.5),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Random gamma correction per image, keeping each image's intensity range:
    ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma``.

    Args:
        images: ``(B, C, *spatial)``.
        prob: probability of applying it to each image.
        gamma_range: ``(min, max)`` of the gamma, drawn uniformly.
        generator: optional ``torch.Generator``.

    Returns:
        a tensor of the same shape as ``images``.
    """
    b = images.shape[0]
    apply = _rand((b,), generator, images.device) < prob
    gamma = _uniform(b, gamma_range[0], gamma_range[1], generator, images.device, images.dtype)
    flat = images.reshape(b, -1)
    lo = flat.amin(dim=1).view(-1, *([1] * (images.ndim - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (images.ndim - 1)))
    span = (hi - lo).clamp_min(1e-7)
    out = lo + span * ((images - lo) / span).clamp(0, 1) ** gamma.view_as(lo)
    return _apply_mask(images, out, apply)


def rand_contrast(
    images: torch.Tensor,
    prob: float = 0.5,
    factor_range: Sequence[float] = (0.75, 1.25),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Random contrast change per image around its mean: ``(x - mean) * factor + mean``.

    Args:
        images: ``(B, C, *spatial)``.
        prob: probability of applying it to each image.
        factor_range: ``(min, max)`` of the contrast factor, drawn uniformly.
        generator: optional ``torch.Generator``.

    Returns:
        a tensor of the same shape as ``images``.
    """
    b = images.shape[0]
    apply = _rand((b,), generator, images.device) < prob
    factor = _uniform(b, factor_range[0], factor_range[1], generator, images.device, images.dtype)
    shape = (-1, *([1] * (images.ndim - 1)))
    mean = images.reshape(b, -1).mean(dim=1).view(shape)
    out = (images - mean) * factor.view(shape) + mean
    return _apply_mask(images, out, apply)


def rand_gaussian_noise(
    images: torch.Tensor,
    prob: float = 0.5,
    std_range: Sequence[float] = (0.0, 0.05),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Add zero-mean Gaussian noise per image, its standard deviation drawn from ``std_range``.

    The noise is drawn on the generator's device; pass a generator on the images' device to avoid a
    host-to-device copy of a full-size tensor.

    Args:
        images: ``(B, C, *spatial)``.
        prob: probability of applying it to each image.
        std_range: ``(min, max)`` of the noise standard deviation (in intensity units).
        generator: optional ``torch.Generator``.

    Returns:
        a tensor of the same shape as ``images``.
    """
    b = images.shape[0]
    apply = _rand((b,), generator, images.device) < prob
    std = _uniform(b, std_range[0], std_range[1], generator, images.device, images.dtype)
    draw_device = generator.device if generator is not None else images.device
    noise = torch.randn(images.shape, generator=generator, device=draw_device, dtype=images.dtype)
    out = images + noise.to(images.device) * std.view(-1, *([1] * (images.ndim - 1)))
    return _apply_mask(images, out, apply)


def rand_gaussian_blur(
    images: torch.Tensor,
    prob: float = 0.5,
    sigma_range: Sequence[float] = (0.5, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Separable Gaussian blur per image, its sigma (in pixels) drawn from ``sigma_range``.

    All images share one kernel support (``3 * max(sigma_range)``) and are filtered in a single
    grouped convolution; images that are not blurred get a unit impulse kernel.

    Args:
        images: ``(B, C, H, W)``.
        prob: probability of applying it to each image.
        sigma_range: ``(min, max)`` of the standard deviation in pixels; must be positive.
        generator: optional ``torch.Generator``.

    Returns:
        a tensor of the same shape as ``images``.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got {tuple(images.shape)}.")
    if min(sigma_range) <= 0:
        raise ValueError(f"sigma_range must be positive, got {sigma_range}.")
    b, c, h, w = images.shape
    apply = _rand((b,), generator, images.device) < prob
    sigma = _uniform(b, sigma_range[0], sigma_range[1], generator, images.device, images.dtype)
    radius = max(1, math.ceil(3 * max(sigma_range)))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    impulse = (x == 0).to(images.dtype).expand_as(kernel)
    kernel = torch.where(apply[:, None], kernel, impulse)  # (B, K)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B * C, K): one group per (image, channel)

    pad_mode = "reflect" if radius < min(h, w) else "replicate"
    out = images.reshape(1, b * c, h, w)
    out = F.pad(out, (0, 0, radius, radius), mode=pad_mode)
    out = F.conv2d(out, kernel[:, None, :, None], groups=b * c)
    out = F.pad(out, (radius, radius, 0, 0), mode=pad_mode)
    out = F.conv2d(out, kernel[:, None, None, :], groups=b * c)
    return out.reshape(b, c, h, w)


class TwoViewAugment(nn.Module):
    """
    Produce two independently augmented views of a batch, with their geometry.

    For each view separately: a random affine (rotation, zoom, translation, flips; see
    :func:`sample_affine`) is sampled and applied with :func:`warp`, then random intensity changes
    (gamma, contrast, Gaussian blur, Gaussian noise) are applied, each with its own probability.
    The returned matrices locate every view pixel in the original image, which is what
    :func:`custom.pretraining.correspondence.match_grid` needs.

    Args:
        rotation_range: see :func:`sample_affine` (radians).
        scale_range: see :func:`sample_affine`.
        translate_range: see :func:`sample_affine` (normalised coordinates).
        flip_prob: see :func:`sample_affine`.
        spatial: if ``False``, no geometric augmentation: views are not resampled and the matrices
            are identities (only intensity augmentation differs between the views).
        gamma_prob, gamma_range: see :func:`rand_gamma`.
        contrast_prob, contrast_range: see :func:`rand_contrast`.
        blur_prob, blur_sigma_range: see :func:`rand_gaussian_blur`.
        noise_prob, noise_std_range: see :func:`rand_gaussian_noise`.
        mode: interpolation mode of :func:`warp`.
        padding_mode: padding mode of :func:`warp`.

    Example::

        augment = TwoViewAugment(rotation_range=0.3, scale_range=(0.8, 1.2))
        view_q, view_k, theta_q, theta_k = augment(images, generator=torch.Generator().manual_seed(0))
    """

    def __init__(
        self,
        rotation_range: float | Sequence[float] = math.pi / 12,
        scale_range: Sequence[float] = (0.85, 1.15),
        translate_range: float | Sequence[float] = 0.1,
        flip_prob: float | Sequence[float] = 0.5,
        spatial: bool = True,
        gamma_prob: float = 0.5,
        gamma_range: Sequence[float] = (0.7, 1.5),
        contrast_prob: float = 0.5,
        contrast_range: Sequence[float] = (0.75, 1.25),
        blur_prob: float = 0.3,
        blur_sigma_range: Sequence[float] = (0.5, 1.0),
        noise_prob: float = 0.3,
        noise_std_range: Sequence[float] = (0.0, 0.05),
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.rotation_range = rotation_range
        self.scale_range = scale_range
        self.translate_range = translate_range
        self.flip_prob = flip_prob
        self.spatial = spatial
        self.gamma_prob, self.gamma_range = gamma_prob, gamma_range
        self.contrast_prob, self.contrast_range = contrast_prob, contrast_range
        self.blur_prob, self.blur_sigma_range = blur_prob, blur_sigma_range
        self.noise_prob, self.noise_std_range = noise_prob, noise_std_range
        self.mode = mode
        self.padding_mode = padding_mode

    def _one_view(
        self, images: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        if self.spatial:
            theta = sample_affine(
                b,
                rotation_range=self.rotation_range,
                scale_range=self.scale_range,
                translate_range=self.translate_range,
                flip_prob=self.flip_prob,
                generator=generator,
                spatial_size=images.shape[-2:],
                device=images.device,
                dtype=images.dtype,
            )
            view = warp(images, theta, mode=self.mode, padding_mode=self.padding_mode)
        else:
            theta = torch.eye(2, 3, device=images.device, dtype=images.dtype).expand(b, 2, 3).clone()
            view = images
        if self.gamma_prob > 0:
            view = rand_gamma(view, self.gamma_prob, self.gamma_range, generator)
        if self.contrast_prob > 0:
            view = rand_contrast(view, self.contrast_prob, self.contrast_range, generator)
        if self.blur_prob > 0:
            view = rand_gaussian_blur(view, self.blur_prob, self.blur_sigma_range, generator)
        if self.noise_prob > 0:
            view = rand_gaussian_noise(view, self.noise_prob, self.noise_std_range, generator)
        return view, theta

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            images: ``(B, C, H, W)`` batch, intensities roughly in ``[0, 1]``.
            generator: optional ``torch.Generator`` making both views reproducible.

        Returns:
            ``(view_q, view_k, theta_q, theta_k)``: two ``(B, C, H, W)`` views and their
            ``(B, 2, 3)`` matrices (view coordinates -> original image coordinates).
        """
        if images.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got {tuple(images.shape)}.")
        view_q, theta_q = self._one_view(images, generator)
        view_k, theta_k = self._one_view(images, generator)
        return view_q, view_k, theta_q, theta_k
