"""``stelab reproduce table1|instability``: the experiments of Yin et al. (2019); see REPRODUCTION.md."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..io import check_out_dir
from ..ste import PAPER_STES
from . import SUMMARY
from .executors import add_executor_arguments, executor_from_args
from .ste_args import add_stes_argument
from .train import add_train_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help=SUMMARY["reproduce"])
    what = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    what.required = True

    t = what.add_parser("table1", help="float model, then every (bits, STE) cell from it; writes report.md")
    t.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    t.add_argument("--models", nargs="+", default=None, help="default: lenet5 (mnist) or vgg11 resnet20 (cifar10)")
    t.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    add_stes_argument(t, PAPER_STES, "STEs to compare")
    t.add_argument("--seeds", type=int, default=1, help="number of seeds: FIRST..FIRST+N-1")
    t.add_argument("--first-seed", type=int, default=0, help="first seed (to split seeds over processes/machines)")
    t.add_argument("--epochs-scale", type=float, default=1.0, help="fraction of the paper's epochs (50 / 200)")
    t.add_argument("--cell-epochs", type=int, default=None,
                   help="epochs of each quantized fine-tuning run (default: as many as the float run)")
    t.add_argument("--cell-precision", choices=("fp32", "bf16"), default=None,
                   help="precision of the quantized cells (default: --precision, as the float run)")
    t.add_argument("--out", default=None, help="output folder (default runs/table1-<dataset>)")
    add_train_arguments(t)
    add_executor_arguments(t, jobs_help="local: runs trained at once, in separate processes sharing the cores "
                                        "(default 1; 2 suits LeNet-5 on 2 cores, see REPRODUCTION.md)")
    t.set_defaults(func=run_table1_cmd)

    i = what.add_parser("instability", help="continue good-STE minima with a poorer STE at a tiny rate")
    i.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    i.add_argument("--model", default="lenet5")
    i.add_argument("--pairs", nargs="+", default=["4:relu->identity", "4:clipped_relu->identity",
                                                  "2:clipped_relu->relu"], metavar="BITS:FROM->TO")
    i.add_argument("--switch-lr", type=float, default=1e-5, help="rate after the switch (default 1e-5)")
    i.add_argument("--switch-epochs", type=int, default=20, help="epochs after the switch (default 20)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--table1-dir", default=None, help="a table1 output folder holding the minima (else trained)")
    i.add_argument("--epochs-scale", type=float, default=1.0, help="for minima trained here")
    i.add_argument("--no-control", action="store_true", help="skip the same-STE control runs")
    i.add_argument("--then-epochs", type=int, default=0,
                   help="afterwards, epochs of the normal quantized schedule with the same STE (0 = none)")
    i.add_argument("--out", default=None, help="output folder (default runs/instability-<model>-<dataset>)")
    add_train_arguments(i)
    add_executor_arguments(i)
    i.set_defaults(func=run_instability_cmd)


def parse_pair(text: str) -> tuple[int, str, str]:
    """``"4:relu->identity"`` -> ``(4, "relu", "identity")``."""
    try:
        bits, rest = text.split(":", 1)
        src, dst = rest.split("->")
        return int(bits), src.strip(), dst.strip()
    except ValueError:
        raise ValueError(f"bad pair {text!r}; expected BITS:FROM->TO, e.g. 4:relu->identity") from None


def _base_train(args: argparse.Namespace, model: str):
    """The hyper-parameters every run of the experiment shares, read by ``stelab train``'s own flag reader; the
    experiment sets model, seed, epochs, quantization, init and output folder per run."""
    from .train import QUANT_FLAGS, config_from_args

    # --bits here lists the sweep's bit widths, not one run's: read the rest as a float run's flags
    shared = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in QUANT_FLAGS}, float_model=True)
    base = config_from_args(shared, model=model, dataset=args.dataset, init=None, epochs=None, out=None, seed=0,
                            diagnose_every=0, save_best=False)
    if base.weights is not None and args.experiment == "instability":
        raise ValueError("--weight-bits: the instability experiment continues the activation-only minima of Table 1 "
                         "(folders such as seed0/4bit-relu); train weight-quantized runs with stelab train "
                         "--weight-bits B --init <run>, or stelab reproduce table1 --weight-bits B")
    return base


def _check_models(names, dataset: str) -> None:
    """Every model known and built for ``dataset``: checked before the first of many runs, not hours into them."""
    from .. import models

    for name in names:
        models.check_dataset(name, dataset)


def _precision_note(train: Any) -> None:
    if note := train.precision_note():
        print(f"stelab reproduce: note: {note}", file=sys.stderr, flush=True)


def run_table1_cmd(args: argparse.Namespace) -> int:
    from ..experiments.reproduce import MODELS_BY_DATASET, Table1Config, run_table1, table1_markdown

    models = tuple(args.models or MODELS_BY_DATASET[args.dataset])
    _check_models(models, args.dataset)
    config = Table1Config(dataset=args.dataset, models=models, bits=tuple(args.bits), stes=tuple(args.stes),
                          seeds=args.seeds, first_seed=args.first_seed, epochs_scale=args.epochs_scale,
                          cell_epochs=args.cell_epochs, cell_precision=args.cell_precision,
                          jobs=1 if args.jobs is None else args.jobs,
                          train=_base_train(args, models[0]))
    out = args.out or f"runs/table1-{args.dataset}"
    check_out_dir(out)
    _precision_note(config.train)
    with executor_from_args(args, out) as executor:
        results = run_table1(config, out, progress=not args.no_progress, executor=executor)
    print(table1_markdown(results))
    print(f"written to {out}/report.md, results.json and *-curves.png")
    return 0


def run_instability_cmd(args: argparse.Namespace) -> int:
    from ..experiments.reproduce import InstabilityConfig, instability_markdown, run_instability

    _check_models([args.model], args.dataset)
    config = InstabilityConfig(dataset=args.dataset, model=args.model, pairs=tuple(parse_pair(p) for p in args.pairs),
                               switch_lr=args.switch_lr, switch_epochs=args.switch_epochs, seed=args.seed,
                               table1_dir=args.table1_dir, epochs_scale=args.epochs_scale, control=not args.no_control,
                               then_epochs=args.then_epochs, train=_base_train(args, args.model))
    out = args.out or f"runs/instability-{args.model}-{args.dataset}"
    check_out_dir(out)
    _precision_note(config.train)
    with executor_from_args(args, out) as executor:
        results = run_instability(config, out, progress=not args.no_progress, executor=executor)
    print(instability_markdown(results))
    print(f"written to {out}/report.md, results.json and instability.png")
    return 0
