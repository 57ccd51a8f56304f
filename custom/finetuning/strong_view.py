"""The strongly perturbed view of a weak-to-strong consistency step (FixMatch, UniMatch), on a batch of tensors.

Pseudo-labels are predicted on the weak view (the unlabeled slices as the data pipeline delivers them) and taught on a
strong view of the same slices: random intensity changes (contrast, brightness, gamma, noise), a Gaussian blur and
CutMix of a box from another slice of the batch. The intensity changes do not move pixels, so the weak pseudo-label
of a pixel is the target of the same pixel of the strong view; CutMix moves the box's content, so the targets are
mixed with the same box (:meth:`CutMixBoxes.mix`).

Random numbers come from torch's global generator on the CPU (so that a checkpoint's RNG state resumes the same
sequence on any device); images are (B, C, H, W) intensities in about [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CutMixBoxes", "StrongView"]


@dataclass
class CutMixBoxes:
    """Per-slice boxes pasted from slice ``source[b]`` (of the same batch, or of another batch) into slice ``b``.

    Attributes:
        source: (B,) index of the slice each box comes from.
        box: (B, 1, H, W) bool, True inside the pasted box (all False for slices without CutMix).
    """

    source: torch.Tensor
    box: torch.Tensor

    def mix(self, x: torch.Tensor, pasted: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the same paste to any per-pixel tensor (B, C, H, W) or (B, H, W): images, logits, masks.

        ``pasted``: the batch the boxes come from when it is not ``x`` itself (e.g. the labeled slices' one-hot
        masks, when boxes of labeled slices were pasted into unlabeled ones)."""
        box = self.box.to(x.device)
        if x.ndim == 3:
            box = box[:, 0]
        elif x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) or (B, H, W), got shape {tuple(x.shape)}")
        source = x if pasted is None else pasted.to(x.device, x.dtype)
        return torch.where(box, source[self.source.to(x.device)], x)


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n)


