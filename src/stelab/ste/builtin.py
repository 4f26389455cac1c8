r"""The built-in straight-through estimators, as data (:data:`BUILTINS`) that :mod:`stelab.ste` registers on the
registry's first use.

Each STE's docstring gives its proxy :math:`\mu` and derivative :math:`\mu'` (``top`` is the forward quantizer's top
level, see :mod:`stelab.ste`). The piecewise ones (identity, relu, clipped_relu, leaky_relu, hardtanh, hat, half_hat)
are defined by their :class:`~stelab.ste.Piecewise` table alone: ``mu'``, the fused op's backward state and the
three properties follow from it. The smooth ones (log_tailed_relu, swish_sign, approx_sign, and the estimators from
the literature: ede, reste, dsq, gaussian_smoothed) give ``mu'`` as a function and declare their properties, which
the tests compare with the math and with a grid measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .piecewise import Piecewise
from .smoothing import smoothed_step, smoothed_step_derivative

# (name, table function or mu', proxy mu, properties or None for a piecewise table), in the order defined below;
# stelab.ste registers them on the registry's first use (this module does not import it: no import cycle).
BUILTINS: list[tuple[str, Callable[..., Any], Callable[..., Tensor] | None, dict[str, bool] | None]] = []


def _piecewise(name: str, *, proxy: Callable[..., Tensor]) -> Callable:
    """A built-in piecewise STE: the decorated function maps its parameters (keywords with defaults) to its table."""
    def wrap(table: Callable[..., Piecewise]) -> Callable[..., Piecewise]:
        BUILTINS.append((name, table, proxy, None))
        return table

    return wrap


def _builtin(name: str, *, monotone: bool, zero_below: bool, scale_invariant: bool,
             proxy: Callable[..., Tensor] | None = None) -> Callable:
    """A built-in STE with a smooth ``mu'`` (the decorated function) and its properties known analytically."""
    def wrap(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        BUILTINS.append((name, fn, proxy, {"monotone": monotone, "zero_below": zero_below,
                                           "scale_invariant": scale_invariant}))
        return fn

    return wrap


def _top(x: Tensor, top: float | Tensor) -> Tensor:
    return torch.as_tensor(top, dtype=x.dtype)


@_piecewise("identity", proxy=lambda x, top: x)
def _identity() -> Piecewise:
    r"""Identity STE. :math:`\mu(x) = x`, :math:`\mu'(x) = 1`. Unstable near minima (Yin et al. 2019)."""
    return Piecewise((), (1.0,))


@_piecewise("relu", proxy=lambda x, top: torch.relu(x))
def _relu() -> Piecewise:
    r"""Vanilla ReLU STE. :math:`\mu(x) = \max(x, 0)`, :math:`\mu'(x) = 1\{x > 0\}`."""
    return Piecewise((0.0,), (0.0, 1.0))


@_piecewise("clipped_relu", proxy=lambda x, top: torch.minimum(torch.relu(x), _top(x, top)))
def _clipped_relu() -> Piecewise:
    r"""Clipped ReLU STE, clipped at the top level of the staircase.
    :math:`\mu(x) = \min(\max(x, 0), \mathrm{top})`, :math:`\mu'(x) = 1\{0 < x \le \mathrm{top}\}`."""
    return Piecewise((0.0, 1.0), (0.0, 1.0, 0.0))


@_piecewise("leaky_relu", proxy=lambda x, top, slope=0.1: torch.where(x > 0, x, slope * x))
def _leaky_relu(slope: float = 0.1) -> Piecewise:
    r"""Leaky ReLU STE. :math:`\mu(x) = x` for :math:`x > 0`, ``slope``:math:`\cdot x` otherwise;
    :math:`\mu'(x) = 1` for :math:`x > 0`, ``slope`` for :math:`x \le 0`. Monotone iff ``slope >= 0``, zero below
    iff ``slope == 0``."""
    if not math.isfinite(slope):
        raise ValueError(f"leaky_relu slope must be finite, got {slope}")
    return Piecewise((0.0,), (float(slope), 1.0))


@_piecewise("hardtanh", proxy=lambda x, top: torch.maximum(torch.minimum(x, _top(x, top)), -_top(x, top)))
def _hardtanh() -> Piecewise:
    r"""Hardtanh STE, the usual one for ``sign`` (BinaryConnect/BNN).
    :math:`\mu(x) = \mathrm{clamp}(x, -\mathrm{top}, \mathrm{top})`,
    :math:`\mu'(x) = 1\{-\mathrm{top} < x \le \mathrm{top}\}` (the boundary convention of every table)."""
    return Piecewise((-1.0, 1.0), (0.0, 1.0, 0.0))


def _hat_proxy(x: Tensor, top: float | Tensor, peak: float) -> Tensor:
    return torch.clamp(torch.minimum(x, 2 * peak * top - x), min=0)


@_piecewise("hat", proxy=lambda x, top: _hat_proxy(x, top, 1.0))
def _hat() -> Piecewise:
    r"""Hat STE (ours, a non-monotone probe for the classification experiments):
    :math:`\mu(x) = \max(0, \min(x, 2\,\mathrm{top} - x))`, so :math:`\mu'(x) = 1\{0 < x \le \mathrm{top}\}
    - 1\{\mathrm{top} < x \le 2\,\mathrm{top}\}`: clipped relu on the staircase, falling above it."""
    return Piecewise((0.0, 1.0, 2.0), (0.0, 1.0, -1.0, 0.0))


@_piecewise("half_hat", proxy=lambda x, top: _hat_proxy(x, top, 0.5))
def _half_hat() -> Piecewise:
    r"""Half-hat STE (ours): the hat peaking at :math:`\mathrm{top}/2`,
    :math:`\mu'(x) = 1\{0 < x \le \mathrm{top}/2\} - 1\{\mathrm{top}/2 < x \le \mathrm{top}\}`: non-monotone
    *inside* the staircase's support."""
    return Piecewise((0.0, 0.5, 1.0), (0.0, 1.0, -1.0, 0.0))


def _log_tailed_proxy(x: Tensor, top: float | Tensor) -> Tensor:
    tail = top + torch.log1p(torch.clamp(x - top, min=0))
    return torch.where(x <= 0, torch.zeros_like(x), torch.where(x <= top, x, tail))


@_builtin("log_tailed_relu", monotone=True, zero_below=True, scale_invariant=False, proxy=_log_tailed_proxy)
def _log_tailed_relu(x: Tensor, top: float | Tensor) -> Tensor:
    r"""Log-tailed ReLU STE (HWGQ, Cai et al. 2017): linear on the staircase, logarithmic above it.
    :math:`\mu(x) = 0` for :math:`x \le 0`, :math:`x` for :math:`0 < x \le \mathrm{top}`,
    :math:`\mathrm{top} + \log(x - \mathrm{top} + 1)` above; so
    :math:`\mu'(x) = 1\{0 < x \le \mathrm{top}\} + 1\{x > \mathrm{top}\}/(x - \mathrm{top} + 1)`."""
    tail = 1.0 / (torch.clamp(x - top, min=0) + 1.0)
    return torch.where(x <= 0, torch.zeros_like(x), torch.where(x <= top, torch.ones_like(x), tail))


def _swish_sign_proxy(x: Tensor, top: float | Tensor, beta: float = 5.0) -> Tensor:
    u = beta * x / top
    s = torch.sigmoid(u)
    return top * (2 * s * (1 + u * (1 - s)) - 1)


@_builtin("swish_sign", monotone=False, zero_below=False, scale_invariant=False, proxy=_swish_sign_proxy)
def _swish_sign(x: Tensor, top: float | Tensor, beta: float = 5.0) -> Tensor:
    r"""SignSwish STE (BNN+, Darabi et al. 2018), with :math:`u = x/\mathrm{top}`:
    :math:`f(u) = 2\sigma(\beta u)[1 + \beta u (1 - \sigma(\beta u))] - 1`,
    :math:`\mu'(x) = f'(u) = \beta\,[2 - \beta u \tanh(\beta u / 2)] / [1 + \cosh(\beta u)]`.
    Not monotone: :math:`\mu'` is negative for :math:`|\beta u| > 2.4`, so it is the library's non-monotone proxy."""
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"swish_sign beta must be positive and finite, got {beta}")
    u = beta * x / top
    # cosh overflows for |u| > 710 in float64; the derivative is 0 there to every digit.
    u = torch.clamp(u, -80.0, 80.0)
    return beta * (2 - u * torch.tanh(u / 2)) / (1 + torch.cosh(u))


