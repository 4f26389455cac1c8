"""One ResNet-20 training step (batch 128, SGD, float32 channels_last, synthetic data) float vs 2-bit activations
with a fixed resolution, a learned one on the fused CPU op, and a learned one forced onto the unfused autograd path
it replaced; variants interleaved in rotating order, 3 rounds of 3 timed steps after one warm-up round, medians.

    python benchmarks/learned_step.py
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

import stelab
import stelab.activations.ops as ops
from stelab.models import build

KINDS = ("float", "fixed", "learned fused", "learned unfused")


def make(kind: str):
    quant = None if kind == "float" else stelab.QuantConfig(bits=2, ste="clipped_relu", learn_alpha=kind != "fixed",
                                                            alpha_rule="pact", check_nan=False)
    model = build("resnet20", quant, channels_last=True)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def main() -> int:
    torch.manual_seed(0)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    fused = ops._learned_fused
    runs = {k: make(k) for k in KINDS}
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(4):  # round 0 warms up
        for kind in KINDS[r % 4:] + KINDS[:r % 4]:
            ops._learned_fused = fused if kind != "learned unfused" else (lambda x, ste: False)
            model, opt = runs[kind]
            for _ in range(3):
                t0 = time.perf_counter()
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if r:
                    times[kind].append(time.perf_counter() - t0)
    ops._learned_fused = fused
    base = statistics.median(times["float"])
    for kind in KINDS:
        med = statistics.median(times[kind])
        print(f"{kind}: {1e3 * med:.0f} ms/step, {med / base:.2f}x the float step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
