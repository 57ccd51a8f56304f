"""Seconds per short-axis volume through the real inference bundle vs a plain nibabel + PyTorch loop.

Setup (in a temporary folder): a randomly initialised ``DualDecoderUNet`` saved as ``<bundle_root>/models/model.pt``
and ``warmup + iterations`` synthetic NIfTI volumes of shape ``(256, 216, 10)`` (int16, in-plane spacing
``--spacing`` mm, 10 mm slices; blurred blobs plus noise, distinct per volume).

Bundle side: ``evaluator`` of ``bundles/ideal_finetune/configs/inference.yaml`` built by ``monai.bundle.ConfigParser``
(``bundle_root``, ``input_glob``, ``output_dir``, ``backbone``, ``spatial_size`` overridden; ``test_time_views``
from ``--test-time-views``, default ``none``: one pass per slice as in the plain loop): checked NIfTI loading,
spacing, percentile scaling, crop/pad, ``SliceInferer`` over both decoders (ensemble), inversion onto the input
grid, arg-max and an atomic NIfTI write. Per volume: Ignite ``GET_BATCH_STARTED`` (load + preprocessing happen in
the data loader) -> after the last ``ITERATION_COMPLETED`` handler (inference, postprocessing and saving are done
by then).

Plain side, for the same file and the same weights: ``nibabel`` load, the same 0.5 / 99.5 percentile scaling to
[0, 1], centre crop/pad to ``size``, all slices as one batch through the network in eval mode under ``no_grad``
(fp32), mean of both decoders' softmax, arg-max, un-crop, ``nibabel`` save (``.nii.gz``, uint8).

The two alternate volume by volume. ``ratio plain/bundle > 1`` means the bundle is faster; the issue's target is
at most 1 s per volume on a CPU. The "agree" column is the share of voxels where both segmentations are equal.
With the default ``--spacing 1.5`` (the bundle's ``pixdim``) the bundle's resampling step is a no-op, as the
plain loop has none; pass e.g. ``--spacing 1.25`` to include a real resampling in the bundle's time.

    python benchmarks/inference.py [--quick] [--size 128 192] [--iterations 10] [--backbone resnet50]
                                   [--test-time-views dihedral]
"""

from __future__ import annotations

import gc
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

SHAPE = (256, 216, 10)


def build_parser():
    from custom.inferers import TEST_TIME_VIEWS

    p = C.base_parser(__doc__.split("\n")[0], iterations=10, warmup=2, spacing=1.5)
    p.add_argument("--spacing", type=float, default=None, help="in-plane spacing (mm) of the synthetic volumes (1.5)")
    p.add_argument("--precision", default=None, help="override the config's precision (auto | fp32 | bf16)")
    p.add_argument("--test-time-views", default="none", choices=TEST_TIME_VIEWS,
                   help="the bundle's test_time_views (default none: one pass per slice, as the plain loop; the "
                        "bundle's own default, dihedral, runs 8)")
    return p


