"""IDEAL's fine-tuning network (paper Fig. 2b): one shared encoder, two U-Net decoders that differ.

Decoder 1 upsamples with trainable transposed convolutions, decoder 2 with a 1x1 convolution followed by bilinear
interpolation, and they are initialised with different schemes (Kaiming normal vs Xavier uniform: different
variances, not only different distributions), so their predictions disagree where the model is uncertain, which is
what cross pseudo-label supervision feeds on. As in MONAI's ``FlexibleUNet``, each up-sampling step halves the
channels before the skip is concatenated (``halve_upsampling``), so the first up-block of a ResNet-50 is a
2048->1024 map rather than a 2048->2048 one; the 1x1 output heads keep PyTorch's default (small) initialisation so
that neither decoder starts confidently wrong.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from custom.networks.encoder import ENCODER_CHANNELS, build_encoder

__all__ = ["UNetDecoder", "DualDecoderUNet", "OUTPUT_MODES", "INIT_SCHEMES"]

#: what :class:`DualDecoderUNet` returns
OUTPUT_MODES = ("logits", "ensemble", "decoder1", "decoder2", "probs")
#: initialisation schemes of the decoders' convolutions
INIT_SCHEMES = ("kaiming_normal", "kaiming_uniform", "xavier_uniform")


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _UpBlock(nn.Module):
    """x2 upsampling, concatenation with the skip feature (if any), two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, upsample: str,
                 up_channels: int | None = None) -> None:
        super().__init__()
        up_channels = up_channels or in_channels
        if upsample == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, up_channels, kernel_size=2, stride=2)
        elif upsample == "bilinear" and up_channels != in_channels:
            self.up = nn.Sequential(  # channel reduction at the low resolution, as FlexibleUNet's "nontrainable"
                nn.Conv2d(in_channels, up_channels, 1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            )
        elif upsample == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, in_channels, 3, padding=1),
            )
        else:
            raise ValueError(f"upsample must be 'transpose' or 'bilinear', got {upsample!r}")
        self.conv = _conv_block(up_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv(x)


class UNetDecoder(nn.Module):
    """A U-Net decoder over the 5 ResNet feature maps (strides 2..32), back to the input resolution.

    Args:
        encoder_channels: channels of the encoder maps, shallowest first.
        decoder_channels: output channels of the 5 up-blocks (stride 16, 8, 4, 2, 1).
        out_channels: number of classes.
        upsample: ``"transpose"`` (ConvTranspose2d) or ``"bilinear"`` (1x1 conv + interpolation when halving,
            else interpolation + 3x3 conv).
        init: scheme of the hidden convolutions, one of :data:`INIT_SCHEMES`.
        halve_upsampling: up-sampling steps with a skip halve the channels (FlexibleUNet's ``halves``); False keeps
            the full width (the previous decoder: 54 M parameters for ResNet-50).
        head_init: ``"default"`` (PyTorch's, small logits at the start) or ``"same"`` (the hidden scheme).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        out_channels: int = 4,
        upsample: str = "transpose",
        init: str = "kaiming_normal",
        halve_upsampling: bool = True,
        head_init: str = "default",
    ) -> None:
        super().__init__()
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError("expected 5 encoder and 5 decoder channel counts")
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}")
        if head_init not in ("default", "same"):
            raise ValueError(f"head_init must be 'default' or 'same', got {head_init!r}")
        skips = list(encoder_channels[:4][::-1]) + [0]  # stride 16, 8, 4, 2 skips, none at full resolution
        in_ch = [encoder_channels[4]] + list(decoder_channels[:4])
        up_ch = [i // 2 if halve_upsampling and s else i for i, s in zip(in_ch, skips)]
        self.blocks = nn.ModuleList(
            _UpBlock(i, s, o, upsample, u) for i, s, o, u in zip(in_ch, skips, decoder_channels, up_ch)
        )
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, kernel_size=1)
        self._init_weights(init, include_head=head_init == "same")

    def _init_weights(self, init: str, include_head: bool) -> None:
        fill = {
            "kaiming_normal": lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
            "kaiming_uniform": lambda w: nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"),
            "xavier_uniform": nn.init.xavier_uniform_,
        }[init]
        for m in self.modules():
            if m is self.head and not include_head:
                continue
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fill(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        """features: 5 maps (B, C_i, H/2^(i+1), W/2^(i+1)) -> logits (B, out_channels, H, W)."""
        x = features[4]
        for i, block in enumerate(self.blocks):  # skips at stride 16, 8, 4, 2, none at full resolution
            skip: Optional[torch.Tensor] = features[3 - i] if i < 4 else None
            x = block(x, skip)
        return self.head(x)


class DualDecoderUNet(nn.Module):
    """Shared ResNet encoder + decoder 1 (ConvTranspose, Kaiming normal) + decoder 2 (bilinear, Xavier uniform).

    Args:
        backbone: ``resnet18``, ``resnet34`` or ``resnet50`` (paper), see :func:`build_encoder`.
        in_channels: input channels (1 for MRI).
        out_channels: classes including background (4 for ACDC, 8 for MMWHS).
        decoder_channels: channels of the 5 decoder stages.
        output: what ``forward`` returns for x (B, in_channels, H, W), H and W divisible by 32:

            - ``"logits"``: tuple (logits1, logits2), each (B, out_channels, H, W), for training;
            - ``"ensemble"``: mean of both decoders' activations (B, out_channels, H, W), for inference;
            - ``"decoder1"`` / ``"decoder2"``: one decoder's activation;
            - ``"probs"``: both activations concatenated (B, 2 * out_channels, H, W), for disagreement maps.
        activation: ``"softmax"`` (mutually exclusive classes) or ``"sigmoid"`` (the paper's per-channel mode).
        decoder_inits: initialisation schemes of decoder 1 and decoder 2 (:data:`INIT_SCHEMES`).
        halve_upsampling: FlexibleUNet-style channel halving in the up-sampling steps (see :class:`UNetDecoder`).
        head_init: ``"default"`` or ``"same"``, see :class:`UNetDecoder`.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        in_channels: int = 1,
        out_channels: int = 4,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        output: str = "logits",
        activation: str = "softmax",
        decoder_inits: Sequence[str] = ("kaiming_normal", "xavier_uniform"),
        halve_upsampling: bool = True,
        head_init: str = "default",
    ) -> None:
        super().__init__()
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.output, self.activation = output, activation
        self.encoder = build_encoder(backbone, in_channels=in_channels, spatial_dims=2)
        channels = ENCODER_CHANNELS[backbone]
        init1, init2 = decoder_inits
        self.decoder1 = UNetDecoder(channels, decoder_channels, out_channels, "transpose", init1, halve_upsampling, head_init)
        self.decoder2 = UNetDecoder(channels, decoder_channels, out_channels, "bilinear", init2, halve_upsampling, head_init)

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1) if self.activation == "softmax" else torch.sigmoid(logits)

    def forward_logits(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channel(s), got input of shape {x.shape}")
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"spatial size must be divisible by 32, got {x.shape[-2:]}")
        features = self.encoder(x)
        return self.decoder1(features), self.decoder2(features)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        logits1, logits2 = self.forward_logits(x)
        if self.output == "logits":
            return logits1, logits2
        if self.output == "decoder1":
            return self.activate(logits1)
        if self.output == "decoder2":
            return self.activate(logits2)
        p1, p2 = self.activate(logits1.float()), self.activate(logits2.float())
        return (p1 + p2) / 2 if self.output == "ensemble" else torch.cat([p1, p2], dim=1)


class DecoderOutput(nn.Module):
    """A view of a :class:`DualDecoderUNet` with another output mode, sharing its parameters.

    Lets the validation evaluator run the training network as an ensemble without copying it; it has no
    state of its own, so checkpoints keep saving the wrapped network.
    """

    def __init__(self, network: DualDecoderUNet, output: str = "ensemble") -> None:
        super().__init__()
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        self.network, self.output = network, output

    def forward(self, x: torch.Tensor):
        saved = self.network.output
        self.network.output = self.output
        try:
            return self.network(x)
        finally:
            self.network.output = saved


__all__.append("DecoderOutput")
