"""``stelab info``: what is registered (STEs with their properties, forward and weight quantizers, models) and Lloyd's
resolutions."""

from __future__ import annotations

import argparse

from .. import ste
from ..activations import quantizers
from ..activations.lloyd import lloyd_alpha
from ..io import markdown_table
from . import SUMMARY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help=SUMMARY["info"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = []
    for name in ste.names():
        s = ste.get(name)
        params = ", ".join(f"{k}={v}" for k, v in s.params.items()) or "-"
        rows.append([name, params, s.monotone, s.zero_below, s.scale_invariant])
    print("Straight-through estimators\n")
    print(markdown_table(["STE", "parameters", "monotone", "zero for x<=0", "scale-invariant"], rows))
    print("Forward quantizers\n")
    print(markdown_table(["forward", "max bits", "definition"],
                         [[n, quantizers.get(n).max_bits, quantizers.get(n).doc] for n in quantizers.names()]))
    from .. import models
    from ..weights import quantizers as weight_quantizers

    print("Weight quantizers\n")
    print(markdown_table(["quantizer", "bits", "scale rules", "definition"],
                         [[n, f"{q.min_bits}..{q.max_bits}", ", ".join(q.rules), q.doc]
                          for n in weight_quantizers.names() for q in [weight_quantizers.get(n)]]))
    print("Models\n")
    print(markdown_table(["model", "data set", "paper epochs"],
                         [[n, models.DEFAULT_DATASET[n], models.PAPER_EPOCHS[n]] for n in models.names()]))
    print("Lloyd resolutions (half standard Gaussian, round-to-nearest)\n")
    print(markdown_table(["bits", "alpha"], [[b, f"{lloyd_alpha(b):.4f}"] for b in range(1, 9)]))
    return 0
