"""Fine-tuning bundle's real training iteration vs a minimal hand-written fp32 PyTorch loop.

The bundle side is ``train#trainer`` of ``bundles/ideal_finetune/configs/train.yaml`` (optionally + ``cpu.yaml``),
built by ``monai.bundle.ConfigParser`` with the sizes overridden: the real ``CrossPseudoLabelTrainer`` with its
data loaders (cached slices + per-slice augmentation), handlers (LR schedule, stats, TensorBoard), precision
and channels-last settings. Per iteration it records

- the labeled-batch wait (Ignite ``GET_BATCH_STARTED`` -> ``GET_BATCH_COMPLETED``),
- the unlabeled-batch wait (the trainer's ``_next_unlabeled``, wrapped on the instance for this benchmark),
- the total (``GET_BATCH_STARTED`` -> after the last ``ITERATION_COMPLETED`` handler).

The plain side: the same ``DualDecoderUNet`` (same initial weights), one labeled and one unlabeled batch taken
from the bundle's loaders once and kept in memory, ``CE(p1, m) + CE(p2, m) + CE(p1, y2) + CE(p2, y1)``, Adam;
fp32, no channels_last, no autocast, no handlers.

The two alternate iteration by iteration (bundle, plain, bundle, plain, ...), so drifting machine load hits both
alike; ratios come from one run. ``ratio plain/bundle > 1`` means the bundle iteration is faster.

    python benchmarks/train_step.py [--quick] [--size 128 192] [--iterations 10] [--backbone resnet50]
"""

from __future__ import annotations

import gc
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def build_parser():
    p = C.base_parser(__doc__.split("\n")[0], iterations=10, warmup=2)
    p.add_argument("--batch-size", type=int, default=None, help="labeled slices per iteration (default: the config's)")
    p.add_argument("--unlabeled-batch-size", type=int, default=None,
                   help="unlabeled slices per iteration (default: the config's)")
    p.add_argument("--cpu-profile", action="store_true", help="layer configs/cpu.yaml over train.yaml (4 + 4 slices)")
    C.add_bundle_overrides(p)
    return p


def bundle_trainer(args, size: int, root: str):
    """``train#trainer`` of the fine-tuning bundle, sized for ``warmup + iterations`` iterations in one epoch."""
    from monai.bundle import ConfigParser

    files = [C.FINETUNE_CONFIGS / "train.yaml"] + ([C.FINETUNE_CONFIGS / "cpu.yaml"] if args.cpu_profile else [])
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    total = args.warmup + args.iterations
    overrides = dict(
        bundle_root=root,
        backbone=args.backbone,
        spatial_size=size,
        max_iterations=total,
        epoch_length=total,  # one epoch: no epoch boundary inside the timed iterations
        val_interval=10**9,  # never validate
    )
    if args.device:
        overrides["device"] = f"$torch.device('{args.device}')"
    overrides.update(
        C.bundle_overrides(args, ("batch_size", "unlabeled_batch_size", "precision", "dataset_dir", "datalist"))
    )
    parser.update(overrides)
    parser.get_parsed_content("initialize")  # the bundle's own set_determinism (+ excepthook), as in a real run
    trainer = parser.get_parsed_content("train#trainer")
    return parser, trainer


def plain_loss(logits1, logits2, labels, n_labeled: int) -> torch.Tensor:
    """CE(p1, m) + CE(p2, m) + CE(p1, y2) + CE(p2, y1), hard argmax pseudo-labels, no gradient through them."""
    l1, l2 = logits1[:n_labeled], logits2[:n_labeled]
    u1, u2 = logits1[n_labeled:], logits2[n_labeled:]
    sup = F.cross_entropy(l1, labels) + F.cross_entropy(l2, labels)
    unsup = F.cross_entropy(u1, u2.detach().argmax(1)) + F.cross_entropy(u2, u1.detach().argmax(1))
    return sup + unsup