def _approx_sign_proxy(x: Tensor, top: float | Tensor) -> Tensor:
    u = torch.clamp(x / top, -1.0, 1.0)
    return top * (2 * u - u * u.abs())


@_builtin("approx_sign", monotone=True, zero_below=False, scale_invariant=False, proxy=_approx_sign_proxy)
def _approx_sign(x: Tensor, top: float | Tensor) -> Tensor:
    r"""ApproxSign STE (Bi-Real Net, Liu et al. 2018), with :math:`u = x/\mathrm{top}`:
    :math:`f(u) = 2u - u|u|` on :math:`|u| < 1` and :math:`\mathrm{sign}(u)` outside,
    :math:`\mu'(x) = \max(0, 2 - 2|u|)`."""
    return torch.clamp(2 - 2 * (x / top).abs(), min=0)


# ---- estimators from the literature whose backward is a function of the pre-activation ----
# Written with u = x / top, so that each is in the staircase's units; where a paper states its formula for inputs
# of unit scale (binarisation), top = 1 gives it back. Sources: the formula as given in code or notes we could read
# (each docstring says which); none of these papers' full texts was read.

def _positive(name: str, **params: float) -> None:
    for key, value in params.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} {key} must be positive and finite, got {value}")


def _levels(name: str, levels: float) -> int:
    if not (float(levels).is_integer() and levels >= 1):
        raise ValueError(f"{name} levels must be a positive integer (L = 2**bits - 1: 3 for 2 bits), got {levels}")
    return int(levels)


