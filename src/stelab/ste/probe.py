"""A quick check of an STE's ``mu'`` on a few points, run when an STE is built or registered."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

PROBE = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)  # around and on the breaks of the usual tables, in units of top


def probe(ste: Any) -> None:
    """``mu'(x; 1)`` of a smooth :class:`stelab.ste.STE` on :data:`PROBE` (float64) must be a finite tensor of
    ``x``'s shape; ``ValueError`` saying what is wrong otherwise."""
    x = torch.tensor(PROBE, dtype=torch.float64)
    d = ste.derivative_fn(x, 1.0, **ste.params)
    if not isinstance(d, Tensor) or d.shape not in (x.shape, ()):
        raise ValueError(f"mu'(x) must return a tensor of x's shape {tuple(x.shape)}, got "
                         f"{tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__}")
    if not bool(torch.isfinite(d.to(torch.float64)).all()):
        bad = ~torch.isfinite(d.to(torch.float64).expand_as(x))
        raise ValueError(f"mu'(x) is not finite at x = {x[bad][0].item():g} * top")
