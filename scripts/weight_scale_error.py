"""How much of a trained network's weights each weight quantizer and scale rule keeps, before any training.

    python scripts/weight_scale_error.py RUN_DIR [--bits 2 3 4 8] [--granularity channel]

For every Conv2d/Linear weight but the first and last (the layers stelab keeps float by default), quantizes the
float weights of RUN_DIR's last checkpoint and prints, pooled over those layers, the relative squared error
``sum (w - Q(w))^2 / sum w^2`` and the fraction of weights sent to 0, for

- ``uniform`` and ``midrise`` (no zero level, all ``2^b`` codes) with the ``max`` rule (``s = max|w| / Q_P``) and
  with LSQ's initial step (``2 mean|w| / sqrt(Q_P)``, where the ``lsq`` rule starts before it learns),
- the least-squares step of each channel (or tensor), found by a dense search over ``s`` in
  ``(0, max|w| / Q_P]`` (the reference no data rule can beat),
- and, for comparison at 2 bits, ``ternary`` (TWN) and at 1 bit ``binary``.

Used in docs/weights.md to choose the scale rule of the weight-quantized Table 1 runs.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from stelab.train import load_model_from_run
from stelab.weights import quantizers as wq

GRID = 2000  # candidate steps of the dense least-squares search, per channel


def layers(model: nn.Module) -> list[torch.Tensor]:
    """The weights of every Conv2d/Linear but the first and the last, in module order."""
    found = [m.weight.detach().float() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return found[1:-1]


def codes_error(w: torch.Tensor, q: wq.WeightQuantizer, scale: torch.Tensor, bits: int, gran: str):
    k = q.codes(w, scale, bits, gran)
    return float(((w - scale * k) ** 2).sum()), float((k == 0).sum())


def best_step(w: torch.Tensor, q: wq.WeightQuantizer, bits: int, gran: str) -> tuple[float, float]:
    """The least-squares error of ``q``'s codes with the best step per channel (dense search) and its zeros."""
    flat = w.reshape(w.shape[0], -1) if gran == "channel" else w.reshape(1, -1)
    top = flat.abs().amax(1, keepdim=True) / q.q_max(bits)
    err, zeros = 0.0, 0.0
    for row, t in zip(flat, top):
        steps = torch.linspace(1.0 / GRID, 1.0, GRID).unsqueeze(1) * t  # (GRID, 1)
        k = q.codes(row.unsqueeze(0), steps, bits, "tensor")
        e = ((row.unsqueeze(0) - steps * k) ** 2).sum(1)
        i = int(e.argmin())
        err, zeros = err + float(e[i]), zeros + float((k[i] == 0).sum())
    return err, zeros


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 8])
    p.add_argument("--granularity", default="channel", choices=wq.GRANULARITIES)
    args = p.parse_args()
    ws, gran = layers(load_model_from_run(args.run_dir)), args.granularity
    norm, count = sum(float((w**2).sum()) for w in ws), sum(w.numel() for w in ws)
    print(f"{len(ws)} layers, {count} weights, granularity {gran}\n")
    print("| quantizer | bits | scale | rel. squared error | zeros |\n|---|---|---|---|---|")

    def row(name: str, bits: int, label: str, parts) -> None:
        err, zeros = (sum(x) for x in zip(*parts))
        print(f"| {name} | {bits} | {label} | {err / norm:.4f} | {zeros / count:.1%} |")

    for bits in args.bits:
        for name in ("uniform", "midrise"):
            q = wq.get(name)
            if not q.min_bits <= bits <= q.max_bits:
                continue
            row(name, bits, "max", [codes_error(w, q, q.data_scale(w, bits, gran, "max"), bits, gran) for w in ws])
            row(name, bits, "LSQ initial step", [codes_error(w, q, q.data_scale(w, bits, gran, "lsq"), bits, gran)
                                                 for w in ws])
            row(name, bits, "least squares (search)", [best_step(w, q, bits, gran) for w in ws])
        if bits == 2:
            ternary = wq.get("ternary")
            row("ternary", 2, "TWN", [codes_error(w, ternary, ternary.data_scale(w, 2, gran, "mean"), 2, gran)
                                      for w in ws])
    binary = wq.get("binary")
    row("binary", 1, "mean|w|", [codes_error(w, binary, binary.data_scale(w, 1, gran, "mean"), 1, gran) for w in ws])


if __name__ == "__main__":
    main()
