"""Speed and saved memory of the quantized activation op against ``torch.nn.functional.relu``.

Forward + backward (``y = f(x); y.backward(g)``) on ResNet-20-shaped activations, 2M (128x16x32x32) and 8M
(128x64x32x32) elements, in every cell of {float32, bfloat16} x {NCHW, channels_last} x {1, 2 threads}. Within a
cell the methods take turns in each repeat, in rotating order, so load on a shared machine hits all alike; each is
reported as the median (and best) of its repeats divided by relu's from the same repeats. Saved state is measured with
``torch.autograd.graph.saved_tensors_hooks``: the bytes of every tensor autograd keeps for backward, per element.

    python benchmarks/quant_op.py                   # the whole grid
    python benchmarks/quant_op.py --out runs/bench  # also write results.json and results.md there

Methods: stelab's op (2 bits, fixed alpha, STEs clipped_relu / relu / identity; the NaN check off, plus clipped_relu
with it on), a naive autograd Function that saves the input (the textbook way), and Brevitas'
``QuantReLU(bit_width=2)`` when ``import brevitas`` works (benchmark-only; never a stelab dependency).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

import stelab
from stelab.io import markdown_table, write_json, write_text

SIZES = {"2M": (128, 16, 32, 32), "8M": (128, 64, 32, 32)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
ALPHA = stelab.lloyd_alpha(2)


class NaiveQuantize(torch.autograd.Function):
    """The textbook op: alpha * clamp(ceil(x / alpha), 0, L) forward (in x's dtype), saves x, clipped-relu mask
    in backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.clamp(torch.ceil(x / ALPHA), 0, 3) * ALPHA

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) & (x <= 3 * ALPHA))


