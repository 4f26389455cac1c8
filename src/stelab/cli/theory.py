"""``stelab theory``: the theory lab of Yin et al. (ICLR 2019) — closed forms vs Monte Carlo, the cosine of
expected coarse gradients with the true gradient, coarse gradient descent, and their Figure 1. Writes
``report.md``, ``results.json`` and PNG plots to a run folder (default ``runs/theory-<timestamp>``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import SUMMARY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("theory", help=SUMMARY["theory"],
                       description=__doc__)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/theory-<UTC timestamp>)")
    p.add_argument("--seed", type=int, default=0, help="seed of the teacher and of every experiment (default 0)")
    p.add_argument("--m", type=int, default=5, help="number of patches m (default 5)")
    p.add_argument("--n", type=int, default=10, help="input dimension n, at least 2 (default 10)")
    p.add_argument("--steps", type=int, default=1500, help="coarse gradient descent steps (default 1500)")
    p.add_argument("--mc-samples", type=int, default=100_000, help="Monte Carlo samples per point (default 1e5)")
    p.add_argument("--quick", action="store_true", help="smoke-test sizes (a few seconds; claims may not all hold)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--force", action="store_true", help="overwrite a report already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.theory_lab import TheoryConfig, run_theory
    from ..io import REPORTS, check_out_dir

    if args.steps < 1 or args.mc_samples < 2:
        raise ValueError(f"need --steps >= 1 and --mc-samples >= 2, got {args.steps} and {args.mc_samples}")
    sizes = dict(m=args.m, n=args.n, seed=args.seed)
    if args.quick:
        cfg = TheoryConfig.quick(**sizes)
    else:
        cfg = TheoryConfig(**sizes, steps=args.steps, mc_samples=args.mc_samples)
    out = args.out or Path("runs") / time.strftime("theory-%Y%m%d-%H%M%S", time.gmtime())
    check_out_dir(out, reports=REPORTS, force=args.force)  # before the minutes of work, not after
    print(f"stelab theory: writing to {out}", flush=True)
    results = run_theory(cfg, out, progress=not args.no_progress)
    held = sum(c["held"] for c in results["findings"])
    for c in results["findings"]:
        print(f"  [{'held' if c['held'] else 'FAILED'}] {c['id']}: {c['evidence']}")
    print(f"{held}/{len(results['findings'])} claims held in {results['seconds']:.1f} s; report: {out / 'report.md'}")
    return 0