def _ratio64(x: Tensor, top: float | Tensor) -> Tensor:
    r""":math:`|x/\mathrm{top}|` in float64, for deciding on which side of a jump ``x`` lies: one rounding of the
    exact quotient whatever ``x``'s dtype (float64 holds every float32/bfloat16 value exactly), so the region does not
    depend on the dtype the backward runs in."""
    return (x.double() / torch.as_tensor(top, dtype=torch.float64)).abs()


def _ede_k(t: float) -> float:
    return max(1.0 / t, 1.0)


def _ede_proxy(x: Tensor, top: float | Tensor, t: float = 1.0) -> Tensor:
    return top * _ede_k(t) * torch.tanh(t * x / top)


@_builtin("ede", monotone=True, zero_below=False, scale_invariant=False, proxy=_ede_proxy)
def _ede(x: Tensor, top: float | Tensor, t: float = 1.0) -> Tensor:
    r"""IR-Net's error decay estimator (EDE; Qin et al., CVPR 2020), with :math:`u = x/\mathrm{top}`:
    :math:`\mu(x) = \mathrm{top}\cdot k \tanh(t u)`, :math:`\mu'(x) = k\,t\,(1 - \tanh^2(t u))`, :math:`k =
    \max(1/t, 1)`. IR-Net anneals ``t`` upward during training (schedule it with ``ste_schedule``, e.g. ``t`` from
    0.1 to 10, geometric); the schedule it uses was not read. The form :math:`k t (1 - \tanh^2(t x))` is the
    backward of IR-Net's public code; scaling by ``top`` is ours. It is computed as :math:`k t / \cosh^2(t u)`:
    :math:`1 - \tanh^2` cancels to 0 in float32 once :math:`|t u| > 9` and loses digits well before."""
    _positive("ede", t=t)
    return _ede_k(t) * t / torch.cosh(t * x / top) ** 2


