# Copyright (c) IDEAL on MONAI contributors.
# Licensed under the Apache License, Version 2.0.
"""Projection heads used during contrastive pre-training (IDEAL, Sections 2.1-2.2)."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers import Conv

__all__ = ["DenseProjectionHead", "GlobalProjectionHead"]


class DenseProjectionHead(nn.Module):
    """
    Dense (per-location) projection head: ``conv1x1 -> ReLU -> conv1x1``.

    It projects every cell of an encoder feature map to an embedding, keeping the spatial grid, so
    that a dense local contrastive loss can compare cells between two views. There is no pooling;
    the output is not normalised (the loss normalises over the channel dimension).

    Args:
        in_channels: number of channels of the input feature map.
        hidden_channels: width of the hidden 1x1 convolution.
        out_channels: embedding dimension ``D``.
        spatial_dims: number of spatial dimensions of the feature map.

    Shape:
        - input: ``(B, in_channels, *spatial)``, e.g. ``(B, C, h, w)``.
        - output: ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self, in_channels: int, hidden_channels: int = 512, out_channels: int = 128, spatial_dims: int = 2
    ) -> None:
        super().__init__()
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.net = nn.Sequential(
            conv_type(in_channels, hidden_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            conv_type(hidden_channels, out_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: feature map of shape ``(B, in_channels, *spatial)``.

        Returns:
            dense embeddings of shape ``(B, out_channels, *spatial)``.
        """
        return self.net(x)


class GlobalProjectionHead(nn.Module):
    """
    Global projection head: global average pooling followed by ``Linear -> ReLU -> Linear``
    (the SimCLR-style MLP used with the global InfoNCE loss, IDEAL eq. 1).

    Args:
        in_channels: number of channels of the input feature map.
        hidden_channels: width of the hidden linear layer.
        out_channels: embedding dimension ``D``.

    Shape:
        - input: ``(B, in_channels, *spatial)`` (any number of spatial dimensions) or already pooled
          ``(B, in_channels)``.
        - output: ``(B, out_channels)`` (not normalised).
    """

    def __init__(self, in_channels: int, hidden_channels: int = 512, out_channels: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden_channels),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: feature map of shape ``(B, in_channels, *spatial)`` or pooled features ``(B, in_channels)``.

        Returns:
            global embeddings of shape ``(B, out_channels)``.
        """
        if x.ndim > 2:
            x = x.flatten(2).mean(dim=2)
        return self.mlp(x)