def run_size(args, size: int) -> dict:
    from custom.finetuning.dual_decoder import DualDecoderUNet
    from ignite.engine import Events

    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as root:
        parser, trainer = bundle_trainer(args, size, root)
        device = torch.device(trainer.state.device)
        n_lab = int(parser.get_parsed_content("batch_size"))
        n_unl = int(parser.get_parsed_content("unlabeled_batch_size"))

        # the plain loop's data: one labeled + one unlabeled batch of the same loaders, kept in memory
        lab = next(iter(parser.get_parsed_content("train#dataloader")))
        unl = next(iter(parser.get_parsed_content("train#unlabeled_dataloader")))
        images = torch.cat([C.as_plain_tensor(lab["image"]), C.as_plain_tensor(unl["image"])]).float().to(device)
        labels = C.as_plain_tensor(lab["label"])[:, 0].long().to(device)

        bundle_net = parser.get_parsed_content("network")
        net = DualDecoderUNet(args.backbone, in_channels=1, out_channels=int(parser["num_classes"]), output="logits")
        net.load_state_dict(bundle_net.state_dict())
        net = net.to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=float(parser["learning_rate"]))

        def plain_step():
            opt.zero_grad(set_to_none=True)
            logits1, logits2 = net(images)
            loss = plain_loss(logits1, logits2, labels, n_lab)
            loss.backward()
            opt.step()
            return loss.detach()

        rec = dict(total=[], wait_l=[], wait_u=[], plain=[])
        mark: dict[str, float] = {}

        def on_get_started(engine):
            mark["start"] = C.now(device)

        def on_get_completed(engine):
            mark["got"] = C.now(device)

        original_next = trainer._next_unlabeled
        unl_wait: list[float] = []

        def timed_next_unlabeled():
            t0 = C.now(device)
            out = original_next()
            unl_wait.append(C.now(device) - t0)
            return out

        trainer._next_unlabeled = timed_next_unlabeled  # instance attribute: this benchmark only

        def on_iteration_completed(engine):  # registered last: runs after the bundle's own handlers
            end = C.now(device)
            rec["total"].append(end - mark["start"])
            rec["wait_l"].append(mark["got"] - mark["start"])
            rec["wait_u"].append(unl_wait[-1] if unl_wait else 0.0)
            seconds, _ = C.timed(plain_step, device)  # interleaved plain iteration
            rec["plain"].append(seconds)

        trainer.add_event_handler(Events.GET_BATCH_STARTED, on_get_started)
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, on_get_completed)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration_completed)
        trainer.run()
        if len(rec["total"]) != args.warmup + args.iterations:
            raise RuntimeError(f"expected {args.warmup + args.iterations} iterations, got {len(rec['total'])}")

        w = args.warmup
        total = C.median(rec["total"][w:])
        wait = C.median([a + b for a, b in zip(rec["wait_l"][w:], rec["wait_u"][w:])])
        plain = C.median(rec["plain"][w:])
        result = dict(
            size=size,
            batch=f"{n_lab} + {n_unl}",
            precision=str(trainer.autocast_dtype or "fp32").replace("torch.", ""),
            channels_last=trainer.channels_last,
            device=device,
            total=total,
            wait_l=C.median(rec["wait_l"][w:]),
            wait_u=C.median(rec["wait_u"][w:]),
            wait=wait,
            plain=plain,
            ratio=plain / total,
        )
        del trainer, parser, net, opt, bundle_net
        gc.collect()
        return result


def main(argv=None) -> int:
    args = C.finish_args(build_parser().parse_args(argv), batch_size=2, unlabeled_batch_size=2)
    device = C.resolve_device(args.device)
    C.print_machine(device)
    results = [run_size(args, size) for size in args.size]
    print(f"## Fine-tuning training iteration ({args.backbone}, {args.iterations} timed + {args.warmup} warm-up "
          "iterations, medians, bundle and plain interleaved)\n")
    rows = [
        (
            r["size"],
            r["batch"],
            f"{r['precision']}, channels_last={r['channels_last']}",
            C.fmt_s(r["total"]),
            f"{C.fmt_s(r['wait'])} ({C.fmt_s(r['wait_l'])} + {C.fmt_s(r['wait_u'])})",
            f"{100 * r['wait'] / r['total']:.1f}%",
            C.fmt_s(r["plain"]),
            C.fmt_ratio(r["ratio"]),
        )
        for r in results
    ]
    print(C.markdown_table(
        ("size px", "batch L + U", "bundle precision", "bundle s/iter", "bundle data wait s/iter (L + U)",
         "data-wait share", "plain fp32 s/iter", "ratio plain/bundle"),
        rows,
    ))
    C.headline("train_step ratio plain/bundle (>1: bundle faster): "
               + ", ".join(f"{r['size']} px {C.fmt_ratio(r['ratio'])}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
