"""Pre-training bundle's real training iteration vs a minimal hand-written fp32 PyTorch loop.

The bundle side is ``train#trainer`` of ``bundles/ideal_pretrain/configs/train.yaml``, built by
``monai.bundle.ConfigParser`` with the sizes overridden: the real ``ContrastivePretrainTrainer`` (two views made on
the device, geometric cell correspondence, global + chunked dense local InfoNCE) with its data loader, handlers,
precision and channels-last settings. Per iteration it records the batch wait (Ignite ``GET_BATCH_STARTED`` ->
``GET_BATCH_COMPLETED``) and the total (``GET_BATCH_STARTED`` -> after the last ``ITERATION_COMPLETED`` handler).

The plain side: the same ``ContrastivePretrainNet`` (same initial weights) and the same loss objects
(``global_loss``, ``local_loss`` of the config) and view augmentation (``augment``), one batch taken from the
bundle's loader once and kept in memory; per iteration: two views, ``match_grid`` both ways, ``w_global * L_global +
w_local * L_local``, Adam. fp32, no channels_last, no autocast, no handlers.

The two alternate iteration by iteration, so drifting machine load hits both alike; ratios come from one run.
``ratio plain/bundle > 1`` means the bundle iteration is faster.

    python benchmarks/pretrain_step.py [--quick] [--size 128 192] [--iterations 10] [--backbone resnet50]
"""

from __future__ import annotations

import gc
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402


def build_parser():
    p = C.base_parser(__doc__.split("\n")[0], iterations=10, warmup=2)
    p.add_argument("--batch-size", type=int, default=None,
                   help="slices per iteration, 2 views each (default: the config's)")
    p.add_argument("--feature-level", type=int, default=None, help="override feature_level (4: stride 32, 3: 16, 2: 8)")
    C.add_bundle_overrides(p)
    return p


