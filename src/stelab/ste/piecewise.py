"""The table of a piecewise-constant STE derivative: the one definition from which ``mu'``, the fused operator's
backward state and the STE's three properties all follow (:mod:`stelab.ste`). On its own so that the built-in STEs
(:mod:`stelab.ste.builtin`) are written with it and registered by :mod:`stelab.ste` without importing it back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Piecewise:
    r"""A piecewise-constant ``mu'``: ``values[i]`` on region ``i``, region ``i`` being
    ``breaks[i-1]*top < x <= breaks[i]*top`` (region 0 is everything at or below ``breaks[0]*top``, the last region
    everything above ``breaks[-1]*top``). The right-closed convention is the fused op's region code
    :math:`r = \#\{j : x > b_j\,\mathrm{top}\}` (:mod:`stelab.kernels.reference`).

    The properties of the STE follow from the table (``top > 0``):

    * ``monotone``: every value is ``>= 0``;
    * ``zero_below``: the value is 0 on every region that reaches ``x <= 0`` (region 0 and every region whose lower
      break is negative);
    * ``scale_invariant``: no breakpoint other than 0 (a break ``b != 0`` sits at ``b*top``, which ``x -> c x``
      moves across).
    """

    breaks: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "breaks", tuple(float(b) for b in self.breaks))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if len(self.values) != len(self.breaks) + 1:
            raise ValueError("Piecewise needs exactly one more value than breakpoints")
        if list(self.breaks) != sorted(self.breaks):
            raise ValueError("Piecewise breakpoints must be sorted")
        if not all(math.isfinite(v) for v in (*self.breaks, *self.values)):
            raise ValueError(f"Piecewise breakpoints and values must be finite, got {self}")

    def derivative(self, x: Tensor, top: float | Tensor = 1.0) -> Tensor:
        """``mu'(x; top)`` from the table: the value of the last region whose lower break ``x`` exceeds (NaN: 0's)."""
        out = torch.full_like(x, self.values[0])
        for b, v in zip(self.breaks, self.values[1:]):
            bound = 0.0 if b == 0.0 else b * top  # 0 * top would be NaN for an infinite top
            out = torch.where(x > bound, v, out)
        return out

    @property
    def monotone(self) -> bool:
        return all(v >= 0 for v in self.values)

    @property
    def zero_below(self) -> bool:
        lower = (-math.inf, *self.breaks)
        return all(v == 0 for lo, v in zip(lower, self.values) if lo < 0)

    @property
    def scale_invariant(self) -> bool:
        return set(self.breaks) <= {0.0}

    def flags(self) -> dict[str, bool]:
        return {"monotone": self.monotone, "zero_below": self.zero_below, "scale_invariant": self.scale_invariant}
