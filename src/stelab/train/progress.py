"""The training progress bar (tqdm on stderr; sparse when not a terminal)."""

from __future__ import annotations

import sys
import time

from torch import Tensor


def progress_bar(total: int, epoch: int, epochs: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True,
                mininterval=0.1 if interactive else 30.0, file=sys.stderr)


def update_bar(bar, sums: Tensor, postfix: bool, world_size: int, t0: float) -> None:
    bar.update(1)
    if postfix:  # every 20 batches: the figures need a host sync
        s = sums.tolist()
        bar.set_postfix(loss=f"{s[0] / s[2]:.4f}", acc=f"{100 * s[1] / s[2]:.2f}%",
                        img_s=f"{s[2] * world_size / (time.perf_counter() - t0):.0f}")
