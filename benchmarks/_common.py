"""Shared helpers of the benchmark scripts: machine report, timing, markdown tables, common CLI options.

Not a benchmark itself. The scripts are run as ``python benchmarks/<name>.py``, which puts this folder on
``sys.path``; they also put the repository root there, so ``custom`` imports without an installed package.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

FINETUNE_CONFIGS = REPO / "bundles" / "ideal_finetune" / "configs"
PRETRAIN_CONFIGS = REPO / "bundles" / "ideal_pretrain" / "configs"

#: prefix of the one line every script prints last, with its headline ratio (the smoke test looks for it)
HEADLINE = "Headline:"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    """The SIMD level of the CPU, from /proc/cpuinfo flags (AMX / AVX-512 / AVX2 / ...)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    found = [name for name in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if name in flags]
    return ", ".join(found) if found else "none of amx_bf16/avx512_bf16/avx512f/avx2"


def resolve_device(name: str | None) -> torch.device:
    """``--device``: the given device, else CUDA when available (as the bundles choose), else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def machine_rows(device: torch.device) -> list[tuple[str, str]]:
    """(property, value) pairs describing where the numbers come from."""
    from custom.engines.precision import cpu_has_native_bf16, resolve_precision

    rows = [
        ("CPU", f"{cpu_model()} ({os.cpu_count()} logical cores; {cpu_flags()})"),
        ("torch threads", f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"),
        ("torch", torch.__version__),
        ("python", platform.python_version()),
        ("native CPU bf16 (cpu_has_native_bf16)", str(cpu_has_native_bf16())),
        ("device", str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")),
        ("precision 'auto' resolves to", str(resolve_precision(device, "auto") or "fp32 (no autocast)")),
    ]
    try:
        import monai

        rows.insert(3, ("monai", monai.__version__))
    except ImportError:
        pass
    return rows


def print_machine(device: torch.device) -> None:
    print("## Machine\n")
    print(markdown_table(("property", "value"), machine_rows(device)))
    print()


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def now(device: torch.device | None = None) -> float:
    """``time.perf_counter()`` after the device's queued work has finished (CUDA is asynchronous)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def timed(fn: Callable[[], Any], device: torch.device | None = None) -> tuple[float, Any]:
    start = now(device)
    out = fn()
    return now(device) - start, out


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_s(seconds: float) -> str:
    """Seconds with 3 significant digits."""
    return f"{seconds:.3g}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x"


def headline(text: str) -> None:
    print(f"\n{HEADLINE} {text}", flush=True)


def base_parser(
    description: str, iterations: int, warmup: int, sizes: Sequence[int] = (128, 192), **defaults: Any
) -> argparse.ArgumentParser:
    """Options every script has. Options are declared with ``default=None`` and filled by :func:`finish_args`
    from ``defaults`` (script-specific ones passed here as keywords) or, with ``--quick``, from the quick values."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke-test sizes (resnet18, 64 px, 2 iterations, 1 warm-up; seconds, meaningless "
                        "timings); options given explicitly still win")
    p.add_argument("--size", type=int, nargs="+", default=None, help=f"in-plane sizes (default {list(sizes)})")
    p.add_argument("--iterations", type=int, default=None, help=f"timed iterations per size (default {iterations})")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed warm-up iterations per size (default {warmup})")
    p.add_argument("--backbone", default=None, help="resnet18 | resnet34 | resnet50 (default resnet50)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default=None, help="cpu | cuda:0 (default: CUDA when available, as the bundles)")
    p.set_defaults(_defaults=dict(size=list(sizes), iterations=iterations, warmup=warmup, backbone="resnet50",
                                  **defaults))
    return p


def add_bundle_overrides(p: argparse.ArgumentParser) -> None:
    """Options of the two training-step scripts that override the bundle config (defaults: the config's)."""
    p.add_argument("--precision", default=None, help="override the config's precision (auto | fp32 | bf16 | fp16)")
    p.add_argument("--channels-last", default=None, choices=["true", "false"],
                   help="override the config's channels_last")
    p.add_argument("--dataset-dir", default=None, help="override dataset_dir (default: the built-in synthetic data)")
    p.add_argument("--datalist", default=None, help="override datalist")


def bundle_overrides(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, Any]:
    """Config overrides from the options in ``keys`` that were given, plus ``--channels-last`` as a bool."""
    overrides = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.channels_last is not None:
        overrides["channels_last"] = args.channels_last == "true"
    return overrides


def finish_args(args: argparse.Namespace, **quick: Any) -> argparse.Namespace:
    """Fill the options left unset from the defaults, or with ``--quick`` from the tiny values (the common ones
    plus the script's ``quick`` keywords); apply ``--threads``."""
    values = dict(args._defaults)
    if args.quick:
        values.update({"size": [64], "iterations": 2, "warmup": 1, "backbone": "resnet18", **quick})
    for key, value in values.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    del args._defaults
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.iterations < 1 or args.warmup < 0:
        raise SystemExit("--iterations must be >= 1 and --warmup >= 0")
    return args


def as_plain_tensor(x: Any) -> torch.Tensor:
    """A MetaTensor's plain tensor (no metadata tracking in the hand-written loops)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
