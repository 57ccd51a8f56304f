"""Mixed precision that picks what the device can actually do fast.

``"auto"``: bf16 on CUDA devices that support it, else fp16; bf16 on CPUs with native bf16 arithmetic
(AMX or AVX-512-BF16), else fp32 (bf16 autocast is emulated, hence slower, on other CPUs).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import torch

__all__ = ["PRECISIONS", "cpu_has_native_bf16", "resolve_precision", "autocast"]

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


@contextlib.contextmanager
def autocast(device: torch.device | str, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` for ``device`` when ``dtype`` is set, a no-op otherwise."""
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield
