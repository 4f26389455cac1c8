r"""Monotone STEs: stelab's definition, checked numerically, and the one-sidedness that our experiments need as well.

**Provenance.** Long, Yin & Xin (2021) were read only in their abstract: it proposes "a class of STEs with certain
monotonicity" for a two-linear-layer network with quantized activations and multi-category classification, and
states that the corresponding coarse gradient methods converge to the global minimum (perfect classification). It
does not define the monotonicity or name the STEs. The definition below, the one-sidedness, the choice of STEs and
every argument in this module are ours.

**Definition adopted** (:func:`is_monotone`; the one definition of a "monotone STE" used throughout stelab):

1. :math:`\mu` is non-decreasing on :math:`\mathbb{R}` (:math:`\mu' \ge 0`; this is the core flag ``ste.monotone``);
2. :math:`\mu' > 0` on the open support :math:`(0, \mathrm{top})` of the staircase.

Why (1): a coarse step moves the pre-activation of sample :math:`i` at neuron :math:`j` by
:math:`-\eta\,\|x_i\|^2\,\mu'(w_j\cdot x_i)\,\partial\ell_i/\partial h_{ij}` (its own term); the staircase :math:`q`
is non-decreasing, so that step changes :math:`q` in the direction that lowers the loss exactly when
:math:`\mu' \ge 0` there. Why (2): every jump of :math:`q` (the thresholds :math:`0, \alpha, \dots, (L-1)\alpha`)
lies in :math:`[0, \mathrm{top})`: a proxy flat on part of it gives samples sitting there no signal at all (a constant
proxy is non-decreasing yet never moves :math:`W`). Every registered STE that satisfies (1) satisfies (2) except
``dsq``, whose :math:`\mu'` is 0 on the last half step :math:`((L - \tfrac12)\alpha, \mathrm{top})` (its cells
sit on the staircase's jumps, and there is none there): :func:`is_monotone` is False for it, while the flag is True.

**Monotone is not enough.** identity, hardtanh and approx_sign satisfy the definition, yet with the fixed readout
they never reached the global minimum in our synthetic experiments (``docs/classify.md``). So the definition as
adopted does not carry a convergence claim.

**One-sided** (:func:`check_one_sided`, reported beside it): :math:`\mu'(t) \ge \mu'(-t)` for all :math:`t > 0`,
strictly on :math:`(0, \mathrm{top})`. On data symmetric under :math:`x \to -x` this is what lets a neuron pick a
side: if :math:`\mu'` is even (identity, hardtanh, approx_sign, swish_sign) the contributions
:math:`\delta\,\mu'(t)\,x` and :math:`\delta\,\mu'(-t)\,(-x)` of a pair :math:`\pm x` with equal loss sensitivity
:math:`\delta` cancel exactly. relu, clipped relu, log-tailed relu and leaky relu (:data:`ONE_SIDED_STES`) are
monotone *and* one-sided, and they are the STEs that reached the global minimum (31 of 32 runs at 2 and 4 bits).
Evidence, not a theorem: the property that went with convergence here is "monotone and one-sided on the support".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import ste as ste_registry
from ..ste import STE

# The registered STEs that are monotone and one-sided (our selection; the abstract names no STE).
ONE_SIDED_STES = ("relu", "clipped_relu", "log_tailed_relu", "leaky_relu")


@dataclass(frozen=True)
class MonotoneCheck:
    """The measured pieces of :func:`is_monotone` (and the one-sidedness) for one STE."""

    ste: str
    flag: bool  # ste.monotone, as declared or measured by the registry
    non_decreasing: bool  # min mu' >= -tol on the whole grid
    increasing_on_support: bool  # mu' > tol at every grid point of (0, top)
    proxy_non_decreasing: bool | None  # mu itself checked on the grid; None without a proxy
    min_derivative: float
    argmin_over_top: float  # where min mu' occurs, in units of top
    min_on_support: float
    one_sided: bool

    @property
    def monotone(self) -> bool:
        return self.non_decreasing and self.increasing_on_support and self.proxy_non_decreasing is not False


def _grid(top: float) -> Tensor:
    """Dense on [-8 top, 8 top], log-spaced tails out to 1e4 top (tails of log-tailed / leaky proxies)."""
    core = torch.linspace(-8.0, 8.0, 16001, dtype=torch.float64)
    tail = torch.logspace(math.log10(8.0), 4.0, 400, dtype=torch.float64)
    return torch.unique(torch.cat([-tail, core, tail])) * top  # sorted: the proxy check compares neighbours


TOPS = (0.25, 1.0, 4.0)


def _strictly_inside(x: Tensor, top: float) -> Tensor:
    """Grid points of ``(0, top)`` at least ``1e-6 top`` from both ends: a proxy may fall to 0 continuously at an end
    (approx_sign at ``top``), and a grid point one rounding error below ``top`` must not count as inside."""
    return (x > 1e-6 * top) & (x < (1 - 1e-6) * top)


def check_one_sided(ste: str | STE, tops: tuple[float, ...] = TOPS, tol: float = 0.0) -> bool:
    """``mu'(t) >= mu'(-t)`` for every grid ``t > 0``, with ``>`` at every grid ``t`` in ``(0, top)``."""
    est = resolve_ste(ste)
    for top in tops:
        t = _grid(top)
        t = t[t > 0]
        gap = est.derivative(t, top) - est.derivative(-t, top)
        if not (bool((gap >= -tol).all()) and bool((gap[_strictly_inside(t, top)] > tol).all())):
            return False
    return True


def check_monotone(ste: str | STE, tops: tuple[float, ...] = TOPS, tol: float = 0.0) -> MonotoneCheck:
    """Verify the two conditions of the module docstring on float64 grids (~17k points each) at several clip levels.

    A grid can only refute, so ``True`` means "no violation found"; ``False`` comes with a witness
    (``argmin_over_top``). ``tol = 0`` is exact, like the flag (a leaky slope of ``-1e-96`` is not monotone); give a
    small ``tol`` for proxies whose derivative carries rounding noise (e.g. one taken by autograd).
    """
    est = resolve_ste(ste)
    mins, supports, proxy_ok, where = [], [], None, 0.0
    for top in tops:
        x = _grid(top)
        d = est.derivative(x, top)
        i = int(torch.argmin(d))
        if not mins or float(d[i]) < min(mins):
            where = float(x[i]) / top
        mins.append(float(d[i]))
        supports.append(float(d[_strictly_inside(x, top)].min()))
        if est.proxy_fn is not None:
            mu = est.proxy(x, top)
            scale = torch.clamp(mu.abs(), min=1.0)[1:]
            ok = bool((mu[1:] - mu[:-1] >= -tol * scale).all())
            proxy_ok = ok if proxy_ok is None else proxy_ok and ok
    return MonotoneCheck(est.label, bool(est.monotone), min(mins) >= -tol, min(supports) > tol, proxy_ok,
                         min(mins), where, min(supports), check_one_sided(est, tops, tol))


def is_monotone(ste: str | STE) -> bool:
    """True if ``mu`` is non-decreasing on R and strictly increasing on the staircase support (module docstring)."""
    return check_monotone(ste).monotone


def resolve_ste(ste: str | STE) -> STE:
    """A registered STE (name or spec) or an STE instance; an unknown name raises with the valid choices."""
    return ste_registry.get(ste)


def ste_choices() -> list[str]:
    """Every STE name the classify experiments run: the whole registry (``hat`` and ``half_hat`` included)."""
    return ste_registry.names()
