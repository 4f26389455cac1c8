"""Training throughput (images/s) of each model with quantized activations beside its float twin.

One SGD step (momentum 0.9, weight decay 1e-4) = forward, cross-entropy, backward, update, on synthetic batches
that already sit on the device (the data pipeline is not timed). The variants of a model take turns step by step
(float, quant-relu, quant-clipped, float, ...), so a change in machine load hits them all alike; each round sums
every variant's step times, the ratio quantized/float is taken within each round and its median reported.

Each model runs in every configuration of ``--configs`` (precision x memory format: ``fp32-nchw``, ``fp32-cl``,
``bf16-nchw``, ``bf16-cl``; bf16 = ``torch.autocast``), and every quantized variant is compared with the float
model of its own configuration (``x float``) and with the *fastest* float configuration of the same round
(``x best float``): quantized training is as fast as float training only if it is fast where float is fastest.

With ``--weight-bits B`` (default 2; 0 = off) every activation variant also runs as W<B>A<bits>: the weights of
every Linear/Conv2d but the first and last (the layers ``stelab train --weight-bits`` quantizes) uniform at B bits,
one scale per output channel, identity STE (the ``stelab train --weight-bits B`` defaults). With ``--learned RULE
...`` each STE also runs as the practitioners' W<B>A<bits>: a learned activation resolution with that rule
(``--learn-alpha --alpha-rule RULE``) and LSQ weight steps (``--weight-scale-rule lsq``).

    python benchmarks/train_step.py                       # all models, CPU, all four configurations
    python benchmarks/train_step.py --models resnet20 --device cuda --steps 50 --configs bf16-cl fp32-cl
    python benchmarks/train_step.py --threads 1 --check-nan both   # quantized with and without the NaN scan
    python benchmarks/train_step.py --models resnet20 --configs fp32-cl fp32-nchw --learned pact lsq
    python benchmarks/train_step.py --models lenet5 --steps 1 --rounds 1 --warmup 0 --vgg-steps 1   # smoke test
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import stelab
from stelab.data import STATS, DeviceLoader, synthetic
from stelab.io import markdown_table, write_json, write_text
from stelab.models import DEFAULT_DATASET, build
from stelab.train import TrainConfig
from stelab.train.quant_weights import quantize_run_weights
from stelab.weights import WeightQuantConfig

CONFIGS = {"fp32-nchw": ("fp32", False), "fp32-cl": ("fp32", True), "bf16-nchw": ("bf16", False),
           "bf16-cl": ("bf16", True)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=stelab.models.names(), choices=stelab.models.names())
    p.add_argument("--bits", type=int, default=2)
    p.add_argument("--stes", nargs="+", default=["clipped_relu"])
    p.add_argument("--weight-bits", type=int, default=2,
                   help="also time W<B>A<bits> variants: uniform per-channel weights, identity STE (0: off)")
    p.add_argument("--learned", nargs="*", default=[], metavar="RULE",
                   help="also time W<B>A<bits> with a learned activation resolution by RULE and LSQ weight steps")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                   help="precision-layout configurations (default: all four)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    p.add_argument("--vgg-steps", type=int, default=4, help="timed steps per round for vgg11 (slow on CPU)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the first round")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--check-nan", choices=["on", "off", "both"], default="on",
                   help="QuantConfig.check_nan of the quantized variants (the library default is on)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every model (use with --check-nan off: the NaN scan breaks the graph)")
    p.add_argument("--out", default=None, help="run folder for results.json/results.md (default runs/bench-...)")
    return p.parse_args(argv)


def make_batches(dataset: str, batch_size: int, device: str, channels_last: bool, count: int = 4):
    images, labels = synthetic(dataset, batch_size * count, seed=0)
    mean, std = STATS[dataset]
    loader = DeviceLoader(images, labels, batch_size=batch_size, shuffle=True, augment=dataset == "cifar10",
                          mean=mean, std=std, device=device, channels_last=channels_last)
    return list(loader)


class Variant:
    def __init__(self, label: str, model: nn.Module, device: str, config: str, compile: bool = False) -> None:
        self.label, self.config = label, config
        self.batches_key = CONFIGS[config][1]
        self.autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                                       enabled=CONFIGS[config][0] == "bf16")
        model = model.to(device).train()
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.model = torch.compile(model) if compile else model
        self.loss_fn = nn.CrossEntropyLoss()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(variant: Variant, batches, steps: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        variant.step(*batches[i % len(batches)])
    sync(device)
    return time.perf_counter() - start


def build_variants(name: str, args: argparse.Namespace) -> list[Variant]:
    torch.manual_seed(0)
    float_model = build(name)
    checks = {"on": [True], "off": [False], "both": [True, False]}[args.check_nan]
    variants = []
    for config in args.configs:
        cl = CONFIGS[config][1]
        fm = build(name, channels_last=cl)
        fm.load_state_dict(float_model.state_dict())
        variants.append(Variant(f"{config} float", fm, args.device, config, args.compile))
        for ste in args.stes:
            for check in checks:
                model = build(name, stelab.QuantConfig(bits=args.bits, ste=ste, check_nan=check), channels_last=cl)
                model.load_state_dict(float_model.state_dict())  # the same weights: a quantized twin
                label = f"{config} {args.bits}-bit {ste}" + ("" if check else ", no NaN check")
                variants.append(Variant(label, model, args.device, config, args.compile))
                if args.weight_bits:
                    label = f"{config} W{args.weight_bits}A{args.bits} {ste}" + ("" if check else ", no NaN check")
                    model = weight_twin(name, model, args.weight_bits, cl)
                    variants.append(Variant(label, model, args.device, config, args.compile))
                for rule in args.learned:
                    quant = stelab.QuantConfig(bits=args.bits, ste=ste, check_nan=check, learn_alpha=True,
                                               alpha_rule=rule)
                    model = build(name, quant, channels_last=cl)
                    model.load_state_dict(float_model.state_dict())  # alpha keeps its initial value
                    model = weight_twin(name, model, args.weight_bits or args.bits, cl, scale_rule="lsq")
                    label = (f"{config} W{args.weight_bits or args.bits}A{args.bits} {ste}, learned {rule}, lsq "
                             "weights" + ("" if check else ", no NaN check"))
                    variants.append(Variant(label, model, args.device, config, args.compile))
    return variants


def weight_twin(name: str, model: nn.Module, bits: int, channels_last: bool, scale_rule: str | None = None
                ) -> nn.Module:
    """A copy of ``model`` with the weights ``stelab train --weight-bits bits`` quantizes (first and last layers
    float), in the memory format asked for (the quantized layers are new modules, created contiguous)."""
    weights = WeightQuantConfig(bits=bits, **({"scale_rule": scale_rule} if scale_rule else {}))
    config = TrainConfig(model=name, dataset=DEFAULT_DATASET[name], weights=weights)
    twin = quantize_run_weights(copy.deepcopy(model), config)
    return twin.to(memory_format=torch.channels_last) if channels_last else twin


def bench_model(name: str, args: argparse.Namespace, bar: tqdm) -> list[dict]:
    dataset = DEFAULT_DATASET[name]
    batches = {cl: make_batches(dataset, args.batch_size, args.device, cl) for cl in (False, True)}
    variants = build_variants(name, args)
    steps = args.vgg_steps if name == "vgg11" else args.steps
    for v in variants:
        time_steps(v, batches[v.batches_key], args.warmup, args.device)
    seconds: dict[str, list[float]] = {v.label: [] for v in variants}
    for _ in range(args.rounds):
        spent = dict.fromkeys(seconds, 0.0)
        for i in range(steps):  # alternate variants step by step, so load changes hit every variant alike
            for v in variants[i % len(variants):] + variants[:i % len(variants)]:  # and rotate who goes first
                spent[v.label] += time_steps(v, batches[v.batches_key][i % 4:], 1, args.device)
        for label, t in spent.items():
            seconds[label].append(t)
        bar.update(len(variants))
    images = steps * args.batch_size
    floats = [v.label for v in variants if v.label.endswith(" float")]
    best_float = [min(seconds[f][r] for f in floats) for r in range(args.rounds)]
    rows = []
    for v in variants:
        own = [f / q for f, q in zip(seconds[f"{v.config} float"], seconds[v.label])]  # time ratio = speed ratio
        best = [f / q for f, q in zip(best_float, seconds[v.label])]
        rows.append({"model": name, "config": v.config, "variant": v.label, "steps_per_round": steps,
                     "seconds": seconds[v.label], "images_per_s": images / statistics.median(seconds[v.label]),
                     "ratio_vs_float": statistics.median(own), "ratio_vs_best_float": statistics.median(best)})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    per_config = 1 + len(args.stes) * (2 if args.check_nan == "both" else 1) * (
        1 + bool(args.weight_bits) + len(args.learned))
    total = len(args.models) * len(args.configs) * per_config * args.rounds
    with tqdm(total=total, desc="train_step", unit="timing") as bar:
        rows = [row for name in args.models for row in bench_model(name, args, bar)]
    env = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "batch_size": args.batch_size, "rounds": args.rounds, "configs": args.configs,
           "compile": args.compile, "check_nan": args.check_nan, "weight_bits": args.weight_bits,
           "python": sys.version.split()[0],
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    table = markdown_table(["model", "configuration, activations", "images/s", "x float", "x best float"],
                           [[r["model"], r["variant"], f"{r['images_per_s']:.1f}", f"{r['ratio_vs_float']:.2f}",
                             f"{r['ratio_vs_best_float']:.2f}"] for r in rows])
    header = (f"train_step on {env['gpu'] or 'CPU'} ({env['threads']} threads), batch {args.batch_size}, "
              f"median of {args.rounds} interleaved rounds (cl = channels_last, bf16 = autocast), "
              f"compile={args.compile}, check_nan={env['check_nan']}\n\n")
    print("\n" + header + table)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/bench-train-step-{stamp}")
    write_json(out / "results.json", {"env": env, "args": vars(args), "rows": rows})
    write_text(out / "results.md", header + table)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