class Unfused(torch.nn.Module):
    """A learned-resolution layer forced onto the unfused autograd path (``_QuantizeLearned``), for comparison."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.layer = stelab.QuantReLU(bits=2, ste="clipped_relu", learn_alpha=True, alpha_rule=rule, check_nan=False)

    def forward(self, x):
        from stelab.activations import ops

        layer = self.layer
        return ops._QuantizeLearned.apply(x, layer.alpha, "staircase", 2, layer.ste, layer.config.alpha_rule)


class EagerSmooth(torch.autograd.Function):
    """The general path before its compiled backward: the same fused forward, ``g mu'(x)`` as a chain of PyTorch ops
    (:func:`stelab.ste.compiled.eager_product`), for comparison."""

    @staticmethod
    def forward(ctx, x, ste):
        from stelab.activations import quantizers

        ctx.ste = stelab.ste.get(ste)
        ctx.save_for_backward(x)
        return quantizers.evaluate(x, "staircase", 2, ALPHA)

    @staticmethod
    def backward(ctx, grad):
        from stelab.ste.compiled import eager_product

        (x,) = ctx.saved_tensors
        return eager_product(ctx.ste, grad, x, 3 * ALPHA), None


def learned_methods() -> dict[str, Callable]:
    """Learned resolution (fused for piecewise STEs on the CPU), the unfused path it replaced, and the general path
    (a smooth ``mu'``), each beside relu."""
    out: dict[str, Callable] = {"relu": F.relu}
    for rule in ("pact", "mean", "lsq"):
        out[f"learned {rule}"] = stelab.QuantReLU(bits=2, ste="clipped_relu", learn_alpha=True, alpha_rule=rule,
                                                  check_nan=False)
    out["learned lsq, unfused"] = Unfused("lsq")
    for ste in ("log_tailed_relu", "ede"):  # the compiled backward (stelab.ste.compiled), and the eager one it replaced
        out[f"general path ({ste})"] = stelab.QuantReLU(bits=2, ste=ste, check_nan=False)
        out[f"general path ({ste}), eager"] = lambda x, ste=ste: EagerSmooth.apply(x, ste)
    return out


def methods() -> dict[str, Callable]:
    out: dict[str, Callable] = {"relu": F.relu}
    for ste in ("clipped_relu", "relu", "identity"):
        out[f"stelab {ste}"] = stelab.QuantReLU(bits=2, ste=ste, check_nan=False)
    out["stelab clipped_relu + NaN check"] = stelab.QuantReLU(bits=2, ste="clipped_relu", check_nan=True)
    out["naive (saves fp32 x)"] = NaiveQuantize.apply
    try:
        from brevitas.nn import QuantReLU as BrevitasQuantReLU

        out["brevitas QuantReLU(bit_width=2)"] = BrevitasQuantReLU(bit_width=2)
    except Exception as err:  # noqa: BLE001 - any import problem means "not available"
        print(f"brevitas not available ({type(err).__name__}: {err}); skipping it")
    return out


def saved_bytes_per_element(fn: Callable, n: int = 1 << 16) -> float:
    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    x = torch.randn(n, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    # Only tensors of activation size count: a Brevitas scale or a 0-d constant is not per-element state.
    return sum(s for s in sizes if s >= n) / n


def time_all(fns: dict[str, Callable], shape, dtype, layout, repeats: int, clock) -> dict[str, list[float]]:
    x = torch.randn(shape).to(dtype).contiguous(memory_format=layout).requires_grad_(True)
    grad = torch.randn(shape).to(dtype).contiguous(memory_format=layout)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: first-call allocations, kernel build, lazy initialisation
        fn(x).backward(grad)
    names = list(fns)
    for r in range(repeats):
        # Rotate who goes first: the method right after another one's frees pays for its page faults, which at
        # these sizes is a 20% effect by itself.
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[name]
            x.grad = None
            start = clock()
            fn(x).backward(grad)
            samples[name].append(clock() - start)
    return samples


def run_grid(fns, threads: list[int], repeats: dict[str, int], clock) -> dict[str, dict]:
    cells = {}
    grid = [(t, d, lay, size) for t in threads for d in DTYPES for lay in LAYOUTS for size in SIZES]
    for t, d, lay, size in tqdm(grid, desc="cells"):
        torch.set_num_threads(t)
        samples = time_all(fns, SIZES[size], DTYPES[d], LAYOUTS[lay], repeats[size], clock)
        med = {name: statistics.median(v) for name, v in samples.items()}
        best = {name: min(v) for name, v in samples.items()}
        cells[f"{d} {lay} {size} {t}t"] = {"relu_ms": 1e3 * med["relu"],
                                           "median_ratio": {n: med[n] / med["relu"] for n in fns},
                                           "best_ratio": {n: best[n] / best["relu"] for n in fns}}
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, nargs=2, default=[40, 12], metavar=("R2M", "R8M"))
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: CPU time of this process (user + system, so page faults "
                             "count), which other processes on a shared machine disturb far less")
    parser.add_argument("--out", default=None, help="folder for results.json and results.md (optional)")
    parser.add_argument("--learned", action="store_true",
                        help="the learned-resolution and general-path methods instead of the fixed ones")
    args = parser.parse_args(argv)
    fns = learned_methods() if args.learned else methods()
    load_before = os.getloadavg()[0]
    saved = {name: saved_bytes_per_element(fn) for name, fn in fns.items()}
    cells = run_grid(fns, args.threads, dict(zip(SIZES, args.repeats)), CLOCKS[args.clock])
    text = (f"torch {torch.__version__}, {os.cpu_count()} CPUs, {platform.machine()}, {args.clock} clock, 1-min load "
            f"average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; stelab op backend: "
            f"{stelab.kernels.backend(torch.zeros(1))}. Forward + backward time / relu's, median of the repeats "
            "(best in brackets); relu's own median in the last row.\n\n")
    names = [n for n in fns if n != "relu"]
    rows = [[n, *(f"{c['median_ratio'][n]:.2f}x ({c['best_ratio'][n]:.2f})" for c in cells.values()),
             f"{saved[n]:g}"] for n in names]
    rows.append(["relu (ms)", *(f"{c['relu_ms']:.3f}" for c in cells.values()), f"{saved['relu']:g}"])
    # One table per thread count keeps the width readable.
    for t in args.threads:
        keep = [i for i, k in enumerate(cells) if k.endswith(f" {t}t")]
        headers = ["method", *(list(cells)[i].rsplit(" ", 1)[0] for i in keep), "saved B/elem"]
        text += f"**{t} thread{'s' if t > 1 else ''}**\n\n"
        text += markdown_table(headers, [[r[0], *(r[1 + i] for i in keep), r[-1]] for r in rows]) + "\n"
    print(text)
    if args.out:
        write_json(f"{args.out}/results.json", {"threads": args.threads, "repeats": args.repeats, "clock": args.clock,
                                                "cells": cells, "saved_bytes_per_element": saved})
        write_text(f"{args.out}/results.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
