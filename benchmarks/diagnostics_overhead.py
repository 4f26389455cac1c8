"""Overhead of ``DiagnosticsHook`` on 2-bit LeNet-5 training (MNIST batches of 128), at ``every=100``.

Side by side: blocks of ``--steps`` SGD steps with and without the hook, interleaved (ABBA...) so that load from
other processes hits both alike; each block is timed in wall-clock and in this process's CPU time (the latter is
what the hook costs when the machine is shared). Also times one hook call against one training step, which gives
the overhead at any ``every`` as ``hook / (every * step)``. Writes ``overhead.json`` and ``overhead.md``.

    python benchmarks/diagnostics_overhead.py --repeats 3 --steps 300 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from stelab import QuantConfig, data, models
from stelab.diagnostics import DiagnosticsHook
from stelab.io import markdown_table, write_json, write_text


def _batches(n_batches: int, batch_size: int, real: bool, seed: int):
    if real:
        try:
            images, labels = data.load("mnist", split="train")
        except FileNotFoundError:
            images, labels = data.synthetic("mnist", n_batches * batch_size, seed)
    else:
        images, labels = data.synthetic("mnist", n_batches * batch_size, seed)
    mean, std = data.STATS["mnist"]
    loader = data.DeviceLoader(images, labels, batch_size=batch_size, shuffle=True, augment=False, mean=mean,
                               std=std, seed=seed, drop_last=True)
    out = []
    for x, y in loader:
        out.append((x, y))
        if len(out) == n_batches:
            break
    return out


def _block(model, optimizer, batches, steps: int, hook: DiagnosticsHook | None, start_step: int) -> tuple[float, float]:
    loss_fn = nn.CrossEntropyLoss()
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        step = start_step + i + 1
        if hook is not None and step % hook.every == 0:
            hook(step=step, epoch=0, model=model, inputs=x, targets=y, loss_fn=loss_fn)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--steps", type=int, default=300, help="steps per timed block (a multiple of --every)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--synthetic", action="store_true", help="synthetic images instead of MNIST")
    parser.add_argument("--out", default="runs/bench-diagnostics-overhead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = models.build("lenet5", quant=QuantConfig(bits=2, ste="clipped_relu", check_nan=False)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = _batches(50, args.batch_size, not args.synthetic, seed=0)
    hook = DiagnosticsHook(every=args.every)
    _block(model, optimizer, batches, 20, None, 0)  # warm-up
    hook(step=0, epoch=0, model=model, inputs=batches[0][0], targets=batches[0][1], loss_fn=nn.CrossEntropyLoss())
    rows, ratios_wall, ratios_cpu = [], [], []
    step = 0
    bases, hooked = [], []
    for r in range(args.repeats):
        # ABBA order, so that a drift in the machine's load does not favour either side
        for use_hook in ((False, True) if r % 2 == 0 else (True, False)):
            timing = _block(model, optimizer, batches, args.steps, hook if use_hook else None, step)
            step += args.steps
            if use_hook:
                with_hook = timing
            else:
                base = timing
        bases.append(base)
        hooked.append(with_hook)
        ratios_wall.append(with_hook[0] / base[0] - 1)
        ratios_cpu.append(with_hook[1] / base[1] - 1)
        rows.append([r, f"{base[0]:.2f}", f"{with_hook[0]:.2f}", f"{100 * ratios_wall[-1]:+.1f}%",
                     f"{base[1]:.2f}", f"{with_hook[1]:.2f}", f"{100 * ratios_cpu[-1]:+.1f}%"])
        print(rows[-1], flush=True)
    # per-call costs: one hook call vs one training step (CPU time, median of several)
    hook_cpu, step_cpu = [], []
    x, y = batches[0]
    for _ in range(5):
        t = time.process_time()
        hook(step=step, epoch=0, model=model, inputs=x, targets=y, loss_fn=nn.CrossEntropyLoss())
        hook_cpu.append(time.process_time() - t)
        step_cpu.append(_block(model, optimizer, batches, 10, None, step)[1] / 10)
    per_call = statistics.median(hook_cpu) / statistics.median(step_cpu)
    summary = {
        "model": "lenet5 2-bit clipped_relu", "batch_size": args.batch_size, "every": args.every,
        "steps_per_block": args.steps, "repeats": args.repeats, "threads": args.threads,
        "overhead_wall_median": statistics.median(ratios_wall), "overhead_cpu_median": statistics.median(ratios_cpu),
        # the fastest block of each kind is the one least disturbed by other processes
        "overhead_cpu_min_blocks": min(h[1] for h in hooked) / min(b[1] for b in bases) - 1,
        "hook_call_in_steps": per_call, "overhead_from_call_cost": per_call / args.every,
        "hook": {"stes": hook.stes, "width": hook.width, "max_samples": hook.max_samples,
                 "probe_samples": hook.probe_samples},
    }
    out = Path(args.out)
    write_json(out / "overhead.json", {**summary, "blocks": rows})
    text = ("# DiagnosticsHook overhead on LeNet-5 (2-bit) training\n\n"
            + markdown_table(["repeat", "wall no hook (s)", "wall hook (s)", "wall overhead", "cpu no hook (s)",
                              "cpu hook (s)", "cpu overhead"], rows)
            + f"\nMedian overhead at every={args.every}: wall {100 * summary['overhead_wall_median']:+.1f}%, "
              f"CPU {100 * summary['overhead_cpu_median']:+.1f}%; fastest blocks (CPU): "
              f"{100 * summary['overhead_cpu_min_blocks']:+.1f}%. One hook call costs {per_call:.2f} training "
              f"steps (CPU), i.e. {100 * summary['overhead_from_call_cost']:.1f}% at every={args.every}.\n")
    write_text(out / "overhead.md", text)
    print(text)


if __name__ == "__main__":
    main()
