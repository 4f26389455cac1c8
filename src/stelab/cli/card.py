"""``stelab card``: the STE report card: any STE measured on the results of the three papers and on real networks,
beside references, with a ranking and a recommendation."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import SUMMARY
from .executors import add_executor_arguments, executor_from_args
from .ste_args import ste_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..experiments.card.config import REFERENCES, TIERS, CardConfig

    d = CardConfig(stes=("relu",))
    p = sub.add_parser("card", help=SUMMARY["card"],
                       description="Grade STEs (built-in, from the literature, or yours with --import): what they "
                                   "are, Yin et al.'s two-layer model, scale symmetry, the two-layer classifier, "
                                   "gradient fidelity on LeNet-5 (and ResNet-20), and both fine-tuned at a grid of "
                                   "learning rates; then a ranking, whether the cheap measures predict training, and a "
                                   "recommendation. Results are cached: a rerun continues, an added STE adds "
                                   "only its cells.")
    p.add_argument("stes", nargs="+", type=ste_spec, metavar="STE", help="STEs to grade, e.g. 'leaky_relu(slope=0.1)'")
    p.add_argument("--against", nargs="*", type=ste_spec, default=list(REFERENCES), metavar="STE",
                   help="references measured beside them")
    p.add_argument("--tier", choices=TIERS, default=d.tier,
                   help="quick: minutes; standard: longer sizes, MNIST classification, ResNet-20 on CIFAR-10; "
                        "full: standard and Table 1 cells (see docs/card.md)")
    p.add_argument("--bits", type=int, default=d.bits, help="activation bits")
    p.add_argument("--seeds", type=int, default=d.seeds, help="training seeds per learning rate")
    p.add_argument("--lrs", type=float, nargs="+", default=list(d.lrs), metavar="LR",
                   help="learning-rate grid of the training section")
    p.add_argument("--table1-epochs-scale", type=float, default=d.table1_epochs_scale, metavar="S",
                   help="full tier: the Table 1 cells' schedule as a fraction of the paper's (default 1: the paper's)")
    p.add_argument("--lenet-init", default=d.lenet_init, help="float LeNet-5 checkpoint to fine-tune and diagnose")
    p.add_argument("--resnet-init", default=d.resnet_init,
                   help="float ResNet-20 checkpoint (standard and full tiers)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $STELAB_DATA or ../shared/data)")
    p.add_argument("--synthetic", type=int, default=0, help="random images instead of MNIST (smoke tests)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/card-<stes>-<tier>)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_executor_arguments(p, jobs_help="local: training runs at once, in separate processes sharing the cores "
                                        "(default 1; on 2 cores, 2 trains 1.2x faster than 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.card import CardConfig, run_card

    config = CardConfig(stes=tuple(args.stes), against=tuple(args.against), tier=args.tier, bits=args.bits,
                        seeds=args.seeds, lrs=tuple(args.lrs), lenet_init=args.lenet_init,
                        resnet_init=args.resnet_init, data_dir=args.data_dir,
                        synthetic=args.synthetic, jobs=args.jobs or 1,
                        table1_epochs_scale=args.table1_epochs_scale)
    checkpoints = [("LeNet-5", config.lenet_init, "--lenet-init")]
    if config.sizes["resnet_epochs"]:
        checkpoints.append(("ResNet-20", config.resnet_init, "--resnet-init"))
    for name, path, flag in checkpoints:
        if not Path(path).is_file():
            raise ValueError(f"no float {name} checkpoint at {path}; run from the repository root (it holds the "
                             f"committed one under results/) or give {flag} PATH (a float {name} run folder's "
                             "checkpoint.pt or model.pt)")
    out = args.out or config.default_out()
    with executor_from_args(args, out) as executor:
        results = run_card(config, out, progress=not args.no_progress, executor=executor)
    print(f"stelab card: {results['recommendation']}")
    print("ranking: " + ", ".join(results["ranking"]))
    print(f"wrote {out}/report.md, results.json, card.png ({results['seconds']:.0f} s)")
    return 0
