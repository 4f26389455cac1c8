"""``stelab train``: train one float or activation-quantized model; every hyper-parameter is a flag.

Multi-process data parallel: ``torchrun --nproc_per_node 2 -m stelab.cli train ...`` or ``stelab train --nproc 2``.
"""

from __future__ import annotations

import argparse

from ..train.config import DEVICES, TrainConfig


def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with ``stelab reproduce`` (model choice excluded)."""
    d = TrainConfig()
    p.add_argument("--lr", type=float, default=None, help="initial rate (default 0.1 float, 0.01 quantized)")
    p.add_argument("--lr-milestones", type=float, nargs="*", default=list(d.lr_milestones), metavar="F",
                   help="fractions of the run where the rate is cut by --lr-gamma (default 0.5 0.75; none: constant)")
    p.add_argument("--lr-gamma", type=float, default=d.lr_gamma)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size over all processes")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--nesterov", action="store_true")
    _bool_flag(p, "augment", "crop+flip augmentation (default: on for cifar10)")
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/ and cifar-10-batches-py/")
    p.add_argument("--device", choices=DEVICES, default=d.device)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (helps on GPUs)")
    p.add_argument("--limit-train", type=int, default=0, metavar="N", help="use the first N training images")
    p.add_argument("--limit-test", type=int, default=0, metavar="N", help="use the first N test images")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="N random images instead of the data set")
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a float or activation-quantized model",
                       description="Train a float or activation-quantized model (SGD, momentum, step-decayed rate).")
    p.add_argument("--model", default="lenet5", help="lenet5 | vgg11 | resnet20")
    p.add_argument("--dataset", default="mnist", help="mnist | cifar10")
    p.add_argument("--bits", type=int, default=2, help="activation bits (ignored with --float)")
    p.add_argument("--ste", default="clipped_relu", help="STE name, e.g. identity, relu, clipped_relu")
    p.add_argument("--forward", default="staircase", help="forward quantizer")
    p.add_argument("--alpha", type=float, default=None, help="fixed resolution (default: Lloyd's for the bits)")
    p.add_argument("--float", dest="float_model", action="store_true", help="train the float (ReLU) model")
    p.add_argument("--init", default=None, help="checkpoint file or run folder to start from (float model)")
    p.add_argument("--epochs", type=int, default=None, help="default: 50 for lenet5, 200 for vgg11/resnet20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<dataset>-<kind>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--save-best", action="store_true", help="also keep best.pt (highest test accuracy)")
    p.add_argument("--diagnose-every", type=int, default=0, metavar="N",
                   help="run stelab.diagnostics.DiagnosticsHook every N steps (0 = off)")
    p.add_argument("--nproc", type=int, default=1, help="data-parallel processes launched here (like torchrun)")
    add_train_arguments(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, **overrides) -> TrainConfig:
    from .. import models

    model = overrides.pop("model", getattr(args, "model", "lenet5"))
    if model not in models.names():
        from ..errors import unknown_name

        raise unknown_name("model", model, models.names())
    fields = dict(
        model=model, dataset=getattr(args, "dataset", "mnist"),
        bits=None if getattr(args, "float_model", False) else getattr(args, "bits", 2),
        ste=getattr(args, "ste", "clipped_relu"), forward=getattr(args, "forward", "staircase"),
        alpha=getattr(args, "alpha", None), init=getattr(args, "init", None), epochs=getattr(args, "epochs", None),
        lr=args.lr, lr_milestones=tuple(args.lr_milestones), lr_gamma=args.lr_gamma, batch_size=args.batch_size,
        momentum=args.momentum, weight_decay=args.weight_decay, nesterov=args.nesterov, augment=args.augment,
        seed=getattr(args, "seed", 0), data_dir=args.data_dir, out=getattr(args, "out", None), device=args.device,
        compile=args.compile, channels_last=args.channels_last, limit_train=args.limit_train,
        limit_test=args.limit_test, synthetic=args.synthetic, eval_batch_size=args.eval_batch_size,
        diagnose_every=getattr(args, "diagnose_every", 0), save_best=getattr(args, "save_best", False),
    )
    fields.update(overrides)
    return TrainConfig(**fields)


def run(args: argparse.Namespace) -> int:
    from ..train import train

    config = config_from_args(args)  # validate in the parent before launching children
    if args.nproc > 1:
        from ..train.distributed import launch

        return launch(config, args.nproc, resume=args.resume, progress=not args.no_progress)
    summary = train(config, resume=args.resume, progress=not args.no_progress)
    from ..train.distributed import from_env

    if from_env().is_main:
        keys = ("status", "epochs_done", "train_loss", "train_acc", "test_loss", "test_acc", "wall_time_s")
        print(" ".join(f"{k}={_fmt(summary.get(k))}" for k in keys))
    return 0 if summary.get("status") == "finished" else 3


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)
