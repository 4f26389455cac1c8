"""``stelab compare``: is a run better than a baseline? McNemar's paired test on the same test images."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import SUMMARY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help=SUMMARY["compare"],
                       description="Evaluate trained run folders on their (shared) test images and compare each with "
                                   "the first, image by image: the accuracy difference with its paired standard error "
                                   "and McNemar's exact test (docs/training.md#is-it-better-stelab-compare).")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run folders (a checkpoint.pt or model.pt and config.json each); the first is the baseline")
    p.add_argument("--split", type=int, default=None, metavar="N",
                   help="also compare on the first N test images and on the rest (default: 1000 for cifar10, "
                        "none otherwise; 0: no split)")
    p.add_argument("--labels", nargs="+", default=(), metavar="NAME",
                   help="the runs' names in the report and the curves' legends, one per RUN in the same order, e.g. "
                        "--labels '15 epochs' '60 epochs' (default: their folder names)")
    p.add_argument("--out", type=Path, default=None, help="report folder (default runs/compare-<timestamp>)")
    p.add_argument("--force", action="store_true", help="overwrite a report already in --out")
    p.add_argument("--no-progress", action="store_true", help="do not name each run on stderr as it is evaluated")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.compare import CompareConfig, run_compare
    from ..experiments.shape import finding_lines
    from ..io import REPORTS, check_out_dir

    config = CompareConfig(runs=tuple(str(r) for r in args.runs), split=args.split, labels=tuple(args.labels))
    out = args.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    check_out_dir(out, reports=REPORTS, force=args.force)
    results = run_compare(config, out, progress=not args.no_progress)
    print(f"stelab compare: against {results['baseline']} (details in {out / 'report.md'})")
    print("\n".join(finding_lines(results)))
    print(f"wrote {out}/report.md, results.json ({results['seconds']:.1f} s)")
    return 0
