"""``stelab symmetry``: scale symmetry of binary networks and how STEs keep or break it (Gongyo & Ishikawa 2021)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import SUMMARY
from .ste_args import ste_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("symmetry", help=SUMMARY["symmetry"],
                       description="Stationary points of a misspecified one-unit binary network (two methods), each "
                                   "STE's coarse gradient on the rays through them, the limits of the clipped-ReLU "
                                   "coarse gradient, and coarse gradient descent on non-Gaussian data.")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/symmetry-<timestamp>)")
    p.add_argument("--kappa", type=float, default=0.25, help="label offset kappa in y = kappa + cos(phi) + b cos(3phi)")
    p.add_argument("--b", type=float, default=1.0, help="cos(3phi) weight of the second model (the first has b=0)")
    p.add_argument("--tilt", type=float, default=0.4, help="asymmetry of the angular density for the limit study")
    p.add_argument("--steps", type=int, default=1500, help="coarse gradient descent steps")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate")
    p.add_argument("--samples", type=int, default=10000, help="samples for the descent runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stes", nargs="+", type=ste_spec, default=[], metavar="STE",
                   help="STEs to include (space-separated specs; default: every registered STE)")
    p.add_argument("--quick", action="store_true", help="coarser grids (for smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--force", action="store_true", help="overwrite a report already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.shape import finding_lines
    from ..experiments.symmetry import SymmetryConfig, run_symmetry
    from ..io import REPORTS, check_out_dir

    config = SymmetryConfig(kappa=args.kappa, b=args.b, tilt=args.tilt, steps=args.steps, lr=args.lr,
                            samples=args.samples, seed=args.seed, stes=tuple(args.stes), quick=args.quick)
    out = args.out or Path("runs") / f"symmetry-{time.strftime('%Y%m%d-%H%M%S')}"
    check_out_dir(out, reports=(*REPORTS, "symmetry.png"), force=args.force)  # before the work, not after
    results = run_symmetry(config, out, progress=not args.no_progress)
    print(f"stelab symmetry: findings (details in {out / 'report.md'})")
    print("\n".join(finding_lines(results)))
    print(f"wrote {out}/report.md, results.json, symmetry.png ({results['seconds']:.1f} s)")
    return 0
