r"""The expected coarse gradient :math:`E_Z g_\mu` of any STE: its closed form where the derivative has one
(:mod:`.closed_forms`), else exact in one variable and Gauss-Legendre in the other over :math:`\mathrm{span}(w, w^*)`;
and the quantities built on it (correlation with the true gradient, descent ratio).

Every STE evaluation goes through :func:`stelab.ste.get`, so the theory uses the same :math:`\mu'` as training.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import ndtr

from ... import ste as ste_registry
from ...errors import check_choice
from ...ste import STE
from .closed_forms import closed_form_for, closed_form_names
from .model import COLLINEAR, SQRT_2PI, Frame, check_clip, check_problem, frame, population_grad

METHODS = ("auto", "closed", "integrate")


def _gauss_legendre_panels(breaks: np.ndarray, nodes: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of composite Gauss-Legendre on the panels between consecutive sorted ``breaks``."""
    x, wt = np.polynomial.legendre.leggauss(nodes)
    lo, hi = breaks[:-1, None], breaks[1:, None]
    half = (hi - lo) / 2
    return (lo + half * (x[None, :] + 1)).ravel(), (half * wt[None, :]).ravel()


def integration_grid(norm: float, clip: float, ste: STE, extra_breaks=(), radius: float = 12.0):
    """Nodes/weights in :math:`x_1 = z\\cdot\\hat w` for the 1-D integrals of :func:`span_coefficients`.

    Panel edges: a uniform grid of width 1/4 on ``[-radius, radius]``; every place where the integrand may kink or
    jump — ``x1 = k*clip/||w||`` for ``k in {-1, 0, 1}`` and the STE's declared piecewise breaks — and a geometric
    grid ``±2^j`` (``j = -40..2``) towards 0 that resolves the spike of width ``tan(theta)`` of
    ``phi(x1 cot theta)`` at small or near-pi angles and STE features at scale ``clip/||w||``. A user STE with kinks
    elsewhere passes them (in pre-activation units) as ``extra_breaks``.
    """
    kinks = [-clip, 0.0, clip, *extra_breaks]
    if ste.piecewise is not None:
        kinks += [b * clip for b in ste.piecewise.breaks]
    scale = [k / norm for k in kinks]
    geometric = 2.0 ** np.arange(-40, 3)
    edges = np.concatenate([np.arange(-radius, radius + 1e-9, 0.25), scale, geometric, -geometric])
    edges = np.unique(np.clip(edges, -radius, radius))
    return _gauss_legendre_panels(edges)


def span_coefficients(ste: STE, norm: float, theta: float, clip: float = 1.0, extra_breaks=()) -> dict[str, float]:
    r"""The four scalars that determine :math:`E g_\mu` for any STE (all other directions integrate to 0).

    With :math:`x_1 = z\cdot\hat w`, :math:`x_2 = z\cdot u`, :math:`d(x_1) = \mu'(\|w\|x_1;\ \mathrm{clip})`
    and :math:`x_2` integrated out exactly (:math:`P(z\cdot w^* > 0\mid x_1) = \Phi(x_1\cot\theta)`,
    :math:`E[x_2 1\{z\cdot w^*>0\}\mid x_1] = \varphi(x_1\cot\theta)`):
    ``alpha`` = :math:`E[x_1 d]`, ``beta`` = :math:`E[x_1 d\,1\{x_1>0\}]`,
    ``gamma_w`` = :math:`E[x_1 d\,\Phi(x_1\cot\theta)]`, ``gamma_u`` = :math:`E[d\,\varphi(x_1\cot\theta)]`, so that
    :math:`E[z\mu'(z\cdot w)] = \alpha\hat w`, ... and
    :math:`E[z\mu'(z\cdot w)1\{z\cdot w^*>0\}] = \gamma_w\hat w + \gamma_u u`.
    """
    x, wt = integration_grid(norm, clip, ste, extra_breaks)
    d = ste.derivative(torch.from_numpy(norm * x), clip).numpy()
    base = wt * np.exp(-x * x / 2) / SQRT_2PI * d
    sin, cos = math.sin(theta), math.cos(theta)
    if sin > COLLINEAR:
        cdf = ndtr(x * cos / sin)
        pdf = np.exp(-((x * cos / sin) ** 2) / 2) / SQRT_2PI
    else:  # collinear limit: 1{x1 cos > 0}, and the u-direction vanishes
        cdf, pdf = (x * cos > 0).astype(np.float64), np.zeros_like(x)
    return {
        "alpha": float(np.sum(base * x)),
        "beta": float(np.sum(base * x * (x > 0))),
        "gamma_w": float(np.sum(base * x * cdf)),
        "gamma_u": float(np.sum(base * pdf)),
    }