def _reste_check(o: float, t: float, m: float) -> None:
    _positive("reste", o=o, t=t, m=m)
    if o < 1 or m >= t:
        raise ValueError(f"reste needs o >= 1 and 0 < m < t, got o={o}, t={t}, m={m}")


def _reste_proxy(x: Tensor, top: float | Tensor, o: float = 3.0, t: float = 1.5, m: float = 0.1) -> Tensor:
    u = x / top
    a = u.abs()
    inner = u * (m ** (1 / o) / m)
    middle = torch.sign(u) * torch.clamp(a, min=m) ** (1 / o)
    outer = torch.sign(u) * torch.full_like(u, t ** (1 / o))
    return top * torch.where(a <= m, inner, torch.where(a <= t, middle, outer))


@_builtin("reste", monotone=True, zero_below=False, scale_invariant=False, proxy=_reste_proxy)
def _reste(x: Tensor, top: float | Tensor, o: float = 3.0, t: float = 1.5, m: float = 0.1) -> Tensor:
    r"""ReSTE's power-function estimator (Wu et al., ICCV 2023), with :math:`u = x/\mathrm{top}`: the derivative of
    :math:`\mu(x) = \mathrm{top}\cdot\mathrm{sign}(u)|u|^{1/o}`, made finite near 0 and cut off far out:
    :math:`\mu'(x) = \tfrac1o |u|^{(1-o)/o}` for :math:`m < |u| \le t`, the chord slope :math:`m^{1/o}/m` for
    :math:`|u| \le m`, 0 for :math:`|u| > t`. ``o = 1`` is hardtanh-like (clipped identity); ReSTE anneals ``o`` from 1
    to 3 (``o_end``) with ``t = 1.5``, ``m = 0.1``. Formula and constants from the authors' public code
    (``binarized_modules.py``); scaling by ``top`` is ours."""
    _reste_check(o, t, m)
    a = (x / top).abs()
    power = torch.clamp(a, min=m) ** ((1 - o) / o) / o
    a64 = _ratio64(x, top)
    inner = torch.full_like(a, m ** (1 / o) / m)
    return torch.where(a64 <= m, inner, torch.where(a64 <= t, power, torch.zeros_like(a)))


def _dsq_parts(x: Tensor, top: float | Tensor, shape: float, levels: float) -> tuple[Tensor, Tensor, float, float]:
    """``(j, off, k, s)``: the cell ``j`` of ``x`` (centred on the staircase's jump ``j a``), ``off = x/a - j``,
    and DSQ's ``k`` (per step) and ``s``."""
    if not 0 < shape < 1:
        raise ValueError(f"dsq shape (DSQ's alpha) must be in (0, 1), got {shape}")
    n = _levels("dsq", levels)
    v = x * (n / top)
    cell = torch.clamp(torch.ceil(v - 0.5), 0, n - 1)
    return cell, v - cell, math.log(2 / shape - 1), 1 / (1 - shape)


def _dsq_support(x: Tensor, top: float | Tensor, levels: float) -> tuple[Tensor, Tensor]:
    r"""``(below, above)``: ``x`` at or below the first cell (:math:`x \le -a/2`), above the last (:math:`x > (L -
    \tfrac12) a`); decided in float64 (:func:`_ratio64`), as the jumps of ``mu'`` are there."""
    r = _ratio64(x, top) * torch.sign(x).double() * float(levels)
    return r <= -0.5, r > float(levels) - 0.5


def _dsq_proxy(x: Tensor, top: float | Tensor, shape: float = 0.2, levels: float = 3) -> Tensor:
    cell, off, k, s = _dsq_parts(x, top, shape, levels)
    below, above = _dsq_support(x, top, levels)
    inside = (top / levels) * (cell + (s * torch.tanh(k * off) + 1) / 2)
    return torch.where(below, torch.zeros_like(x), torch.where(above, torch.full_like(x, 1.0) * top, inside))


