"""Where a quantized fine-tuning run starts: a float run's weights with quantized activations, before any step.

    python scripts/quantized_start.py RUN_DIR [--bits 2 4] [--forward staircase round] [--images 1280]
        [--precision bf16]

Prints the training-mode loss and accuracy (batch statistics, as in the first training step; no augmentation) on the
first ``--images`` training images, for the float model and for each bit width (clipped-relu STE; the STE plays no
part in a forward pass), with each ``--forward`` quantizer at its default resolution. Used in REPRODUCTION.md to
tell "thrown out of the float minimum" from "never recovered from the quantization", and in docs/quantizers.md to
compare the staircase with round.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import stelab
from stelab import data, models
from stelab.train import load_weights, read_config
from stelab.train.loop import autocast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 4])
    p.add_argument("--forward", nargs="+", default=["staircase"], help="forward quantizers to compare")
    p.add_argument("--images", type=int, default=1280)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    args = p.parse_args()
    run = read_config(args.run_dir)
    images, labels = data.load(run.dataset, run.data_dir, split="train")
    mean, std = data.STATS[run.dataset]
    for bits, forward in [(None, None)] + [(b, f) for b in args.bits for f in args.forward]:
        model = models.build(run.model, None if bits is None else stelab.QuantConfig(bits=bits, forward=forward))
        load_weights(model, args.run_dir)
        model.train()  # batch statistics, as the first training step sees them
        loss = correct = 0.0
        with torch.no_grad(), autocast(torch.device("cpu"), args.precision):
            for i in range(0, args.images, args.batch_size):
                x = data.normalise(images[i:i + args.batch_size], mean, std)
                out = model(x).float()
                loss += nn.functional.cross_entropy(out, labels[i:i + args.batch_size], reduction="sum").item()
                correct += (out.argmax(1) == labels[i:i + args.batch_size]).sum().item()
        n = min(args.images, len(images))
        name = "float" if bits is None else f"{bits}-bit {forward}"
        print(f"{name}: loss {loss / n:.3f}, accuracy {100 * correct / n:.1f} %")


if __name__ == "__main__":
    main()
