"""Keep a trained run's weights as the small file a later session starts from: ``model.pt`` (the state dict only,
optionally in float16), beside the run's ``config.json`` and ``results.json``; ``stelab train --init FOLDER/model.pt``
and ``reproduce table1`` cells start from it.

    python scripts/save_start_weights.py RUN_DIR OUT_DIR [--half]

``--half`` stores floating-point tensors in float16 (half the size; VGG-11's 9.2 M weights take 18 MB instead of
37 MB). The script then evaluates the restored model on the run's test set beside the original and prints both, so
the rounding's effect is measured, not assumed.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import torch

from stelab import data
from stelab.io import save_torch
from stelab.train import load_model_from_run, read_config
from stelab.train.checkpoint import load_state
from stelab.train.loop import autocast
from stelab.train.runs import build_model


def accuracy(model, config, n: int | None = None) -> float:
    images, labels = data.load(config.dataset, config.data_dir, split="test")
    images, labels = (images[:n], labels[:n]) if n else (images, labels)
    mean, std = data.STATS[config.dataset]
    correct = 0
    with torch.no_grad(), autocast(torch.device("cpu"), config.precision):
        for i in range(0, len(images), 1000):
            out = model(data.normalise(images[i:i + 1000], mean, std))
            correct += int((out.argmax(1) == labels[i:i + 1000]).sum())
    return correct / len(images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--half", action="store_true")
    args = p.parse_args()
    config = read_config(args.run_dir)
    model = load_model_from_run(args.run_dir)
    state = model.state_dict()
    if args.half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    save_torch(args.out / "model.pt", state)
    for name in ("config.json", "results.json"):
        shutil.copy(args.run_dir / name, args.out / name)
    restored = build_model(config)
    load_state(restored, torch.load(args.out / "model.pt", weights_only=True), args.out / "model.pt")
    restored.eval()
    digest = hashlib.sha256((args.out / "model.pt").read_bytes()).hexdigest()
    print(f"{args.out / 'model.pt'}: {(args.out / 'model.pt').stat().st_size / 2**20:.1f} MiB, sha256 {digest}")
    for n in (1000, None):
        print(f"test accuracy ({n or 'all'} images): run {accuracy(model, config, n):.4f}, "
              f"saved {accuracy(restored, config, n):.4f}")


if __name__ == "__main__":
    main()
