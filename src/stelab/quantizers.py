r"""Forward quantizers: the activation functions themselves, as pure functions of ``(x, bits, alpha)``.

With ``L = 2**bits - 1`` levels above zero and resolution ``alpha > 0``:

* ``staircase`` (Yin et al. 2019 and their code): :math:`q(x) = 0` for :math:`x \le 0`, :math:`k\alpha` for
  :math:`(k-1)\alpha < x \le k\alpha` (:math:`k = 1..L`), :math:`L\alpha` for :math:`x > L\alpha`; i.e.
  :math:`\alpha\,\mathrm{clamp}(\lceil x/\alpha \rceil, 0, L)`. One bit is the binarized ReLU :math:`\alpha 1\{x>0\}`.
  Thresholds :math:`t_k = k\alpha`, :math:`k = 0..L-1`.
* ``round`` (HWGQ's half-wave convention): :math:`\alpha\,\mathrm{clamp}(\mathrm{round}(x/\alpha), 0, L)`; a tie
  :math:`x = (k + \tfrac12)\alpha` rounds down. Thresholds :math:`t_k = (k + \tfrac12)\alpha`.
* ``sign`` (binary networks, ``bits = 1`` only): :math:`+\alpha` for :math:`x > 0`, :math:`-\alpha` for :math:`x \le 0`.

In every case :math:`q(x) = \mathrm{level}[\#\{k : t_k < x\}]`: a threshold belongs to the step below it.
The derivative of every forward is zero almost everywhere; the backward pass is the STE's business
(:mod:`stelab.ste`, :mod:`stelab.ops`).

**Exact arithmetic.** The resolution is snapped to the *grid* :func:`grid_alpha`: a float32 with at most
``23 - bits`` significant bits. Then every threshold and level, :math:`k\alpha` and :math:`(k + \frac12)\alpha` for
:math:`k \le L`, is an exact float32 (and float64), so "``x = k*alpha``" has one meaning in every float dtype and the
staircase is exact at every boundary. Snapping moves ``alpha`` by a relative ``2**(bits - 23)`` at most (4.8e-7 at 2
bits, 3.1e-5 at 8, 0.8% at 16). It also makes a fast evaluation exact: with :math:`m` the index of the threshold nearest
to :math:`x` (from the inexact ``x * (1/alpha)``, which is off by far less than half a step), the level index is
:math:`m + 1\{x > t_m\}`, one exact comparison. Float16/bfloat16 inputs, whose levels are not exact, fall back to a
table search (``torch.bucketize``) on the rounded thresholds, which is exact for the table but slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import check_alpha, check_bits, unknown_name
from .lloyd import lloyd_alpha

_FAST_DTYPES = (torch.float32, torch.float64)
_ALPHA_RANGE = (2.0**-100, 2.0**100)


def grid_alpha(alpha: float | Tensor, bits: int) -> float | Tensor:
    """``alpha`` rounded (to nearest) to ``23 - bits`` significant bits, so ``k * alpha`` and ``(k + 1/2) * alpha``
    are exact float32 numbers for every ``0 <= k <= 2**bits - 1``. Idempotent; works on floats and tensors."""
    digits = 23 - bits
    if not isinstance(alpha, Tensor) and not _ALPHA_RANGE[0] <= alpha <= _ALPHA_RANGE[1]:
        raise ValueError(f"alpha must be in [2**-100, 2**100] so every level is a normal float32, got {alpha!r}")
    if isinstance(alpha, Tensor):
        mantissa, exponent = torch.frexp(alpha.detach().double())
        return torch.ldexp(torch.round(torch.ldexp(mantissa, torch.tensor(digits))), exponent - digits)
    mantissa, exponent = math.frexp(alpha)
    return math.ldexp(round(math.ldexp(mantissa, digits)), exponent - digits)


@dataclass(frozen=True)
class ForwardQuantizer:
    """A staircase family: where it steps (``thresholds``) and to what (``levels``), for a bit-width and resolution.

    Every method takes the user's ``alpha`` and snaps it to the grid (:func:`grid_alpha`) itself.
    """

    name: str
    max_bits: int
    doc: str

    def check_bits(self, bits: int) -> int:
        check_bits(bits)
        if bits > self.max_bits:
            raise ValueError(f"forward {self.name!r} supports bits 1..{self.max_bits}, got {bits}")
        return bits

    def resolution(self, bits: int, alpha: float | Tensor) -> float | Tensor:
        """The resolution actually used: ``alpha`` on the exact grid (float32 rounding only, for ``sign``)."""
        if self.name == "sign":
            return alpha.detach().float().double() if isinstance(alpha, Tensor) else float(torch.tensor(alpha).float())
        return grid_alpha(alpha, bits)

    def levels(self, bits: int, alpha: float | Tensor) -> Tensor:
        """Output values, lowest first (``L + 1`` of them; two for ``sign``), float64."""
        a = self.resolution(bits, alpha)
        if self.name == "sign":
            return torch.stack([-torch.as_tensor(a), torch.as_tensor(a)]).double()
        return torch.arange(2**bits, dtype=torch.float64) * a

    def thresholds(self, bits: int, alpha: float | Tensor) -> Tensor:
        """``x`` moves up one level each time it exceeds a threshold (``len(levels) - 1`` of them), float64."""
        a = self.resolution(bits, alpha)
        k = torch.arange(2**bits - 1, dtype=torch.float64)
        if self.name == "staircase":
            return k * a
        if self.name == "round":
            return (k + 0.5) * a
        return torch.zeros(1, dtype=torch.float64)

    def top(self, bits: int, alpha: float | Tensor) -> float | Tensor:
        """The clip level an STE sees: ``L * alpha`` (``alpha`` for sign), on the grid."""
        a = self.resolution(bits, alpha)
        return a if self.name == "sign" else (2**bits - 1) * a

    def default_alpha(self, bits: int) -> float:
        """Lloyd's half-Gaussian resolution for the ReLU staircases; 1 for sign (before snapping to the grid)."""
        return 1.0 if self.name == "sign" else lloyd_alpha(bits)

    def __call__(self, x: Tensor, bits: int, alpha: float | Tensor | None = None) -> Tensor:
        """The quantized values (no gradient semantics; see :func:`stelab.quantize` for training)."""
        self.check_bits(bits)
        alpha = self.default_alpha(bits) if alpha is None else alpha
        if not isinstance(alpha, Tensor):
            check_alpha(alpha)
        return evaluate(x, self.name, bits, self.resolution(bits, alpha))


