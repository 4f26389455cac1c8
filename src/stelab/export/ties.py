r"""Where the standard-ONNX (QDQ) form of a quantized activation can differ from stelab's forward: the exact set.

Let :math:`t = \mathrm{fl}(x/\alpha)` be the float32 quotient that both PyTorch and the exported ``Div`` compute
(IEEE division, correctly rounded), :math:`L` the top code and :math:`R` round-half-to-even (what ``QuantizeLinear``
does). The exported codes are

* ``staircase``: :math:`R(\mathrm{clip}(\mathrm{fl}(t + \tfrac12), 0, L))`, standing for
  :math:`\mathrm{clamp}(\lceil t \rceil, 0, L)`;
* ``round``: :math:`R(\mathrm{clip}(t, 0, L))`, standing for :math:`\mathrm{clamp}(\lceil t - \tfrac12 \rceil, 0, L)`
  (stelab's round sends a tie down);
* ``sign``: :math:`b = \mathrm{Relu}(\mathrm{Sign}(x)) = 1\{x > 0\}`, exact (the value is
  :math:`\alpha(2b - 1)`); it has no ties and is not treated here.

In exact arithmetic :math:`\lceil t \rceil = R(t + \tfrac12)` except at odd integers :math:`t = k` (there
:math:`R(k + \tfrac12) = k + 1`); after the clip only :math:`k = 1, 3, \dots, L - 2` remain (:math:`L` is odd, and
:math:`R(L + \tfrac12)` is clipped back to :math:`L`). In float32 the sum :math:`t + \tfrac12` is exact for every
:math:`t \ge 1` near an integer, and rounds in two places only: for :math:`0 < t \le 2^{-25}` it rounds to
:math:`\tfrac12` (code 0 instead of 1), and :math:`t = 1 - 2^{-24}` rounds to :math:`\tfrac32` (code 2 instead of 1,
when :math:`L \ge 3`). So the staircase's QDQ code differs from stelab's exactly on

.. math:: \{1, 3, \dots, L-2\} \;\cup\; (0, 2^{-25}] \;\cup\; \{1 - 2^{-24}\ \text{if}\ L \ge 3\},

and the round's exactly on :math:`\{j + \tfrac12 : j = 1, 3, \dots, L-2\}` (no sum, so no float32 rounding). The
test suite checks both statements against every float32 number within 64 ulps of every integer and half-integer in
:math:`[-1, L + 1]` and across :math:`(0, 2^{-20}]`, and against onnxruntime itself. The QONNX and float exports
have no such set: they compute the ceil itself.
"""

from __future__ import annotations

import numpy as np

TINY = np.float32(2.0**-25)  # 0 < t <= TINY: fl(t + 1/2) = 1/2
BELOW_ONE = np.nextafter(np.float32(1.0), np.float32(0.0))  # 1 - 2**-24: fl(t + 1/2) = 3/2


def quotient(x: np.ndarray, alpha: float) -> np.ndarray:
    """:math:`t = \\mathrm{fl}(x/\\alpha)` in float32, as PyTorch and the exported ``Div`` compute it."""
    return (np.asarray(x, np.float32) / np.float32(alpha)).astype(np.float32)


def exact_codes(t: np.ndarray, forward: str, levels: int) -> np.ndarray:
    """stelab's codes from :math:`t`: staircase :math:`\\lceil t \\rceil`, round :math:`\\lceil t - 1/2 \\rceil`,
    clamped to ``0..levels``."""
    t = np.asarray(t, np.float32)
    if forward == "round":
        k = np.ceil((t - np.float32(0.5)).astype(np.float32))
    else:
        k = np.ceil(t)
    return np.clip(np.nan_to_num(k), 0, levels).astype(np.int64)


def qdq_codes(t: np.ndarray, forward: str, levels: int) -> np.ndarray:
    """The exported QDQ graph's codes, emulated in float32 numpy: ``Add(0.5)`` (not for round), ``Clip(0, L)``,
    round half to even."""
    u = np.asarray(t, np.float32)
    if forward != "round":
        u = (u + np.float32(0.5)).astype(np.float32)
    return np.rint(np.clip(u, np.float32(0), np.float32(levels))).astype(np.int64)


def documented_ties(t: np.ndarray, forward: str, levels: int) -> np.ndarray:
    """The boolean mask of the module docstring's set: where the QDQ code differs from stelab's."""
    t = np.asarray(t, np.float32)
    odd = np.arange(1, max(levels - 1, 1), 2, dtype=np.float32)  # 1, 3, ..., L - 2
    if forward == "round":
        return np.isin(t, odd + np.float32(0.5))
    mask = np.isin(t, odd) | ((t > 0) & (t <= TINY))
    if levels >= 3:
        mask |= t == BELOW_ONE
    return mask