def bundle_trainer(args, size: int, root: str):
    """``train#trainer`` of the pre-training bundle, sized for ``warmup + iterations`` iterations in one epoch."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(C.PRETRAIN_CONFIGS / "train.yaml"))
    total = args.warmup + args.iterations
    overrides = dict(
        bundle_root=root,
        backbone=args.backbone,
        spatial_size=size,
        max_iterations=total,
        epoch_length=total,  # one epoch: no epoch boundary (and no weight saving) inside the timed iterations
    )
    if args.device:
        overrides["device"] = f"$torch.device('{args.device}')"
    overrides.update(C.bundle_overrides(args, ("batch_size", "feature_level", "precision", "dataset_dir", "datalist")))
    parser.update(overrides)
    parser.get_parsed_content("initialize")  # the bundle's own set_determinism (+ excepthook), as in a real run
    trainer = parser.get_parsed_content("train#trainer")
    return parser, trainer


def run_size(args, size: int) -> dict:
    from custom.pretraining.correspondence import match_grid
    from custom.pretraining.network import ContrastivePretrainNet
    from ignite.engine import Events

    with tempfile.TemporaryDirectory(prefix="bench_pretrain_step_") as root:
        parser, trainer = bundle_trainer(args, size, root)
        device = torch.device(trainer.state.device)
        batch = int(parser.get_parsed_content("batch_size"))

        # the plain loop's data: one batch of the same loader, kept in memory
        first = next(iter(parser.get_parsed_content("train#dataloader")))
        images = C.as_plain_tensor(first["image"]).float().to(device)

        bundle_net = parser.get_parsed_content("network")
        net = ContrastivePretrainNet(
            backbone=args.backbone,
            in_channels=1,
            dense_channels=int(parser.get_parsed_content("embedding_channels")),
            global_channels=int(parser.get_parsed_content("embedding_channels")),
            hidden_channels=int(parser.get_parsed_content("hidden_channels")),
            feature_level=int(parser.get_parsed_content("feature_level")),
        )
        net.load_state_dict(bundle_net.state_dict())
        net = net.to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=float(parser.get_parsed_content("learning_rate")))
        augment = parser.get_parsed_content("augment")  # stateless: the same object the trainer uses
        global_loss = parser.get_parsed_content("global_loss")
        local_loss = parser.get_parsed_content("local_loss")
        w_global = float(parser.get_parsed_content("w_global"))
        w_local = float(parser.get_parsed_content("w_local"))
        generator = torch.Generator(device=device)
        step = [0]

        def plain_step():
            step[0] += 1
            generator.manual_seed(step[0])
            with torch.no_grad():
                view_q, view_k, theta_q, theta_k = augment(images, generator=generator)
            opt.zero_grad(set_to_none=True)
            dense, global_ = net(torch.cat([view_q, view_k]))
            dense_q, dense_k = dense[:batch], dense[batch:]
            coords_k, valid_q = match_grid(theta_q, theta_k, dense_q.shape[-2:])
            coords_q, valid_k = match_grid(theta_k, theta_q, dense_k.shape[-2:])
            loss = w_global * global_loss(global_[:batch], global_[batch:]) + w_local * local_loss(
                dense_q, dense_k, coords_k, valid_q, coords_q, valid_k
            )
            loss.backward()
            opt.step()
            return loss.detach()

        rec = dict(total=[], wait=[], plain=[])
        mark: dict[str, float] = {}

        def on_get_started(engine):
            mark["start"] = C.now(device)

        def on_get_completed(engine):
            mark["got"] = C.now(device)

        def on_iteration_completed(engine):  # registered last: runs after the bundle's own handlers
            end = C.now(device)
            rec["total"].append(end - mark["start"])
            rec["wait"].append(mark["got"] - mark["start"])
            seconds, _ = C.timed(plain_step, device)  # interleaved plain iteration
            rec["plain"].append(seconds)

        trainer.add_event_handler(Events.GET_BATCH_STARTED, on_get_started)
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, on_get_completed)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration_completed)
        trainer.run()
        if len(rec["total"]) != args.warmup + args.iterations:
            raise RuntimeError(f"expected {args.warmup + args.iterations} iterations, got {len(rec['total'])}")

        w = args.warmup
        total, wait, plain = (C.median(rec[k][w:]) for k in ("total", "wait", "plain"))
        result = dict(
            size=size,
            batch=batch,
            grid=f"{size // net.stride}x{size // net.stride} (stride {net.stride})",
            precision=str(trainer.autocast_dtype or "fp32").replace("torch.", ""),
            channels_last=trainer.channels_last,
            total=total,
            wait=wait,
            plain=plain,
            ratio=plain / total,
        )
        del trainer, parser, net, opt, bundle_net
        gc.collect()
        return result


def main(argv=None) -> int:
    args = C.finish_args(build_parser().parse_args(argv), batch_size=2)
    device = C.resolve_device(args.device)
    C.print_machine(device)
    results = [run_size(args, size) for size in args.size]
    print(f"## Pre-training iteration ({args.backbone}, {args.iterations} timed + {args.warmup} warm-up iterations, "
          "medians, bundle and plain interleaved)\n")
    rows = [
        (
            r["size"],
            f"{r['batch']} x 2 views",
            r["grid"],
            f"{r['precision']}, channels_last={r['channels_last']}",
            C.fmt_s(r["total"]),
            C.fmt_s(r["wait"]),
            f"{100 * r['wait'] / r['total']:.1f}%",
            C.fmt_s(r["plain"]),
            C.fmt_ratio(r["ratio"]),
        )
        for r in results
    ]
    print(C.markdown_table(
        ("size px", "batch", "dense grid", "bundle precision", "bundle s/iter", "bundle data wait s/iter",
         "data-wait share", "plain fp32 s/iter", "ratio plain/bundle"),
        rows,
    ))
    C.headline("pretrain_step ratio plain/bundle (>1: bundle faster): "
               + ", ".join(f"{r['size']} px {C.fmt_ratio(r['ratio'])}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