def evaluate(x: Tensor, forward: str, bits: int, a: float | Tensor, keep_nan: bool = True) -> Tensor:
    """``q(x)`` for a resolution ``a`` already on the grid (a float, or a 0-d tensor for a learned one).

    ``keep_nan``: NaN inputs give NaN outputs (one more 1-byte pass); callers that have checked ``x`` for NaN skip it.

    float32/float64: nearest-threshold index plus one exact comparison (module docstring). The output buffer is the
    only activation-sized float allocation (as in ``relu``); every other pass is in place or writes one byte per
    element, because on CPU a fresh float buffer (page faults) costs more than the arithmetic. Other dtypes: an exact
    table search.
    """
    if isinstance(a, Tensor):
        a = a.to(device=x.device, dtype=x.dtype)
    if forward == "sign":
        return torch.where(x > 0, a, -a) if isinstance(a, Tensor) else torch.where(x > 0, a, -a).to(x.dtype)
    if x.dtype not in _FAST_DTYPES:
        y = _table_evaluate(x, forward, bits, a)
        return _restore_nan(y, x) if keep_nan else y
    if bits == 1:  # one threshold (0, or a/2 for round): a comparison is the whole staircase
        t = torch.empty_like(x).copy_(torch.gt(x, 0.0 if forward == "staircase" else 0.5 * a)).mul_(a)
        return _restore_nan(t, x) if keep_nan else t
    last = 2**bits - 2  # index of the highest threshold
    t = x * (1.0 / a)
    if forward == "staircase":  # thresholds k*a: the nearest one is m = round(x/a)
        t.round_().clamp_(0, last)
        index = t.to(torch.uint8 if bits <= 8 else torch.int32)
        t.mul_(a)
    else:  # round: thresholds (k + 1/2)*a, the nearest one is m = floor(x/a)
        t.floor_().clamp_(0, last)
        index = t.to(torch.uint8 if bits <= 8 else torch.int32)
        t.add_(0.5).mul_(a)
    # t is now the threshold t_m, exactly; the level index is m + 1{x > t_m} (m + 1 <= L: no overflow).
    index += torch.gt(x, t).view(torch.uint8) if bits <= 8 else torch.gt(x, t)
    t.copy_(index).mul_(a)  # k * a is exact on the grid: bit-for-bit the level
    return _restore_nan(t, x) if keep_nan else t  # the integer index cannot hold NaN


def _restore_nan(y: Tensor, x: Tensor) -> Tensor:
    """``y`` with NaN wherever ``x`` is NaN, in place. On CPU (eager) a sum (NaN anywhere makes it NaN) is several
    times cheaper than an ``isnan`` pass and there is no device to sync with, so the pass runs only when needed."""
    if x.device.type == "cpu" and not torch.compiler.is_compiling() and not bool(x.sum().isnan()):
        return y
    return y.masked_fill_(x.isnan(), math.nan)


def _table_evaluate(x: Tensor, forward: str, bits: int, a: float | Tensor) -> Tensor:
    fq = _FORWARDS[forward]
    thresholds = fq.thresholds(bits, a).to(device=x.device, dtype=x.dtype)
    levels = fq.levels(bits, a).to(device=x.device, dtype=x.dtype)
    return levels[torch.bucketize(x, thresholds, out_int32=True, right=False)]


# The backward of every forward is the STE's (q' = 0 almost everywhere), so each doc states the forward only.
_FORWARDS: dict[str, ForwardQuantizer] = {
    "staircase": ForwardQuantizer("staircase", 16, "q(x) = alpha * clamp(ceil(x / alpha), 0, L); q' = 0 a.e."),
    "round": ForwardQuantizer("round", 16, "q(x) = alpha * clamp(round(x / alpha), 0, L), ties down; q' = 0 a.e."),
    "sign": ForwardQuantizer("sign", 1, "q(x) = alpha if x > 0 else -alpha; q' = 0 a.e."),
}


def names() -> list[str]:
    return sorted(_FORWARDS)


def get(name: str | ForwardQuantizer) -> ForwardQuantizer:
    if isinstance(name, ForwardQuantizer):
        return name
    if name not in _FORWARDS:
        raise unknown_name("forward quantizer", name, _FORWARDS)
    return _FORWARDS[name]


def staircase(x: Tensor, bits: int = 2, alpha: float | None = None) -> Tensor:
    """The staircase of Yin et al. 2019, :math:`\\alpha\\,\\mathrm{clamp}(\\lceil x/\\alpha \\rceil, 0, L)` (forward
    only; ``alpha=None`` is Lloyd's resolution)."""
    return _FORWARDS["staircase"](x, bits, alpha)
