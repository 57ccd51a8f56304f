"""The shared 2D ResNet encoder of both stages, and loading its weights from a pre-training checkpoint."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Mapping

import torch
from monai.networks.nets import ResNetFeatures
from torch import nn

from custom.errors import EncoderLoadError

__all__ = [
    "ENCODER_CHANNELS",
    "build_encoder",
    "encoder_state_dict",
    "load_encoder_weights",
    "initialise_encoder",
    "replace_detached_shortcuts",
    "ZeroPadShortcut",
    "EncoderLoadError",
]

logger = logging.getLogger(__name__)

#: channels of the 5 feature maps (strides 2, 4, 8, 16, 32) returned by ``ResNetFeatures``
ENCODER_CHANNELS: dict[str, tuple[int, ...]] = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "resnet101": (64, 256, 512, 1024, 2048),
}


class ZeroPadShortcut(nn.Module):
    """The type-A ResNet shortcut (strided subsampling, zero channels appended) with gradients flowing through it.

    MONAI's ``ResNet._downsample_basic_block`` (ResNet-18/34) concatenates ``out.data``: that detaches the
    shortcut from autograd and makes a traced TorchScript export bake it in as a constant.
    """

    def __init__(self, planes: int, stride: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.planes, self.stride, self.spatial_dims = planes, stride, spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # explicit slicing per dimensionality: TorchScript cannot script a tuple-built index
        s = self.stride
        if self.spatial_dims == 1:
            out = x[:, :, ::s]
        elif self.spatial_dims == 2:
            out = x[:, :, ::s, ::s]
        else:
            out = x[:, :, ::s, ::s, ::s]
        pad_shape = list(out.shape)
        pad_shape[1] = self.planes - pad_shape[1]
        return torch.cat([out, out.new_zeros(pad_shape)], dim=1)


def replace_detached_shortcuts(encoder: nn.Module, spatial_dims: int = 2) -> int:
    """Swap MONAI's type-A (``functools.partial``) shortcuts for :class:`ZeroPadShortcut`; returns how many."""
    count = 0
    for module in encoder.modules():
        shortcut = getattr(module, "downsample", None)
        if isinstance(shortcut, functools.partial):
            module.downsample = ZeroPadShortcut(shortcut.keywords["planes"], shortcut.keywords["stride"], spatial_dims)
            count += 1
    return count


def build_encoder(backbone: str = "resnet50", in_channels: int = 1, spatial_dims: int = 2) -> ResNetFeatures:
    """A randomly initialised MONAI ``ResNetFeatures`` encoder.

    ``forward(x: (B, in_channels, H, W)) -> list`` of 5 maps with :data:`ENCODER_CHANNELS` channels at
    strides 2, 4, 8, 16, 32. ``pretrained=False`` always: there are no 2D ImageNet weights, IDEAL's
    pre-training provides the initialisation instead. ResNet-18/34 shortcuts are replaced by
    :class:`ZeroPadShortcut` (same outputs, but gradients flow and TorchScript traces are correct).
    """
    if backbone not in ENCODER_CHANNELS:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(ENCODER_CHANNELS)}")
    encoder = ResNetFeatures(backbone, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels)
    replace_detached_shortcuts(encoder, spatial_dims)
    return encoder


def encoder_state_dict(checkpoint: Mapping[str, torch.Tensor], prefixes: tuple[str, ...] = ("encoder.",)) -> dict:
    """The encoder's entries of a state dict, with ``prefixes`` (and a DDP ``module.``) stripped."""
    out = {}
    for key, value in checkpoint.items():
        key = key.removeprefix("module.")
        for prefix in prefixes:
            if key.startswith(prefix):
                out[key[len(prefix) :]] = value
                break
    return out


def load_encoder_weights(encoder: nn.Module, path: str | Path, key: str | None = None) -> list[str]:
    """Copy the encoder weights of a checkpoint into ``encoder`` and return the loaded parameter names.

    ``path`` may hold a plain state dict of a whole network (entries ``encoder.*``), of the encoder itself,
    or a dict of several objects (e.g. a MONAI ``CheckpointSaver`` file) from which ``key`` (or the first of
    ``encoder``, ``network``, ``model``) is taken. Loaded with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        EncoderLoadError: no key matches the encoder, or matching keys have the wrong shapes (another backbone).
    """
    path = Path(path)
    if not path.is_file():
        raise EncoderLoadError(f"{path}: encoder checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EncoderLoadError(f"{path}: not a loadable weights-only checkpoint ({type(e).__name__}: {e})") from None
    if key is not None:
        checkpoint = checkpoint[key]
    elif not any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        for candidate in ("encoder", "network", "model"):
            if candidate in checkpoint:
                checkpoint = checkpoint[candidate]
                break
    target = encoder.state_dict()
    state = encoder_state_dict(checkpoint)
    if not state:  # a bare encoder state dict
        state = {k.removeprefix("module."): v for k, v in checkpoint.items() if k.removeprefix("module.") in target}
    matched = {k: v for k, v in state.items() if k in target}
    if not matched:
        raise EncoderLoadError(f"{path}: no encoder weights found (looked for 'encoder.*' or bare encoder keys)")
    wrong = [f"{k} {tuple(v.shape)} != {tuple(target[k].shape)}" for k, v in matched.items() if v.shape != target[k].shape]
    if wrong:
        raise EncoderLoadError(f"{path}: encoder weights do not fit this backbone (e.g. {wrong[0]}); {len(wrong)} mismatches")
    encoder.load_state_dict(matched, strict=False)
    missing = sorted(set(target) - set(matched))
    logger.info("loaded %d/%d encoder tensors from %s%s", len(matched), len(target), path,
                f"; not in checkpoint: {', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}" if missing else "")
    return sorted(matched)


def initialise_encoder(network: nn.Module, checkpoint: str | Path | None) -> nn.Module:
    """Load ``network.encoder`` from an encoder checkpoint when one is given; returns ``network``.

    For configs: ``network: $initialise_encoder(@network_def, @pretrained_encoder).to(@device)``.
    """
    if checkpoint:
        load_encoder_weights(network.encoder, checkpoint)
    else:
        logger.info("encoder initialised randomly (no pretrained_encoder given)")
    return network
