"""How far a ResNet's weights and its quantizers' inputs have run from the staircase: one row per run folder.

    python scripts/weight_growth.py RUN_DIR [RUN_DIR ...] [--images 1280] [--json OUT.json]

Per run (its ``model.pt`` or last checkpoint): the largest affine batch-norm scale ``max |gamma|`` (ResNet-20's BN2,
before the residual sum), the norm of all conv weights, and, in training mode (batch statistics, as training sees
them) on the first ``--images`` training images, where the inputs ``x`` of the quantized activations fall relative
to the staircase's range ``L alpha`` (``L = 2^bits - 1``): the share with ``|x| > 10 L alpha`` ("far": so far past
the ends of the staircase that a small step of the weights changes no output) and the median ``|x| / (L alpha)``,
separately for the quantizers after a BN without affine parameters ("standardised") and for those after BN2 and
the residual sum ("block outputs"). Used in REPRODUCTION.md for the runaway scale of the failing ResNet-20 cells.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import nn

from stelab import QuantReLU, data
from stelab.train import read_config
from stelab.train.runs import build_model


def quantizer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Each quantizer's input ``|x| / (L alpha)`` for one batch, grouped as in the module docstring."""
    seen: dict[str, list[torch.Tensor]] = {"standardised": [], "block outputs": []}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, QuantReLU):
            group = "block outputs" if name.endswith(".act") else "standardised"
            span = (2 ** m.bits - 1) * m.current_alpha()
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, g=group, s=span: seen[g].append(inp[0].detach().abs().flatten() / s)))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def measure(run_dir: str, images: int, batch: int = 256) -> dict:
    config = read_config(run_dir)
    model = build_model(config, init=run_dir)
    model.train()  # batch statistics, as in training
    state = model.state_dict()
    gammas = [m.weight.detach().abs().max() for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    row = {"run": run_dir, "bits": config.quant.bits if config.quant else None,
           "ste": config.quant.ste if config.quant else None,
           "max_bn_gamma": float(max(gammas)) if gammas else None,
           "conv_weight_norm": math.sqrt(sum(float(v.norm()) ** 2 for v in state.values() if v.dim() == 4))}
    train_x, _ = data.load(config.dataset, config.data_dir, split="train")
    mean, std = data.STATS[config.dataset]
    groups: dict[str, list[torch.Tensor]] = {"standardised": [], "block outputs": []}
    with torch.no_grad():
        for i in range(0, images, batch):
            for g, values in quantizer_inputs(model, data.normalise(train_x[i:i + batch], mean, std)).items():
                groups[g] += values
    for g, values in groups.items():
        if values:
            v = torch.cat(values)
            row[f"{g}: far"] = float((v > 10).float().mean())
            row[f"{g}: median"] = float(v.median())
    return row


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table; a float run has no quantizer columns (blank)."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "run"))
    lines = ["| run | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append(f"| {r['run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--images", type=int, default=1280)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    rows = [measure(r, args.images) for r in args.run_dirs]
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
