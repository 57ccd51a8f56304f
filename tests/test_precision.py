"""What precision and memory format the trainers pick for a device."""

import pytest
import torch

from custom.engines import precision
from custom.engines.precision import prefers_channels_last, resolve_precision


@pytest.mark.parametrize("native_bf16, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_uses_bf16_only_on_cpus_that_have_it(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native_bf16)
    assert resolve_precision("cpu", "auto") is expected
    assert resolve_precision("cpu", "fp32") is None
    assert resolve_precision("cpu", "bf16") is torch.bfloat16


def test_bad_precisions_are_rejected():
    with pytest.raises(ValueError, match="fp16 autocast is not supported on CPU"):
        resolve_precision("cpu", "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("cpu", "half")


@pytest.mark.parametrize(
    "device, requested, native_bf16, expected",
    [
        ("cpu", "auto", False, False),  # fp32 on a CPU: channels-last is slower for the dual decoder
        ("cpu", "fp32", True, False),
        ("cpu", "auto", True, True),  # bf16 on a CPU with AMX / AVX-512-BF16
        ("cpu", "bf16", False, True),
        ("cuda:0", "fp32", False, True),
    ],
)
def test_channels_last_follows_device_and_precision(monkeypatch, device, requested, native_bf16, expected):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native_bf16)
    assert prefers_channels_last(device, requested) is expected
