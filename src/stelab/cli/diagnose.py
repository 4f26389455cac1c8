"""``stelab diagnose``: how far is each STE's coarse gradient from the true gradient, on a trained model.

``stelab diagnose RUN_DIR`` diagnoses a run's checkpoint on its own data set (a float run is quantized at ``--bits``
first: the start of quantized training) and, if the run logged ``DiagnosticsHook`` records, plots them over training.
``stelab diagnose --model lenet5 --checkpoint PATH --bits 2`` does the same for a bare checkpoint.
``--two-layer`` adds the cross-check against the closed forms of the two-layer Gaussian model.
Writes ``report.md``, ``results.json`` and PNGs to ``--out`` (default ``RUN_DIR/diagnostics``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import check_choice
from ..ste import DEFAULT_STE, PAPER_STES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="gradient fidelity of STEs (coarse vs true gradient) for a trained model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="run folder (config.json + checkpoint.pt)")
    p.add_argument("--model", help="model name (with --checkpoint, instead of RUN_DIR)")
    p.add_argument("--checkpoint", default="last", help="'last' | 'best' for RUN_DIR, or a checkpoint file")
    p.add_argument("--dataset", help="mnist | cifar10 (default: the run's, or the model's)")
    p.add_argument("--bits", type=int, help="quantize a float model's activations at these bits (default 2 for a "
                                            "float model; a quantized run keeps its own)")
    p.add_argument("--stes", nargs="+", default=list(PAPER_STES), help="STEs to compare")
    p.add_argument("--widths", nargs="+", type=float, default=[0.5, 0.25, 0.1],
                   help="smoothing widths s/alpha of the reference (the two narrowest are extrapolated to 0)")
    p.add_argument("--batches", type=int, default=16, help="i.i.d. batches to average over")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--split", default="train", help="train | test")
    p.add_argument("--mode", default="train", help="BN/dropout mode of the gradient: train (what training sees) "
                                                   "| eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", type=int, default=0, help="use N synthetic images instead of the data set")
    p.add_argument("--data-dir")
    p.add_argument("--two-layer", action="store_true", help="add the two-layer Gaussian cross-check with theory")
    p.add_argument("--zo-directions", type=int, default=0,
                   help="also check with N antithetic zeroth-order directions of the real quantized loss (0 = off)")
    p.add_argument("--zo-sigma", type=float, default=0.01, help="parameter-space smoothing of the zeroth-order check")
    p.add_argument("--zo-batches", type=int, default=2, help="batches (the first ones) used by the zeroth-order check")
    p.add_argument("--out", help="report folder (default RUN_DIR/diagnostics or runs/diagnose-<model>)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--force", action="store_true", help="overwrite a report already in --out")
    p.set_defaults(func=run)


def _load_model(args: argparse.Namespace):
    from .. import models
    from ..config import QuantConfig
    from ..train import load_weights, read_config

    if args.run_dir:
        if args.model:
            raise ValueError("give RUN_DIR or --model/--checkpoint, not both")
        config = read_config(args.run_dir)
        name, dataset, run_bits, ste = config.model, config.dataset, config.bits, config.ste
        run_quant = config.quant_config()  # the run's own forward / alpha / STE when it is quantized
        source = Path(args.run_dir)
    else:
        if not args.model or args.checkpoint in ("last", "best"):
            raise ValueError("give RUN_DIR, or --model NAME together with --checkpoint PATH")
        check_choice("model", args.model, models.names())
        name, dataset, run_bits, ste = args.model, models.DEFAULT_DATASET[args.model], None, DEFAULT_STE
        run_quant = None
        source = Path(args.checkpoint)
    bits = run_bits if run_bits is not None else (args.bits or 2)
    if run_bits is not None and args.bits not in (None, run_bits):
        raise ValueError(f"the run is quantized at {run_bits} bits; --bits {args.bits} does not apply")
    model = models.build(name, quant=run_quant or QuantConfig(bits=bits, ste=ste))
    # a float checkpoint loads into the quantized twin (same keys): "trained float, then quantized"
    load_weights(model, source, args.checkpoint if args.run_dir else "last")
    meta = {"model": name, "checkpoint": str(source if not args.run_dir else f"{source} ({args.checkpoint})"),
            "trained_as": "float" if run_bits is None else f"{run_bits}-bit {ste}", "bits": bits}
    return model, args.dataset or dataset, meta


def _batches(args: argparse.Namespace, dataset: str):
    from .. import data

    if args.synthetic:
        images, labels = data.synthetic(dataset, args.synthetic, seed=args.seed)
    else:
        images, labels = data.load(dataset, args.data_dir, check_choice("split", args.split, data.SPLITS))
    mean, std = data.STATS[dataset]
    loader = data.DeviceLoader(images, labels, batch_size=args.batch_size, shuffle=True, augment=False, mean=mean,
                               std=std, seed=args.seed, drop_last=True)
    if len(loader) < args.batches:
        raise ValueError(f"{dataset} {args.split} has {len(loader)} batches of {args.batch_size}; "
                         f"asked for --batches {args.batches}")
    out = []
    for i, batch in enumerate(loader):
        if i >= args.batches:
            break
        out.append(batch)
    return out


def run(args: argparse.Namespace) -> int:
    from .. import models
    from ..diagnostics import DEFAULT_STES, activation_statistics, gradient_fidelity
    from ..diagnostics.fidelity import zeroth_order_comparison
    from ..diagnostics.report import JSON_NAME, MARKDOWN_NAME, hook_records, write_report
    from ..diagnostics.two_layer_check import cross_check, default_problem
    from ..io import REPORTS, check_out_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    check_choice("mode", args.mode, ("train", "eval"))
    if args.batches < 2:
        raise ValueError(f"--batches must be >= 2 for confidence intervals, got {args.batches}")
    model, dataset, meta = _load_model(args)
    models.check_dataset(meta["model"], dataset)  # --dataset must give the inputs the model is built for
    out = Path(args.out) if args.out else (Path(args.run_dir) / "diagnostics" if args.run_dir
                                           else Path("runs") / f"diagnose-{meta['model']}")
    check_out_dir(out, reports=(*REPORTS, MARKDOWN_NAME, JSON_NAME), force=args.force)  # before the work
    model.train(args.mode == "train")
    batches = _batches(args, dataset)
    meta.update({"dataset": dataset, "split": args.split, "synthetic": args.synthetic, "mode": args.mode,
                 "batches": args.batches, "batch_size": args.batch_size, "widths (s/alpha)": args.widths,
                 "seed": args.seed})
    result = gradient_fidelity(model, batches, args.stes, args.widths, seed=args.seed, progress=not args.no_progress)
    stats = activation_statistics(model, torch.cat([x for x, _ in batches[:4]]))
    records = hook_records(args.run_dir) if args.run_dir else []
    zeroth_order = None
    if args.zo_directions:
        zeroth_order = zeroth_order_comparison(model, batches[: args.zo_batches], args.stes, args.widths,
                                               args.zo_sigma, args.zo_directions, seed=args.seed)
    two_layer = cross_check(*default_problem(), stes=[s for s in args.stes if s in DEFAULT_STES] or DEFAULT_STES) \
        if args.two_layer else None
    write_report(out, title=f"Gradient fidelity: {meta['model']} / {dataset} ({meta['trained_as']})", meta=meta,
                 result=result, stats=stats, records=records, two_layer=two_layer, zeroth_order=zeroth_order)
    print((out / MARKDOWN_NAME).read_text())
    print(f"report written to {out}")
    return 0