@_builtin("dsq", monotone=True, zero_below=False, scale_invariant=False, proxy=_dsq_proxy)
def _dsq(x: Tensor, top: float | Tensor, shape: float = 0.2, levels: float = 3) -> Tensor:
    r"""DSQ's soft quantizer (Gong et al., ICCV 2019) as an STE for the staircase. DSQ splits the range between two
    levels into a cell whose hard quantizer switches at the cell's centre; the staircase :math:`a\,\mathrm{clamp}
    (\lceil x/a \rceil, 0, L)` (:math:`a = \mathrm{top}/L`, :math:`L` = ``levels``) switches at :math:`t_j = j a`,
    :math:`j = 0..L-1`, so cell :math:`j` is :math:`(t_j - a/2, t_j + a/2]`. Within it
    :math:`\varphi(x) = s \tanh(k (x - t_j))` with :math:`k = \log(2/\alpha - 1)/a`, :math:`s = 1/(1 - \alpha)`
    (``shape`` is DSQ's :math:`\alpha`, which DSQ learns or anneals toward 0, where the soft quantizer becomes the
    staircase), :math:`\mu(x) = a(j + (\varphi(x) + 1)/2)`, so :math:`\mu'(x) = \tfrac{a}{2} s k (1 -
    \tanh^2(k(x - t_j)))` on :math:`-a/2 < x \le (L - \tfrac12) a` and 0 outside. The factor :math:`a/2` (the
    soft quantizer's derivative, not :math:`\varphi'`) makes :math:`\mu'` integrate to the step height over each
    cell; it and the placement of the cells on the staircase's jumps (``round``'s jumps sit half a step higher) are
    ours. :math:`\varphi`, :math:`k` and :math:`s` as implemented in community code (ricky40403/DSQ), used for the
    formula only."""
    _, off, k, s = _dsq_parts(x, top, shape, levels)
    inside = 0.5 * s * k * (1 - torch.tanh(k * off) ** 2)
    # The support is decided in float64 (a cell boundary inside is a kink, not a jump: which cell a rounded x/a
    # falls in does not matter there; the two ends are jumps).
    below, above = _dsq_support(x, top, levels)
    return torch.where(below | above, torch.zeros_like(x), inside)


def _gaussian_steps(top: float | Tensor, width: float, levels: float) -> tuple[list[float], list[float], float]:
    _positive("gaussian_smoothed", width=width)
    n = _levels("gaussian_smoothed", levels)
    a = float(top) / n
    return [k * a for k in range(n)], [a] * n, width * a


def _gaussian_proxy(x: Tensor, top: float | Tensor, width: float = 0.25, levels: float = 3) -> Tensor:
    t, d, s = _gaussian_steps(top, width, levels)
    return smoothed_step(x, t, d, 0.0, s)


@_builtin("gaussian_smoothed", monotone=True, zero_below=False, scale_invariant=False, proxy=_gaussian_proxy)
def _gaussian_smoothed(x: Tensor, top: float | Tensor, width: float = 0.25, levels: float = 3) -> Tensor:
    r"""The derivative of the staircase smoothed by Gaussian noise (additive-noise annealing, Spallanzani et al.
    2019, whose abstract only was read): the staircase's :math:`L` = ``levels`` steps of height :math:`a =
    \mathrm{top}/L` at :math:`t_k = k a` (:math:`k = 0..L-1`), noise of width :math:`s` = ``width`` :math:`\cdot a`:
    :math:`\mu'(x) = \sum_k \tfrac{a}{s}\varphi(\tfrac{x - t_k}{s})`, :math:`\mu(x) = \sum_k a\,\Phi(\tfrac{x -
    t_k}{s})` (:mod:`stelab.ste.smoothing`, the same function as the diagnostics' reference gradient). Annealing
    ``width`` toward 0 approaches the true (zero a.e.) derivative; the thresholds are the staircase forward's."""
    t, d, s = _gaussian_steps(top, width, levels)
    return smoothed_step_derivative(x, t, d, s)
