"""Speed and saved memory of the quantized activation op against ``torch.nn.functional.relu``.

For fp32 tensors of 64K, 1M and 8M elements it times forward + backward (``y = f(x); y.backward(g)``) of every
method, interleaved within each repeat so that load on a shared machine hits all of them alike, and reports the
median as a ratio to relu's median from the same repeats (and the best of the repeats, which other processes on a
shared machine disturb less). Saved state is measured with
``torch.autograd.graph.saved_tensors_hooks``: the bytes of every tensor autograd keeps for backward, per element.

    python benchmarks/quant_op.py                 # 2 threads, the default repeats
    python benchmarks/quant_op.py --out runs/bench  # also write results.json and results.md there

Methods: stelab's op (2 bits, fixed alpha, STEs relu / clipped_relu / identity; NaN check off, plus clipped_relu
with the check on), a naive autograd Function that saves the fp32 input (the textbook way), and Brevitas'
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

SIZES = {"64K": 1 << 16, "1M": 1 << 20, "8M": 1 << 23}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
ALPHA = stelab.lloyd_alpha(2)


class NaiveQuantize(torch.autograd.Function):
    """The textbook op: alpha * clamp(ceil(x / alpha), 0, L) forward, saves x, clipped-relu mask in backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.clamp(torch.ceil(x / ALPHA), 0, 3) * ALPHA

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) & (x <= 3 * ALPHA))


def methods() -> dict[str, Callable]:
    out: dict[str, Callable] = {"relu": F.relu}
    for ste in ("relu", "clipped_relu", "identity"):
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


def time_all(fns: dict[str, Callable], n: int, repeats: int, clock: Callable[[], float]) -> dict[str, list[float]]:
    x = torch.randn(n, requires_grad=True)
    grad = torch.randn(n)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: first-call allocations and lazy initialisation
        fn(x).backward(grad)
    for _ in tqdm(range(repeats), desc=f"{n} elements", leave=False):
        for name, fn in fns.items():
            x.grad = None
            start = clock()
            fn(x).backward(grad)
            samples[name].append(clock() - start)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, nargs=3, default=[300, 60, 15], metavar=("R64K", "R1M", "R8M"))
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: CPU time of this process (user + system, so page faults "
                             "count), which other processes on a shared machine disturb far less")
    parser.add_argument("--out", default=None, help="folder for results.json and results.md (optional)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fns = methods()
    load_before = os.getloadavg()[0]
    saved = {name: saved_bytes_per_element(fn) for name, fn in fns.items()}
    clock = CLOCKS[args.clock]
    samples = {label: time_all(fns, n, r, clock) for (label, n), r in zip(SIZES.items(), args.repeats)}
    stats = {"median": statistics.median, "best": min}
    summary = {kind: {label: {name: f(s) for name, s in by_name.items()} for label, by_name in samples.items()}
               for kind, f in stats.items()}
    relu_ms = ", ".join(f"{label}: {1e3 * summary['median'][label]['relu']:.3f} ms" for label in SIZES)
    text = (f"torch {torch.__version__}, {args.threads} threads ({os.cpu_count()} CPUs), {platform.machine()}, "
            f"{args.clock} clock, "
            f"1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; median forward+backward "
            f"time of relu: {relu_ms}\n\n")
    for kind in stats:
        rows = [[name, *(f"{summary[kind][label][name] / summary[kind][label]['relu']:.2f}x" for label in SIZES),
                 f"{saved[name]:g}"] for name in fns]
        headers = ["method", *(f"{label} / relu ({kind})" for label in SIZES), "saved bytes/element"]
        text += markdown_table(headers, rows) + "\n"
    print(text)
    if args.out:
        write_json(f"{args.out}/results.json", {"threads": args.threads, "repeats": args.repeats, "clock": args.clock,
                                                "seconds": summary, "saved_bytes_per_element": saved})
        write_text(f"{args.out}/results.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
