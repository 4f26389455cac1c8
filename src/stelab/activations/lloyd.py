r"""Default resolution of the staircase: the MSE-optimal uniform step for a half standard Gaussian.

After a batch-norm without affine parameters a pre-activation is roughly :math:`N(0, 1)`; its positive half is what
a ReLU-type staircase keeps. For a uniform codebook :math:`\{0, \alpha, \dots, L\alpha\}` with round-to-nearest
assignment :math:`k(x) = \mathrm{clamp}(\mathrm{round}(x/\alpha), 0, L)`, the Lloyd update for the common step is

.. math::  \alpha \leftarrow \frac{E[x\,k(x)]}{E[k(x)^2]}, \qquad x \sim |N(0,1)|,

with both expectations in closed form: on the cell :math:`[a, b)` of index :math:`k`,
:math:`E[x\,k\,1] = 2k(\varphi(a) - \varphi(b))` and :math:`E[k^2 1] = 2k^2(\Phi(b) - \Phi(a))`. Its fixed point is a
stationary point of the mean squared error; we solve the fixed-point equation by bisection rather than iterating
(plain iteration needs ~50,000 steps at 8 bits). This reproduces the constants published with HWGQ (Cai et
al. 2017) and used by Yin et al. (2019): 1.2240 (1 bit; published 1.2221), 0.6508 (2 bits; 0.6511),
0.1932 (4 bits; 0.1946).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from ..errors import check_bits


def lloyd_update(alpha: float, bits: int) -> float:
    """One Lloyd step for the uniform half-Gaussian quantizer of ``bits`` bits (see module docstring)."""
    from scipy.special import ndtr  # here, not at the top: `import stelab` need not load scipy

    levels = 2**bits - 1
    k = np.arange(levels + 1, dtype=np.float64)
    edges = np.concatenate([[0.0], (k[1:] - 0.5) * alpha, [np.inf]])
    pdf = np.exp(-0.5 * edges**2) / math.sqrt(2 * math.pi)  # exp(-inf) = 0 at the last edge
    first = (k * (pdf[:-1] - pdf[1:])).sum()
    second = (k**2 * (ndtr(edges[1:]) - ndtr(edges[:-1]))).sum()
    return float(first / second)


@cache
def lloyd_alpha(bits: int) -> float:
    """The fixed point of :func:`lloyd_update`: MSE-optimal uniform resolution for ``bits`` in 1..16."""
    check_bits(bits)
    # T(a) - a changes sign on this bracket for every bit-width 1..16 (T(a) > a for tiny a, < a for a = 3): bisect
    # it down to adjacent floats.
    lo, hi = 1e-6, 3.0
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            return mid
        lo, hi = (mid, hi) if lloyd_update(mid, bits) > mid else (lo, mid)