class StrongView:
    """Random strong perturbation of a batch of slices, returning the perturbed batch and its CutMix boxes.

    Args:
        intensity_prob: per-slice probability of the intensity changes (each slice draws its own factors).
        contrast: contrast factor range ``(1 - c, 1 + c)`` about the slice mean.
        brightness: additive shift range ``(-b, b)``.
        gamma: gamma range ``(1 - g, 1 + g)`` on the [0, 1]-clamped intensities.
        noise_std: maximum std of added Gaussian noise (each slice draws std in ``(0, noise_std)``).
        blur_prob: per-slice probability of a Gaussian blur with sigma in ``blur_sigma`` pixels.
        blur_sigma: (min, max) blur sigma.
        cutmix_prob: per-slice probability of pasting a box from another slice of the batch.
        cutmix_area: (min, max) fraction of the slice area the box covers; aspect ratio in (0.5, 2).

    ``StrongView()(images) -> (strong, boxes)``; ``boxes.mix(t)`` moves any per-pixel tensor like the images.
    ``StrongView()(images, paste_from=labeled)`` pastes the boxes from the slices of ``labeled`` instead (labeled
    content in unlabeled context, as in bidirectional copy-paste, BCP); ``boxes.mix(t, pasted=t_labeled)``.
    """

    def __init__(
        self,
        intensity_prob: float = 0.8,
        contrast: float = 0.3,
        brightness: float = 0.1,
        gamma: float = 0.3,
        noise_std: float = 0.05,
        blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 1.5),
        cutmix_prob: float = 0.5,
        cutmix_area: tuple[float, float] = (0.1, 0.4),
    ) -> None:
        for name, p in (("intensity_prob", intensity_prob), ("blur_prob", blur_prob), ("cutmix_prob", cutmix_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if not 0.0 < cutmix_area[0] <= cutmix_area[1] <= 1.0:
            raise ValueError(f"cutmix_area must satisfy 0 < min <= max <= 1, got {cutmix_area}")
        self.intensity_prob, self.contrast, self.brightness, self.gamma = intensity_prob, contrast, brightness, gamma
        self.noise_std, self.blur_prob, self.blur_sigma = noise_std, blur_prob, tuple(blur_sigma)
        self.cutmix_prob, self.cutmix_area = cutmix_prob, tuple(cutmix_area)

    def __call__(self, images: torch.Tensor, paste_from: torch.Tensor | None = None) -> tuple[torch.Tensor, CutMixBoxes]:
        """images (B, C, H, W) -> strong view (B, C, H, W) (same dtype, device, memory format) and its boxes;
        ``paste_from`` (B', C, H, W): the slices the boxes come from (default: the other slices of ``images``)."""
        if images.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(images.shape)}")
        if paste_from is not None and (paste_from.ndim != 4 or paste_from.shape[1:] != images.shape[1:]):
            raise ValueError(f"paste_from must be (B', C, H, W) like images {tuple(images.shape)}, got {tuple(paste_from.shape)}")
        n_sources = None if paste_from is None else paste_from.shape[0]
        boxes = self.cutmix_boxes(images.shape[0], images.shape[-2], images.shape[-1], n_sources)
        x = self._intensity(images.float())
        x = self._blur(x)
        # after the per-slice changes: a box from the same batch keeps its own slice's look
        x = boxes.mix(x, None if paste_from is None else self._intensity(paste_from.float()))
        strong = x.to(images.dtype)
        if images.is_contiguous(memory_format=torch.channels_last):
            strong = strong.contiguous(memory_format=torch.channels_last)
        return strong, boxes

    def _per_slice(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return values.to(x.device, x.dtype).view(-1, 1, 1, 1)

    def _intensity(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        on = torch.rand(n) < self.intensity_prob
        contrast = torch.where(on, _uniform(n, 1 - self.contrast, 1 + self.contrast), torch.ones(n))
        shift = torch.where(on, _uniform(n, -self.brightness, self.brightness), torch.zeros(n))
        gamma = torch.where(on, _uniform(n, 1 - self.gamma, 1 + self.gamma), torch.ones(n))
        noise = torch.where(on, _uniform(n, 0.0, self.noise_std), torch.zeros(n))
        eps = torch.randn(x.shape)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        y = (x - mean) * self._per_slice(contrast, x) + mean + self._per_slice(shift, x)
        y = y.clamp(min=0.0) ** self._per_slice(gamma, x)
        y = y + self._per_slice(noise, x) * eps.to(x.device, x.dtype)
        return torch.where(self._per_slice(on, x).bool(), y, x)  # slices drawn "off" stay exactly as they were

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        on = torch.rand(n) < self.blur_prob
        sigma = _uniform(n, *self.blur_sigma)
        if not bool(on.any()):
            return x
        radius = max(1, math.ceil(3 * self.blur_sigma[1]))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernels = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
        kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(x.device, x.dtype)  # (B, K)
        b, c, h, w = x.shape
        y = x.reshape(1, b * c, h, w)
        k = kernels.repeat_interleave(c, dim=0)
        y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
        y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
        y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c).reshape(b, c, h, w)
        return torch.where(self._per_slice(on, x).bool(), y, x)

    def cutmix_boxes(self, batch: int, height: int, width: int, num_sources: int | None = None) -> CutMixBoxes:
        """Draw one box per slice (B, 1, H, W) and the slice it is pasted from: another slice of the batch, or with
        ``num_sources`` any slice of another batch of that size."""
        on = torch.rand(batch) < self.cutmix_prob
        area = _uniform(batch, *self.cutmix_area) * height * width
        aspect = torch.exp(_uniform(batch, math.log(0.5), math.log(2.0)))
        bh = (area * aspect).sqrt().clamp(1, height).round().long()
        bw = (area / aspect).sqrt().clamp(1, width).round().long()
        top = (torch.rand(batch) * (height - bh + 1)).long()
        left = (torch.rand(batch) * (width - bw + 1)).long()
        if num_sources is not None:
            source = torch.randint(0, max(num_sources, 1), (batch,))
            possible = num_sources > 0
        else:
            shift = torch.randint(1, batch, (batch,)) if batch > 1 else torch.zeros(batch, dtype=torch.long)
            source = (torch.arange(batch) + shift) % max(batch, 1)  # never the slice itself when batch > 1
            possible = batch > 1
        rows, cols = torch.arange(height)[None, :, None], torch.arange(width)[None, None, :]
        box = ((rows >= top[:, None, None]) & (rows < (top + bh)[:, None, None])
               & (cols >= left[:, None, None]) & (cols < (left + bw)[:, None, None]))
        box &= (on & possible)[:, None, None]
        return CutMixBoxes(source=source, box=box[:, None])
