"""Naive (full similarity matrix) vs chunked (explicit-backward) dense local InfoNCE: peak memory, time, agreement.

For each grid stride (32, 16, 8 at 192 px: grids 6x6, 12x12, 24x24) and each implementation
(``local_infonce_naive`` and ``LocalInfoNCELoss(chunk_size=512)``, both symmetric, temperature 0.1, all
negatives), a fresh Python process builds the same seeded inputs -- two ``(B, D, h, w)`` embedding maps that
require gradients and the geometric correspondence of two random views (``sample_affine`` with the pre-training
bundle's ranges, ``match_grid`` both ways) -- and runs forward + backward:

- peak memory: on CPU the rise of the process's peak resident memory during the first forward + backward over its
  resident size just before it (``VmHWM`` of /proc/self/status, reset first through /proc/self/clear_refs;
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` where that is unavailable); on CUDA
  ``torch.cuda.max_memory_allocated`` over the allocated memory before it. A fresh process per configuration, so
  one configuration's peak cannot hide another's;
- time: median of ``--iterations`` forward + backward passes after ``--warmup`` untimed ones (at least the
  memory-measured one);
- agreement: max |difference| of the loss values and of the gradients w.r.t. both embedding maps.

Headline: naive/chunked peak-memory ratio at the finest stride.

    python benchmarks/dense_loss.py [--quick] [--size 192] [--strides 32 16 8] [--batch 16] [--dim 128]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402

IMPLEMENTATIONS = ("naive", "chunked")


def build_parser():
    p = C.base_parser(__doc__.split("\n")[0], iterations=3, warmup=1, sizes=(192,), strides=[32, 16, 8], batch=16,
                      dim=128, chunk_size=512)
    p.add_argument("--strides", type=int, nargs="+", default=None, help="embedding-grid strides (default 32 16 8)")
    p.add_argument("--batch", type=int, default=None, help="images per view (default 16)")
    p.add_argument("--dim", type=int, default=None, help="embedding dimension D (default 128)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="query cells per chunk of the chunked loss (default 512, the pre-training config's)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--stride", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p


# ----------------------------------------------------------------------------------------------------- child side


def _status_kib(field: str) -> int | None:
    """A ``Vm*`` field of /proc/self/status in KiB (None where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def cpu_memory_probe():
    """``(start, stop)`` callables measuring the rise of the peak resident memory (MiB) of this process.

    Preferred: reset ``VmHWM`` to the current RSS, then read ``VmHWM - VmRSS(before)``. ``ru_maxrss`` alone is
    biased on Linux: a child process starts with the maximum RSS its parent had when it forked, so a small rise
    stays hidden below it. Fallback (no /proc): ``ru_maxrss(after) - RSS(before)``, flagged when the earlier peak
    was never exceeded.
    """
    state: dict = {}

    def start():
        state["hwm"] = reset_peak_rss() and _status_kib("VmHWM") is not None
        state["rss"] = _status_kib("VmRSS") or 0
        state["max"] = peak_rss_kib()

    def stop() -> tuple[float, bool]:
        if state["hwm"]:
            return max(0, _status_kib("VmHWM") - state["rss"]) / 1024, False
        after = peak_rss_kib()
        return max(0, after - state["rss"]) / 1024, after == state["max"]

    return start, stop


def child(args) -> dict:
    """One configuration in this (fresh) process: memory of the first forward + backward, then timings."""
    from custom.pretraining.correspondence import match_grid
    from custom.pretraining.local_infonce import LocalInfoNCELoss, local_infonce_naive
    from custom.pretraining.views import sample_affine

    device = C.resolve_device(args.device)
    if args.child == "naive":
        def loss_fn(*inputs):
            return local_infonce_naive(*inputs, temperature=0.1, symmetric=True)
    else:
        loss_fn = LocalInfoNCELoss(temperature=0.1, chunk_size=args.chunk_size, symmetric=True)

    def make_inputs(batch: int, grid: int, gen: torch.Generator) -> tuple:
        emb_q = torch.randn(batch, args.dim, grid, grid, generator=gen).to(device).requires_grad_()
        emb_k = torch.randn(batch, args.dim, grid, grid, generator=gen).to(device).requires_grad_()
        # two random views with the pre-training bundle's geometric ranges (configs/train.yaml: augment)
        view = dict(rotation_range=0.26, scale_range=(0.85, 1.15), translate_range=0.1, flip_prob=0.5, generator=gen)
        theta_q, theta_k = sample_affine(batch, **view).to(device), sample_affine(batch, **view).to(device)
        coords_k, valid_q = match_grid(theta_q, theta_k, (grid, grid))
        coords_q, valid_k = match_grid(theta_k, theta_q, (grid, grid))
        return emb_q, emb_k, coords_k, valid_q, coords_q, valid_k

    # a tiny untimed pass first: one-time lazy imports and allocator set-up are not the loss's memory
    loss_fn(*make_inputs(2, 2, torch.Generator().manual_seed(1))).backward()

    grid = args.size[0] // args.stride
    torch.manual_seed(0)
    inputs = make_inputs(args.batch, grid, torch.Generator().manual_seed(0))
    emb_q, emb_k, _, valid_q, _, valid_k = inputs

    def step():
        emb_q.grad = emb_k.grad = None
        loss = loss_fn(*inputs)
        loss.backward()
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        loss = step()
        torch.cuda.synchronize(device)
        peak_mib = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        hidden = False
    else:
        start, stop = cpu_memory_probe()
        start()
        loss = step()
        peak_mib, hidden = stop()
    for _ in range(args.warmup - 1):  # the measured pass above was the first warm-up pass
        step()
    times = [C.timed(step, device)[0] for _ in range(args.iterations)]
    torch.save({"loss": loss.cpu(), "grad_q": emb_q.grad.cpu(), "grad_k": emb_k.grad.cpu()}, args.out)
    return dict(
        impl=args.child,
        stride=args.stride,
        grid=grid,
        cells=int(args.batch * grid * grid),
        valid=float((valid_q.float().mean() + valid_k.float().mean()) / 2),
        peak_mib=peak_mib,
        peak_hidden=hidden,
        seconds=C.median(times),
        loss=float(loss),
    )


# ---------------------------------------------------------------------------------------------------- parent side


def run_child(args, impl: str, stride: int, out: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, "--stride", str(stride), "--out", out,
           "--size", str(args.size[0]), "--batch", str(args.batch), "--dim", str(args.dim), "--chunk-size",
           str(args.chunk_size), "--iterations", str(args.iterations), "--warmup", str(max(1, args.warmup))]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.device:
        cmd += ["--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{impl} at stride {stride} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def main(argv=None) -> int:
    args = C.finish_args(build_parser().parse_args(argv), size=[64], strides=[8], batch=2, dim=16, chunk_size=32)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if len(args.size) != 1:
        raise SystemExit("dense_loss.py takes one --size")
    device = C.resolve_device(args.device)
    C.print_machine(device)
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_dense_loss_") as tmp:
        for stride in args.strides:
            out = {impl: os.path.join(tmp, f"{impl}_{stride}.pt") for impl in IMPLEMENTATIONS}
            r = {impl: run_child(args, impl, stride, out[impl]) for impl in IMPLEMENTATIONS}
            saved = {impl: torch.load(out[impl], weights_only=True) for impl in IMPLEMENTATIONS}
            d_loss = max_abs_diff(saved["naive"]["loss"], saved["chunked"]["loss"])
            d_grad = max(max_abs_diff(saved["naive"][k], saved["chunked"][k]) for k in ("grad_q", "grad_k"))
            naive, chunked = r["naive"], r["chunked"]
            mem_ratio = naive["peak_mib"] / chunked["peak_mib"] if chunked["peak_mib"] > 0 else float("nan")
            results[stride] = mem_ratio

            def mem(x):
                return f"{x['peak_mib']:.1f}" + (" (below an earlier peak)" if x["peak_hidden"] else "")

            rows.append((
                stride,
                f"{naive['grid']}x{naive['grid']}",
                naive["cells"],
                f"{100 * naive['valid']:.0f}%",
                mem(naive),
                mem(chunked),
                C.fmt_ratio(mem_ratio),
                C.fmt_s(naive["seconds"]),
                C.fmt_s(chunked["seconds"]),
                C.fmt_ratio(chunked["seconds"] / naive["seconds"]),
                f"{d_loss:.2e}",
                f"{d_grad:.2e}",
            ))
    memory = "peak RSS rise" if device.type == "cpu" else "peak allocated rise"
    print(f"## Dense local InfoNCE, forward + backward ({args.size[0]} px, batch {args.batch} per view, "
          f"D={args.dim}, chunk_size={args.chunk_size}, symmetric; median of {args.iterations} timed passes, "
          "one fresh process per cell of the table)\n")
    print(C.markdown_table(
        ("stride", "grid", "cells per view", "valid cells", f"naive {memory} MiB", f"chunked {memory} MiB",
         "memory naive/chunked", "naive s", "chunked s", "time chunked/naive", "max abs diff loss",
         "max abs diff grad"),
        rows,
    ))
    finest = min(args.strides)
    C.headline(f"dense_loss ratio naive/chunked peak memory at stride {finest}: {C.fmt_ratio(results[finest])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