def write_volumes(folder: Path, count: int, spacing: float) -> list[Path]:
    """``count`` distinct synthetic (256, 216, 10) int16 volumes: a few smooth bright blobs, a ramp and noise."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    affine = np.diag([spacing, spacing, 10.0, 1.0])
    paths = []
    for i in range(count):
        vol = np.empty(SHAPE, dtype=np.float32)
        for z in range(SHAPE[2]):
            img = 80 + 0.2 * xx
            for _ in range(4):
                cy, cx = rng.uniform(60, 196), rng.uniform(50, 166)
                r = rng.uniform(10, 30)
                img = img + rng.uniform(200, 500) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            vol[..., z] = img + rng.normal(0, 20, img.shape)
        path = folder / f"case{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(np.clip(vol, 0, 32000).astype(np.int16), affine), str(path))
        paths.append(path)
    return paths


def crop_or_pad_slices(size: int, length: int) -> tuple[slice, slice]:
    """``(source, target)`` slices of a centred crop (length > size) or pad (length < size) along one axis."""
    if length >= size:
        start = (length - size) // 2
        return slice(start, start + size), slice(0, size)
    start = (size - length) // 2
    return slice(0, length), slice(start, start + length)


class PlainInference:
    """Hand-written inference: nibabel -> scaling -> crop/pad -> network (batched slices) -> arg-max -> nibabel."""

    def __init__(self, network: torch.nn.Module, size: int, device: torch.device) -> None:
        self.network, self.size, self.device = network.eval(), size, device

    @torch.no_grad()
    def __call__(self, path: Path, out_dir: Path) -> Path:
        import nibabel as nib

        img = nib.load(str(path))
        vol = np.asarray(img.dataobj, dtype=np.float32)  # (H, W, D)
        lo, hi = np.percentile(vol, (0.5, 99.5))
        vol = np.clip((vol - lo) / max(hi - lo, 1e-8), 0.0, 1.0)
        h, w, d = vol.shape
        (sy, ty), (sx, tx) = crop_or_pad_slices(self.size, h), crop_or_pad_slices(self.size, w)
        x = np.zeros((d, 1, self.size, self.size), dtype=np.float32)
        x[:, 0, ty, tx] = vol[sy, sx].transpose(2, 0, 1)
        logits1, logits2 = self.network(torch.from_numpy(x).to(self.device))
        probs = (torch.softmax(logits1.float(), 1) + torch.softmax(logits2.float(), 1)) / 2
        labels = probs.argmax(1).to(torch.uint8).cpu().numpy().transpose(1, 2, 0)  # (size, size, D)
        seg = np.zeros((h, w, d), dtype=np.uint8)  # background outside the crop
        seg[sy, sx] = labels[ty, tx]
        out = out_dir / (path.name.split(".nii")[0] + "_seg.nii.gz")
        nib.save(nib.Nifti1Image(seg, img.affine), str(out))
        return out


def run_size(args, size: int, volumes: list[Path], inputs: Path, root: Path) -> dict:
    import nibabel as nib
    from custom.finetuning.dual_decoder import DualDecoderUNet
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    bundle_root = root / f"bundle_{size}"
    out_bundle, out_plain = root / f"out_bundle_{size}", root / f"out_plain_{size}"
    for folder in (bundle_root / "models", out_bundle, out_plain):
        folder.mkdir(parents=True)
    torch.manual_seed(size)
    weights = DualDecoderUNet(args.backbone, in_channels=1, out_channels=4).state_dict()
    torch.save(weights, bundle_root / "models" / "model.pt")

    parser = ConfigParser()
    parser.read_config(str(C.FINETUNE_CONFIGS / "inference.yaml"))
    overrides = dict(bundle_root=str(bundle_root), output_dir=str(out_bundle), input_glob=str(inputs / "*.nii.gz"),
                     backbone=args.backbone, spatial_size=size, test_time_views=args.test_time_views)
    if args.device:
        overrides["device"] = f"$torch.device('{args.device}')"
    if args.precision:
        overrides["precision"] = args.precision
    parser.update(overrides)
    parser.get_parsed_content("initialize")
    evaluator = parser.get_parsed_content("evaluator")
    device = torch.device(evaluator.state.device)
    datalist = parser.get_parsed_content("datalist")
    if [Path(item["image"]) for item in datalist] != volumes:
        raise RuntimeError("the bundle's datalist is not the benchmark's volumes")

    net = DualDecoderUNet(args.backbone, in_channels=1, out_channels=4, output="logits")
    net.load_state_dict(torch.load(bundle_root / "models" / "model.pt", weights_only=True))
    plain = PlainInference(net.to(device), size, device)

    rec = dict(bundle=[], plain=[])
    mark: dict[str, float] = {}

    def on_get_started(engine):
        mark["start"] = C.now(device)

    def on_iteration_completed(engine):  # registered last: after postprocessing (incl. the NIfTI write)
        rec["bundle"].append(C.now(device) - mark["start"])
        path = volumes[engine.state.iteration - 1]
        rec["plain"].append(C.timed(lambda: plain(path, out_plain), device)[0])  # interleaved plain volume

    evaluator.add_event_handler(Events.GET_BATCH_STARTED, on_get_started)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, on_iteration_completed)
    start = C.now(device)
    evaluator.run()
    run_wall = C.now(device) - start - sum(rec["plain"])
    if len(rec["bundle"]) != len(volumes):
        raise RuntimeError(f"expected {len(volumes)} volumes, got {len(rec['bundle'])}")

    agree = []
    for path in volumes:
        name = path.name.split(".nii")[0] + "_seg.nii.gz"
        a, b = (np.asarray(nib.load(str(folder / name)).dataobj) for folder in (out_bundle, out_plain))
        agree.append(float((a == b).mean()) if a.shape == b.shape else 0.0)

    w = args.warmup
    bundle, plain_s = C.median(rec["bundle"][w:]), C.median(rec["plain"][w:])
    precision = parser.get_parsed_content("precision")
    from custom.engines.precision import resolve_precision

    result = dict(
        size=size,
        precision=str(resolve_precision(device, precision) or "fp32").replace("torch.", ""),
        bundle=bundle,
        run_per_volume=run_wall / len(volumes),
        plain=plain_s,
        ratio=plain_s / bundle,
        agree=min(agree),
    )
    del evaluator, parser, net, plain
    gc.collect()
    return result


def main(argv=None) -> int:
    args = C.finish_args(build_parser().parse_args(argv))
    device = C.resolve_device(args.device)
    C.print_machine(device)
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        root = Path(tmp)
        inputs = root / "inputs"
        inputs.mkdir()
        volumes = write_volumes(inputs, args.warmup + args.iterations, args.spacing)
        results = [run_size(args, size, volumes, inputs, root) for size in args.size]
    print(f"## Inference per {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} volume ({args.backbone}, spacing {args.spacing} mm, "
          f"bundle test_time_views {args.test_time_views}, "
          f"{args.iterations} timed + {args.warmup} warm-up volumes, medians, bundle and plain interleaved)\n")
    rows = [
        (
            r["size"],
            r["precision"],
            C.fmt_s(r["bundle"]),
            C.fmt_s(r["run_per_volume"]),
            C.fmt_s(r["plain"]),
            C.fmt_ratio(r["ratio"]),
            "yes" if r["bundle"] <= 1.0 else "no",
            f"{100 * r['agree']:.2f}%",
        )
        for r in results
    ]
    print(C.markdown_table(
        ("size px", "bundle precision", "bundle s/volume", "bundle run() s/volume (incl. checkpoint load, warm-up)",
         "plain fp32 s/volume", "ratio plain/bundle", "bundle <= 1 s", "agree (min)"),
        rows,
    ))
    C.headline("inference ratio plain/bundle (>1: bundle faster): "
               + ", ".join(f"{r['size']} px {C.fmt_ratio(r['ratio'])} ({C.fmt_s(r['bundle'])} s/volume bundle, "
                           f"{C.fmt_s(r['plain'])} s plain)" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
