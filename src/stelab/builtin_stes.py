r"""The built-in straight-through estimators, as data (:data:`BUILTINS`) that :mod:`stelab.ste` registers on the
registry's first use.

Each STE's docstring gives its proxy :math:`\mu` and derivative :math:`\mu'` (``top`` is the forward quantizer's top
level, see :mod:`stelab.ste`). The piecewise ones (identity, relu, clipped_relu, leaky_relu, hardtanh, hat, half_hat)
are defined by their :class:`~stelab.ste.Piecewise` table alone: ``mu'``, the fused op's backward state and the
three properties follow from it. The smooth ones (log_tailed_relu, swish_sign, approx_sign) give ``mu'`` as a function
and declare their properties, which the tests compare with the math and with a grid measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .piecewise import Piecewise

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
