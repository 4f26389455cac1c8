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

from ..ste import PAPER_STES
from . import SUMMARY
from .ste_args import add_stes_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help=SUMMARY["diagnose"],
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="run folder (config.json + checkpoint.pt)")
    p.add_argument("--model", help="model name (with --checkpoint, instead of RUN_DIR)")
    p.add_argument("--checkpoint", default="last", help="'last' | 'best' for RUN_DIR, or a checkpoint file")
    p.add_argument("--dataset", help="mnist | cifar10 (default: the run's, or the model's)")
    p.add_argument("--bits", type=int, help="quantize a float model's activations at these bits (default 2 for a "
                                            "float model; a quantized run keeps its own)")
    add_stes_argument(p, PAPER_STES, "STEs to compare")
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


def run(args: argparse.Namespace) -> int:
    from ..experiments.diagnose import JSON_NAME, MARKDOWN_NAME, DiagnoseConfig, load_model, run_diagnose
    from ..io import REPORTS, check_out_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    config = DiagnoseConfig(
        run_dir=args.run_dir, model=args.model, checkpoint=args.checkpoint, dataset=args.dataset, bits=args.bits,
        stes=tuple(args.stes), widths=tuple(args.widths), batches=args.batches, batch_size=args.batch_size,
        split=args.split, mode=args.mode, seed=args.seed, synthetic=args.synthetic, data_dir=args.data_dir,
        two_layer=args.two_layer, zo_directions=args.zo_directions, zo_sigma=args.zo_sigma, zo_batches=args.zo_batches)
    loaded = load_model(config)  # a bad model, run folder or checkpoint fails first, as a one-line error
    out = Path(args.out) if args.out else config.default_out()
    check_out_dir(out, reports=(*REPORTS, MARKDOWN_NAME, JSON_NAME), force=args.force)  # before the work
    run_diagnose(config, out, progress=not args.no_progress, loaded=loaded)
    print((out / MARKDOWN_NAME).read_text())
    print(f"report written to {out}")
    return 0
