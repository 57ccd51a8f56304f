"""The quick start's closing advice states the cost of a real-ACDC run for the CPU it runs on."""

import custom.engines.precision as precision
from custom.quickstart import real_acdc_duration


def test_real_acdc_duration_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    with_bf16 = real_acdc_duration()
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    without = real_acdc_duration()
    assert "bf16" in with_bf16 and "6-16 min" in with_bf16
    assert "fp32" in without and "65 min" in without
