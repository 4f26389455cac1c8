"""Does holding BN2's scale fixed let the identity STE train ResNet-20 at 2 bits? (REPRODUCTION.md, "a runaway
scale"; issue 19.) Two 5-epoch identity cells from the committed seed-0 float network, the same in everything
(fp32, lr 0.01 cosine, wd 5e-4, seed 0, so the same data order) but one: in "held" every BN2 scale is put back to
the float network's value after every optimizer step. Writes each run to runs/bn2-hold/<name>/ and the comparison
to summary.md and summary.json beside this file.

    python results/table1-cifar10-resnet20/bn2-hold/run.py [--epochs 5]   (about 11 min a run on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
from pathlib import Path

import torch

from stelab.train import read_config
from stelab.train.checkpoint import read_weights
from stelab.train.evaluation import right_or_recorded
from stelab.train.loop import train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
FLOAT = "results/table1-cifar10-resnet20/seed0/float"
CELL = "results/table1-cifar10-resnet20/long60/seed0/2bit-identity"  # its config: fp32 cell, identity, 2 bits


class HoldBN2Scale:
    """After every optimizer step, every ``*.bn2.weight`` back to the float network's value."""

    every = 1

    def __init__(self) -> None:
        state, _ = read_weights(ROOT / FLOAT)
        self.values = {k: v.float() for k, v in state.items() if k.endswith("bn2.weight")}

    def __call__(self, *, model, **_) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in self.values.items():
                params[k].copy_(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--limit-train", type=int, default=0, help="the first N training images only (a quick check)")
    p.add_argument("--out", default="runs/bn2-hold", help="where the two runs go (default runs/bn2-hold)")
    args = p.parse_args()
    spec = importlib.util.spec_from_file_location("weight_growth", ROOT / "scripts" / "weight_growth.py")
    growth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(growth)
    base = read_config(ROOT / CELL)
    rows = []
    for name, hooks in (("free", []), ("held", [HoldBN2Scale()])):
        out = Path(args.out) / name
        config = dataclasses.replace(base, epochs=args.epochs, init=FLOAT, out=str(out), limit_train=args.limit_train)
        summary = train(config, hooks, resume=(out / "config.json").is_file())
        right, _, _ = right_or_recorded(out)
        row = {"run": name, "status": summary["status"], "train_loss": summary["train_loss"],
               "test_acc": summary["test_acc"], "test_acc_first_1000": float(right[:1000].float().mean())}
        row.update({k: v for k, v in growth.measure(str(out), 1280).items() if k not in ("run", "bits", "ste")})
        rows.append(row)
    print(growth.table(rows))
    if args.limit_train:
        print(f"--limit-train {args.limit_train}: a quick check, so {HERE / 'summary.md'} is left as it was")
        return
    (HERE / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    (HERE / "summary.md").write_text(f"# ResNet-20, 2-bit identity, {args.epochs} epochs: BN2 scale free or held\n\n"
                                     + growth.table(rows) + "\n")


if __name__ == "__main__":
    main()
