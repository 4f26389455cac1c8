"""Memory saved for backward in one training step, float vs quantized vs quantized with ``stelab.PackSaved`` (packed)
and with ``stelab.PackSaved(recompute=True)`` (recomputed).

For each model and configuration: the bytes autograd keeps for the backward of one SGD step (distinct storages of
the saved tensors, counted by a ``torch.autograd.graph.saved_tensors_hooks`` meter, and for the packed variant the
packed codes instead of the tensors they replace; on CUDA also the allocator's peak over the step), the step time
of each variant (steps interleaved, median over rounds of the per-round ratio to the unpacked quantized step), and
the largest batch whose saved tensors fit ``--budget-gib`` (saved bytes are affine in the batch: measured at the
batch and half of it). Bit-identity of the packed step is a test (tests/test_pack.py), not measured here.

    python benchmarks/saved_memory.py --out runs/bench-saved-memory
    python benchmarks/saved_memory.py --models resnet20 --configs fp32-cl --learned pact   # a learned resolution
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

import stelab
from stelab.io import markdown_table, write_json, write_text
from stelab.models import DEFAULT_DATASET, build

CONFIGS = {"fp32-nchw": ("fp32", False), "fp32-cl": ("fp32", True), "bf16-nchw": ("bf16", False),
           "bf16-cl": ("bf16", True)}
SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
VARIANTS = ("float", "quantized", "packed", "recomputed", "recomputed-limit")


class Meter:
    """Saved-tensor hooks that count the distinct storages autograd keeps (what the packed variant's stats count),
    and among them the model's parameters (which exist whether or not autograd saves them)."""

    def __init__(self, params: set[int] = frozenset()) -> None:
        self.storages: set[int] = set()
        self.params = params
        self.saved_bytes = self.param_bytes = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.storages:
            self.storages.add(storage.data_ptr())
            self.saved_bytes += storage.nbytes()
            if storage.data_ptr() in self.params:
                self.param_bytes += storage.nbytes()
        return t


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "vgg11"])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["fp32-cl", "bf16-cl"])
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--ste", default="clipped_relu")
    p.add_argument("--learned", default=None, metavar="RULE",
                   help="quantized variants with a learned resolution by RULE (mean, ae, pact, min, lsq)")
    p.add_argument("--recompute-limit", type=int, default=300,
                   help="multiply-adds per output element of the convolutions the recomputed-limit variant recomputes")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget-gib", type=float, default=4.0, help="memory budget for the saved tensors")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def make_model(name: str, variant: str, args: argparse.Namespace, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    learned = {"learn_alpha": True, "alpha_rule": args.learned} if args.learned else {}
    quant = None if variant == "float" else stelab.QuantConfig(bits=args.bits, ste=args.ste, check_nan=False,
                                                               **learned)
    return build(name, quant, channels_last=channels_last).to(args.device)


def step(model, opt, packer, x, y, precision: str) -> tuple[int, int | None, int]:
    """One SGD step; (bytes saved for backward, CUDA allocator peak over the step or None, bytes of parameters among
    the saved ones, counted without packing only)."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    meter = Meter({p.untyped_storage().data_ptr() for p in model.parameters()})
    hooks = packer if packer is not None else torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda t: t)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"), hooks:
        loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    saved = packer.last.saved_bytes if packer is not None else meter.saved_bytes
    if cuda:
        torch.cuda.synchronize()
        return saved, torch.cuda.max_memory_allocated() - base, meter.param_bytes
    return saved, None, meter.param_bytes


def batch(dataset: str, n: int, device: str, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, *SHAPES[dataset], device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (n,), device=device)


def bench_config(name: str, config: str, args: argparse.Namespace) -> list[dict]:
    precision, cl = CONFIGS[config]
    dataset = DEFAULT_DATASET[name]
    runs = {}
    for v in VARIANTS:
        model = make_model(name, v, args, cl)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        packer = None
        if v != "float" and v != "quantized":
            packer = stelab.PackSaved(model, recompute=v.startswith("recomputed"),
                                      recompute_limit=args.recompute_limit if v == "recomputed-limit" else None)
        runs[v] = (model, opt, packer)
    xs = {n: batch(dataset, n, args.device, cl) for n in (args.batch_size, max(1, args.batch_size // 2))}
    memory = {}
    params = step(*runs["float"], *xs[args.batch_size], precision)[2]  # what PackSaved passes through untouched
    for v, (model, opt, packer) in runs.items():
        half = step(model, opt, packer, *xs[max(1, args.batch_size // 2)], precision)[0]
        full, peak, _ = step(model, opt, packer, *xs[args.batch_size], precision)
        per_image = (full - half) / (args.batch_size - max(1, args.batch_size // 2) or 1)
        memory[v] = (full, peak, per_image, full - per_image * args.batch_size)
    seconds = {v: [] for v in VARIANTS}
    x, y = xs[args.batch_size]
    for _ in range(args.rounds):
        spent = dict.fromkeys(VARIANTS, 0.0)
        for i in range(args.steps):
            k = i % len(VARIANTS)
            for v in VARIANTS[k:] + VARIANTS[:k]:  # interleaved, rotating who goes first
                t0 = time.perf_counter()
                step(*runs[v], x, y, precision)
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                spent[v] += time.perf_counter() - t0
        for v in VARIANTS:
            seconds[v].append(spent[v])
    budget = args.budget_gib * 2**30
    rows = []
    for v in VARIANTS:
        full, peak, per_image, fixed = memory[v]
        rows.append({"model": name, "config": config, "variant": v, "saved_bytes": full, "cuda_peak_bytes": peak,
                     "saved_vs_float": full / memory["float"][0], "param_bytes": params,
                     "activations_vs_float": (full - params) / (memory["float"][0] - params),
                     "time_vs_quantized": statistics.median(a / b for a, b in zip(seconds[v], seconds["quantized"])),
                     "step_s": statistics.median(seconds[v]) / args.steps,
                     "max_batch": int((budget - fixed) // per_image) if per_image > 0 else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for name in args.models for config in args.configs for r in bench_config(name, config, args)]
    table = markdown_table(
        ["model", "configuration", "variant", "saved MB", "x float", "x float w/o params", "step ms",
         "x quantized step",
         f"max batch in {args.budget_gib:g} GiB"] + (["CUDA peak MB"] if args.device.startswith("cuda") else []),
        [[r["model"], r["config"], r["variant"], f"{r['saved_bytes'] / 1e6:.1f}", f"{r['saved_vs_float']:.2f}",
          f"{r['activations_vs_float']:.2f}", f"{1e3 * r['step_s']:.0f}", f"{r['time_vs_quantized']:.2f}",
          r["max_batch"]]
         + ([f"{r['cuda_peak_bytes'] / 1e6:.1f}"] if args.device.startswith("cuda") else []) for r in rows])
    header = (f"saved_memory on {args.device} ({torch.get_num_threads()} threads), batch {args.batch_size}, "
              f"{args.bits}-bit {args.ste}" + (f", learned resolution ({args.learned})" if args.learned else "")
              + f", median of {args.rounds} interleaved rounds of {args.steps} steps; "
              f"recomputed-limit: convolutions of at most {args.recompute_limit} multiply-adds per element\n\n")
    print("\n" + header + table)
    env = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "python": sys.version.split()[0]}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/bench-saved-memory-{stamp}")
    write_json(out / "results.json", {"env": env, "args": vars(args), "rows": rows})
    write_text(out / "results.md", header + table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
