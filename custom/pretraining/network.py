# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""IDEAL's pre-training network (paper Fig. 2a): the shared ResNet encoder with a dense and a global projection head."""

from __future__ import annotations

import torch
from torch import nn

from custom.networks.encoder import ENCODER_CHANNELS, build_encoder
from custom.pretraining.heads import DenseProjectionHead, GlobalProjectionHead

__all__ = ["ContrastivePretrainNet", "DenseEmbeddingNet"]

#: output stride of each level of the encoder's feature pyramid
FEATURE_STRIDES: tuple[int, ...] = (2, 4, 8, 16, 32)


class ContrastivePretrainNet(nn.Module):
    """
    Encoder + :class:`DenseProjectionHead` + :class:`GlobalProjectionHead` for global and dense local contrastive
    pre-training (IDEAL Sec. 2.1-2.2, eq. 1 and eq. 2).

    The encoder is built by :func:`custom.networks.encoder.build_encoder` and stored as ``self.encoder``, so its
    state-dict entries are ``encoder.*``, exactly the keys of :class:`custom.finetuning.dual_decoder.DualDecoderUNet`'s
    encoder: the fine-tuning bundle loads them with :func:`custom.networks.encoder.load_encoder_weights`.
    The heads are only used during pre-training.

    Args:
        backbone: ``resnet18``, ``resnet34``, ``resnet50`` (paper) or ``resnet101``.
        in_channels: input channels (1 for MRI).
        dense_channels: dimension ``D`` of the dense (per-cell) embeddings.
        global_channels: dimension of the global (per-image) embedding.
        hidden_channels: width of the hidden layer of both heads.
        feature_level: index of the encoder map the dense head reads, 0..4 for strides 2, 4, 8, 16, 32; the default
            4 is the last map (stride 32); 3 (stride 16) and 2 (stride 8) give finer grids, hence more local
            positives and negatives, at a quadratic cost in the local loss. The global head always pools the last map.

    Shape:
        - input ``x``: ``(B, in_channels, H, W)``, ``H`` and ``W`` divisible by 32.
        - output: ``(dense, global)``, ``(B, dense_channels, H / s, W / s)`` with ``s = 2 ** (feature_level + 1)``,
          and ``(B, global_channels)``; not normalised (the losses normalise). With ``return_features=True`` a
          third item, the encoder map at ``feature_level`` ``(B, C, H / s, W / s)``, for feature-based matching.
    """

    __jit_unused_properties__ = ["stride"]  # Python-side helper; TorchScript cannot read the module-level tuple

    def __init__(
        self,
        backbone: str = "resnet50",
        in_channels: int = 1,
        dense_channels: int = 128,
        global_channels: int = 128,
        hidden_channels: int = 512,
        feature_level: int = 4,
    ) -> None:
        super().__init__()
        if backbone not in ENCODER_CHANNELS:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(ENCODER_CHANNELS)}")
        if not 0 <= feature_level < len(FEATURE_STRIDES):
            raise ValueError(f"feature_level must be in 0..{len(FEATURE_STRIDES) - 1}, got {feature_level}")
        channels = ENCODER_CHANNELS[backbone]
        self.backbone = backbone
        self.feature_level = int(feature_level)
        self.encoder = build_encoder(backbone, in_channels)
        self.dense_head = DenseProjectionHead(channels[feature_level], hidden_channels, dense_channels)
        self.global_head = GlobalProjectionHead(channels[-1], hidden_channels, global_channels)

    @property
    def stride(self) -> int:
        """Output stride of the dense embedding map."""
        return FEATURE_STRIDES[self.feature_level]

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            x: ``(B, in_channels, H, W)`` images.
            return_features: also return the encoder map the dense head reads.

        Returns:
            ``(dense (B, D, h, w), global (B, D_g))`` or ``(dense, global, features (B, C, h, w))``.
        """
        features = self.encoder(x)
        level = features[self.feature_level]
        dense, global_ = self.dense_head(level), self.global_head(features[-1])
        return (dense, global_, level) if return_features else (dense, global_)


class DenseEmbeddingNet(ContrastivePretrainNet):
    """:class:`ContrastivePretrainNet` for inference: one output, the L2-normalised dense embedding map.

    Same parameters and state-dict keys as :class:`ContrastivePretrainNet`, so the pre-training bundle's
    ``models/model.pt`` loads into it as it is (and exports to TorchScript, one tensor out).

    Shape:
        - input ``x``: ``(B, in_channels, H, W)``, ``H`` and ``W`` divisible by 32.
        - output: ``(B, dense_channels, H / s, W / s)``, unit length along the channels.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        features = self.encoder(x)
        return torch.nn.functional.normalize(self.dense_head(features[self.feature_level]).float(), dim=1)