def _integrated(ste: STE, v, v_star, fr: Frame, clip: float, extra_breaks=()) -> np.ndarray:
    c = span_coefficients(ste, fr.norm, fr.theta, clip, extra_breaks)
    ones_v, ones_s, vv, vs = v.sum(), v_star.sum(), v @ v, v @ v_star
    mixed = c["alpha"] / 2 * (ones_v**2 - vv - ones_v * ones_s + vs)
    return (mixed + vv * c["beta"] - vs * c["gamma_w"]) * fr.w_hat - vs * c["gamma_u"] * fr.u


def expected_coarse_grad(v, w, v_star, w_star, ste="relu", clip: float = 1.0, method: str = "auto",
                         extra_breaks=()) -> np.ndarray:
    r""":math:`E_Z g_\mu(v, w; Z)`, the expected coarse gradient in ``w``, shape ``(n,)``.

    ``ste``: a registered name, spec (``"leaky_relu(slope=0.05)"``) or :class:`~stelab.ste.STE`; ``clip`` is its
    ``top`` (clip level). ``method``: ``"closed"`` (identity, relu, clipped_relu only), ``"integrate"`` (any STE; the
    recipe :math:`\tfrac{\alpha}{2}[(1^\top v)^2 - \|v\|^2 - (1^\top v)(1^\top v^*) + v^\top v^*]
    + \|v\|^2\beta - (v^\top v^*)\gamma`, see :func:`span_coefficients`), or ``"auto"`` (closed when available).
    """
    check_choice("method", method, METHODS)
    mu = ste_registry.get(ste)
    clip = check_clip(clip)
    v, w, v_star, w_star = check_problem(v, w, v_star, w_star)
    return expected_at(mu, v, v_star, frame(w, w_star), clip, method, extra_breaks)


def expected_at(mu: STE, v, v_star, fr: Frame, clip: float, method: str = "auto", extra_breaks=()) -> np.ndarray:
    """:func:`expected_coarse_grad` on checked inputs (the descent loop calls this directly)."""
    form = closed_form_for(mu)
    if method == "closed" and form is None:
        raise ValueError(f"no closed form for STE {mu.label!r}; closed forms exist for the derivatives of "
                         f"{closed_form_names()} (matched by their piecewise tables, not by name)")
    if method == "integrate" or form is None:
        return _integrated(mu, v, v_star, fr, clip, extra_breaks)
    return form.expected(v, v_star, fr, clip)


def correlation(v, w, v_star, w_star, ste="relu", clip: float = 1.0) -> float:
    r""":math:`\langle E g_\mu, \partial_w f\rangle` (the paper's key quantity: positive means descent in ``w``)."""
    _, grad_w = population_grad(v, w, v_star, w_star)
    return float(expected_coarse_grad(v, w, v_star, w_star, ste, clip) @ grad_w)


def correlation_formula(v, w, v_star, w_star, ste="relu", clip: float = 1.0) -> float:
    r"""The claimed closed forms: relu :math:`\sin\theta(v^\top v^*)^2/(2(2\pi)^{3/2}\|w\|)`, identity twice that,
    clipped relu the relu value times :math:`2(\Phi(\mathrm{clip}/(\|w\|\sin\theta)) - 1/2)`."""
    mu = ste_registry.get(ste)
    form = closed_form_for(mu)
    if form is None:
        raise ValueError(f"no correlation formula for STE {mu.label!r}; formulas exist for the derivatives of "
                         f"{closed_form_names()}")
    v, w, v_star, w_star = check_problem(v, w, v_star, w_star)
    return form.correlation(float(v @ v_star), frame(w, w_star), check_clip(clip))


def descent_ratio(v, w, v_star, w_star, ste="relu", clip: float = 1.0) -> float:
    r""":math:`(\|\partial_v f\|^2 + \|E g_\mu\|^2) / (\|\partial_v f\|^2 + \langle E g_\mu, \partial_w f\rangle)`:
    squared length of the coarse step over its first-order decrease of ``f``. Bounded means a small step decreases
    ``f``; it blows up near the spurious minimizer for identity and tends to 0 for relu and clipped relu."""
    grad_v, grad_w = population_grad(v, w, v_star, w_star)
    g = expected_coarse_grad(v, w, v_star, w_star, ste, clip)
    gv2 = float(grad_v @ grad_v)
    return (gv2 + float(g @ g)) / (gv2 + float(g @ grad_w))


