"""``stelab classify``: monotone STEs and multi-class classification with a quantized two-linear-layer network
(Long, Yin & Xin 2021). Synthetic experiment by default; ``--mnist`` adds the MNIST one. Writes ``report.md``,
``results.json`` and PNG figures to ``runs/classify-<timestamp>`` or ``--out``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import SUMMARY
from .ste_args import ste_spec


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


_DEFAULTS = {"bits": (1, 2, 4), "seeds": (0, 1), "mnist_bits": (1, 2, 4), "mnist_seeds": (0, 1, 2)}


def _given(args: argparse.Namespace, flag: str, dest: str) -> bool:
    """Whether ``flag`` is on the command line (``args.argv``); called from Python (no argv), whether its value
    differs from the default."""
    argv = getattr(args, "argv", None)
    if argv is None:
        return getattr(args, dest) != _DEFAULTS[dest]
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help=SUMMARY["classify"],
                       description=__doc__)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/classify-<timestamp>)")
    p.add_argument("--stes", nargs="+", type=ste_spec, default=[], metavar="STE",
                   help="STEs to compare (space-separated specs, e.g. relu 'leaky_relu(slope=0.05)'; default: every "
                        "registered one, hat and half_hat included)")
    p.add_argument("--bits", type=_ints, default=_DEFAULTS["bits"], help="bit-widths of the synthetic main grid")
    p.add_argument("--seeds", type=_ints, default=_DEFAULTS["seeds"], help="seeds of the synthetic experiment")
    p.add_argument("--kinds", nargs="+", default=["subspaces", "cones"], help="synthetic data kinds")
    p.add_argument("--steps", type=int, default=2000, help="maximum coarse GD steps per synthetic run")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--hidden", type=int, default=32, help="hidden neurons (fixed class-assigned readout)")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="tiny grid for a smoke test (seconds)")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic experiment")
    p.add_argument("--mnist", action="store_true", help="also run the MNIST experiment (needs the data set)")
    p.add_argument("--data-dir", default=None, help="directory holding MNIST (default: stelab.data.find_data_dir)")
    p.add_argument("--mnist-bits", type=_ints, default=_DEFAULTS["mnist_bits"])
    p.add_argument("--mnist-seeds", type=_ints, default=_DEFAULTS["mnist_seeds"])
    p.add_argument("--mnist-subset", type=int, default=60000, help="training images used")
    p.add_argument("--mnist-epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the matrices are small: 1 is fastest)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--force", action="store_true", help="overwrite a report already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..experiments.classify import ClassifyConfig, MnistSettings, SyntheticSettings, run_classify
    from ..experiments.shape import finding_lines
    from ..io import REPORTS, check_out_dir
    from ..theory.classify_data import KINDS
    from ..theory.classify_ste import resolve_ste

    torch.set_num_threads(max(1, args.threads))
    for ste in args.stes:
        resolve_ste(ste)  # fail before any work, with the valid names
    for kind in args.kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown synthetic data kind {kind!r}; valid choices: {', '.join(KINDS)}")
    if args.no_synthetic and not args.mnist:
        raise ValueError("nothing to do: --no-synthetic without --mnist")
    for name in ("steps", "hidden", "per_class", "mnist_subset", "mnist_epochs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    out = args.out or Path("runs") / f"classify-{time.strftime('%Y%m%d-%H%M%S')}"
    check_out_dir(out, reports=(*REPORTS, "classify.md", "classify.json"), force=args.force)  # before the work
    if args.quick:  # --quick sets its own small grid: a grid flag given with it would be silently replaced
        given = [f for f, dest in (("--bits", "bits"), ("--seeds", "seeds"), ("--mnist-bits", "mnist_bits"),
                                   ("--mnist-seeds", "mnist_seeds")) if _given(args, f, dest)]
        if given:
            raise ValueError(f"--quick runs its own small grid (2 bits, seed 0) and would ignore {', '.join(given)}; "
                             "drop --quick to run your grid, or drop those flags")
    synthetic = mnist = None
    if not args.no_synthetic:
        synthetic = SyntheticSettings(kinds=tuple(args.kinds), stes=tuple(args.stes), bits=tuple(args.bits),
                                      seeds=tuple(args.seeds), steps=args.steps, lr=args.lr, hidden=args.hidden,
                                      per_class=args.per_class)
        if args.quick:
            # by name: two monotone STEs and one that is not, the smallest set that shows the contrast
            synthetic = synthetic.replace(stes=args.stes or ("relu", "clipped_relu", "swish_sign"), bits=(2,),
                                          seeds=(0,), steps=min(args.steps, 300), per_class=min(args.per_class, 20),
                                          minibatch_bits=(2,), trained_readout_bits=())
    if args.mnist:
        mnist = MnistSettings(stes=tuple(args.stes), bits=tuple(args.mnist_bits), seeds=tuple(args.mnist_seeds),
                              train_subset=args.mnist_subset, epochs=args.mnist_epochs, data_dir=args.data_dir)
        if args.quick:
            mnist = mnist.replace(stes=args.stes or ("relu",), bits=(2,), seeds=(0,),
                                  train_subset=min(args.mnist_subset, 2000))
    result = run_classify(ClassifyConfig(stes=tuple(args.stes), synthetic=synthetic, mnist=mnist), out,
                          progress=not args.no_progress)
    print("\n".join(finding_lines(result)))
    print(f"wrote {out}: {', '.join(sorted(p.name for p in Path(out).iterdir()))}")
    return 0
