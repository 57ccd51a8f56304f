"""Mixed precision that picks what the device can actually do fast.

``"auto"``: bf16 on CUDA devices that support it, else fp16; bf16 on CPUs with native bf16 arithmetic
(AMX or AVX-512-BF16), else fp32 (bf16 autocast is emulated, hence slower, on other CPUs).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch

__all__ = [
    "PRECISIONS",
    "cpu_has_native_bf16",
    "resolve_precision",
    "precision_name",
    "prefers_channels_last",
    "autocast",
    "make_grad_scaler",
    "backward_and_step",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device`` (None means fp32, no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device_type = torch.device(device).type
    if precision == "fp32":
        return None
    if precision == "auto":
        if device_type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device_type == "cpu" and cpu_has_native_bf16() else None
    if precision == "fp16" and device_type == "cpu":
        raise ValueError("fp16 autocast is not supported on CPU; use 'bf16' or 'auto'")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def precision_name(device: torch.device | str, precision: str = "auto") -> str:
    """What ``precision`` resolves to on ``device``, for people: ``"bf16"``, ``"fp16"`` or ``"fp32"``."""
    dtype = resolve_precision(device, precision)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def prefers_channels_last(device: torch.device | str, precision: str = "auto") -> bool:
    """
    Whether the dual-decoder U-Net trains faster in channels-last memory format on ``device`` with ``precision``:
    on CUDA (tensor cores) and with bf16 on the CPU, yes; in fp32 on the CPU, no: measured on a 2-core AVX2 CPU
    (ResNet-50, 128 px, batch 8 + 8), channels-last made the fine-tuning step ~9 % slower, because oneDNN's
    channels-last weight gradients of the wide decoder convolutions are slower and are copied into the
    parameters' layout every step (``benchmarks/README.md``).
    """
    if torch.device(device).type == "cuda":
        return True
    return resolve_precision(device, precision) is not None


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for ``device`` when ``dtype`` is set, a no-op otherwise."""
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield


def make_grad_scaler(device: torch.device | str, dtype: torch.dtype | None) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast on CUDA (bf16 and fp32 need none)."""
    return torch.amp.GradScaler("cuda") if dtype == torch.float16 and torch.device(device).type == "cuda" else None


def backward_and_step(engine, loss: torch.Tensor, grad_scaler: torch.amp.GradScaler | None = None) -> None:
    """Backward pass and optimiser step of a MONAI trainer, firing its BACKWARD_COMPLETED and MODEL_COMPLETED events."""
    from monai.engines.utils import IterationEvents

    if grad_scaler is not None:
        grad_scaler.scale(loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        grad_scaler.step(engine.optimizer)
        grad_scaler.update()
    else:
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
    engine.fire_event(IterationEvents.MODEL_COMPLETED)
