r"""The two-linear-layer model of Yin et al. (ICLR 2019): exact population loss, gradients and coarse gradients.

Model. :math:`Z \in \mathbb{R}^{m\times n}` has i.i.d. :math:`N(0,1)` entries (rows are patches sharing the filter
:math:`w \in \mathbb{R}^n`), :math:`v \in \mathbb{R}^m`, :math:`\sigma(x) = 1\{x > 0\}`, teacher :math:`(v^*, w^*)`,

.. math::  \ell(v, w; Z) = \tfrac12\big(v^\top\sigma(Zw) - v^{*\top}\sigma(Zw^*)\big)^2,\qquad f(v, w) = E_Z\,\ell.

:math:`\sigma(Zw^*)` depends on the direction of :math:`w^*` only, so ``w_star`` is normalised here (the paper takes
:math:`\|w^*\| = 1`). With :math:`J = 11^\top`, :math:`\theta = \angle(w, w^*)`, :math:`\hat w = w/\|w\|` and
:math:`u = (w^* - \cos\theta\,\hat w)/\sin\theta`:

.. math::
    f = \tfrac18\big[v^\top(I+J)v - 2v^\top((1-\tfrac{2\theta}{\pi})I + J)v^* + v^{*\top}(I+J)v^*\big],\quad
    \partial_v f = \tfrac14(I+J)v - \tfrac14((1-\tfrac{2\theta}{\pi})I+J)v^*,\quad
    \partial_w f = -\frac{v^\top v^*}{2\pi\|w\|}\,u.

The coarse gradient of an STE :math:`\mu` replaces :math:`\sigma'` by :math:`\mu'`:
:math:`g_\mu = Z^\top(\mu'(Zw)\odot v)\,(v^\top\sigma(Zw) - v^{*\top}\sigma(Zw^*))`. Its expectation
(:func:`expected_coarse_grad`) is in closed form for identity, relu and clipped relu and by exact-in-one-variable,
Gauss-Legendre-in-the-other integration over :math:`\mathrm{span}(w, w^*)` for every other STE; see
``docs/theory.md`` for the derivations. Every STE evaluation goes through :func:`stelab.ste.get` so the theory uses
the same :math:`\mu'` as the training code. Float64 throughout.

At :math:`\theta \in \{0, \pi\}` the loss is not differentiable in :math:`w` (it is a cone in the component of
:math:`w` orthogonal to :math:`w^*`, unless :math:`v^\top v^* = 0`); :func:`population_grad` then returns
:math:`\partial_w f = 0`, the minimum-norm element of the Clarke subdifferential, and ``u`` is taken as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr

from .. import ste as ste_registry
from ..errors import check_choice
from ..ste import STE

SQRT_2PI = math.sqrt(2 * math.pi)
CLOSED_FORMS = ("identity", "relu", "clipped_relu")
METHODS = ("auto", "closed", "integrate")
# Below this sin(theta) the pair (w, w*) is treated as collinear: u is undefined and set to 0.
_COLLINEAR = 1e-14


# ---------------------------------------------------------------------------------------------------------------------
# Input checking and geometry
# ---------------------------------------------------------------------------------------------------------------------
def _vector(x, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def check_problem(v, w, v_star, w_star) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert ``(v, w, v_star, w_star)`` to float64 numpy vectors; ``w_star`` is normalised."""
    v, w, v_star, w_star = _vector(v, "v"), _vector(w, "w"), _vector(v_star, "v_star"), _vector(w_star, "w_star")
    if v.shape != v_star.shape:
        raise ValueError(f"v and v_star must have the same length m >= 1, got {v.size} and {v_star.size}")
    if w.shape != w_star.shape:
        raise ValueError(f"w and w_star must have the same length n >= 1, got {w.size} and {w_star.size}")
    if not np.any(w):
        raise ValueError("w must be nonzero (the angle theta and the unit vector w/||w|| are undefined at w = 0)")
    norm = np.linalg.norm(w_star)
    if norm == 0:
        raise ValueError("w_star must be nonzero")
    return v, w, v_star, w_star / norm


@dataclass(frozen=True)
class Frame:
    """The plane of ``w`` and ``w*``: ``w = norm * w_hat``, ``w* = cos(theta) w_hat + sin(theta) u``."""

    norm: float
    w_hat: np.ndarray
    u: np.ndarray
    theta: float


def frame(w: np.ndarray, w_star: np.ndarray) -> Frame:
    """``||w||``, ``w_hat``, ``u`` and ``theta`` (via atan2, accurate near 0 and pi); ``w_star`` must be unit."""
    norm = float(np.linalg.norm(w))
    w_hat = w / norm
    c = float(w_star @ w_hat)
    perp = w_star - c * w_hat
    s = float(np.linalg.norm(perp))
    theta = math.atan2(s, c)
    u = perp / s if s > _COLLINEAR else np.zeros_like(w)
    return Frame(norm, w_hat, u, theta)


def angle(w, w_star) -> float:
    """The angle between ``w`` and ``w_star`` in ``[0, pi]``."""
    _, w, _, w_star = check_problem([0.0], w, [0.0], w_star)
    return frame(w, w_star).theta


# ---------------------------------------------------------------------------------------------------------------------
# Population loss and gradient
# ---------------------------------------------------------------------------------------------------------------------
def _loss(v, v_star, theta: float) -> float:
    ones_v, ones_s = v.sum(), v_star.sum()
    vv = v @ v + ones_v**2
    cross = (1 - 2 * theta / math.pi) * (v @ v_star) + ones_v * ones_s
    ss = v_star @ v_star + ones_s**2
    return float((vv - 2 * cross + ss) / 8)


def _grad_v(v, v_star, theta: float) -> np.ndarray:
    return (v + v.sum() - (1 - 2 * theta / math.pi) * v_star - v_star.sum()) / 4


def _grad_w(v, v_star, fr: Frame) -> np.ndarray:
    return -(v @ v_star) / (2 * math.pi * fr.norm) * fr.u


def population_loss(v, w, v_star, w_star) -> float:
    """:math:`f(v, w) = E_Z \\ell`, closed form (module docstring)."""
    v, w, v_star, w_star = check_problem(v, w, v_star, w_star)
    return _loss(v, v_star, frame(w, w_star).theta)


def population_grad(v, w, v_star, w_star) -> tuple[np.ndarray, np.ndarray]:
    """``(df/dv, df/dw)`` in closed form; ``df/dw = 0`` at ``theta in {0, pi}`` (see module docstring)."""
    v, w, v_star, w_star = check_problem(v, w, v_star, w_star)
    fr = frame(w, w_star)
    return _grad_v(v, v_star, fr.theta), _grad_w(v, v_star, fr)


def h_term(v, v_star) -> float:
    """:math:`h = \\|v\\|^2 + (1^\\top v)^2 - (1^\\top v)(1^\\top v^*) + v^\\top v^*`."""
    return float(v @ v + v.sum() ** 2 - v.sum() * v_star.sum() + v @ v_star)


# ---------------------------------------------------------------------------------------------------------------------
# Expected coarse gradient
# ---------------------------------------------------------------------------------------------------------------------
def _norm_pdf(x: float) -> float:
    return math.exp(-x * x / 2) / SQRT_2PI


def _closed_form(name: str, v, v_star, fr: Frame, clip: float) -> np.ndarray:
    vs, h = float(v @ v_star), h_term(v, v_star)
    sin, cos = math.sin(fr.theta), math.cos(fr.theta)
    if name == "identity":
        w_star = cos * fr.w_hat + sin * fr.u
        return ((v @ v) * fr.w_hat - vs * w_star) / SQRT_2PI
    if name == "relu":
        return (h - (1 + cos) * vs) / (2 * SQRT_2PI) * fr.w_hat - sin * vs / (2 * SQRT_2PI) * fr.u
    # clipped relu with clip level `clip`: mu'(x) = 1{0 < x <= clip}, a = clip/||w||.
    a = clip / fr.norm
    p = (1 - math.exp(-a * a / 2)) / SQRT_2PI
    # Phi(a / sin) and Phi(a cot) at the collinear limits sin -> 0+ (theta -> 0 or pi).
    big = float(ndtr(a / sin)) if sin > _COLLINEAR else 1.0
    cot = float(ndtr(a * cos / sin)) if sin > _COLLINEAR else float(cos > 0)
    b = sin / SQRT_2PI * (big - 0.5)
    a_coef = 1 / (2 * SQRT_2PI) - _norm_pdf(a) * cot + cos / SQRT_2PI * (big - 0.5)
    return (p / 2 * h - a_coef * vs) * fr.w_hat - b * vs * fr.u


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
    if sin > _COLLINEAR:
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
    clip = _check_clip(clip)
    v, w, v_star, w_star = check_problem(v, w, v_star, w_star)
    return _expected(mu, v, v_star, frame(w, w_star), clip, method, extra_breaks)


def _expected(mu: STE, v, v_star, fr: Frame, clip: float, method: str = "auto", extra_breaks=()) -> np.ndarray:
    """:func:`expected_coarse_grad` on checked inputs (the descent loop calls this directly)."""
    closed = mu.name in CLOSED_FORMS and not mu.params
    if method == "closed" and not closed:
        raise ValueError(f"no closed form for STE {mu.label!r}; closed forms exist for {', '.join(CLOSED_FORMS)}")
    if method == "integrate" or not closed:
        return _integrated(mu, v, v_star, fr, clip, extra_breaks)
    return _closed_form(mu.name, v, v_star, fr, clip)


def _check_clip(clip) -> float:
    clip = float(clip)
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive finite number, got {clip}")
    return clip


def correlation(v, w, v_star, w_star, ste="relu", clip: float = 1.0) -> float:
    r""":math:`\langle E g_\mu, \partial_w f\rangle` (the paper's key quantity: positive means descent in ``w``)."""
    _, grad_w = population_grad(v, w, v_star, w_star)
    return float(expected_coarse_grad(v, w, v_star, w_star, ste, clip) @ grad_w)


def correlation_formula(v, w, v_star, w_star, ste="relu", clip: float = 1.0) -> float:
    r"""The claimed closed forms: relu :math:`\sin\theta(v^\top v^*)^2/(2(2\pi)^{3/2}\|w\|)`, identity twice that,
    clipped relu the relu value times :math:`2(\Phi(\mathrm{clip}/(\|w\|\sin\theta)) - 1/2)`."""
    v, w, v_star, w_star = check_problem(v, w, v_star, w_star)
    fr = frame(w, w_star)
    relu = math.sin(fr.theta) * float(v @ v_star) ** 2 / (2 * (2 * math.pi) ** 1.5 * fr.norm)
    name = ste_registry.get(ste).name
    if name == "relu":
        return relu
    if name == "identity":
        return 2 * relu
    if name == "clipped_relu":
        sin = math.sin(fr.theta)
        return relu * 2 * (float(ndtr(_check_clip(clip) / (fr.norm * sin))) - 0.5) if sin > 0 else 0.0
    raise ValueError(f"no correlation formula for STE {name!r}; formulas exist for {', '.join(CLOSED_FORMS)}")


def descent_ratio(v, w, v_star, w_star, ste="relu", clip: float = 1.0) -> float:
    r""":math:`(\|\partial_v f\|^2 + \|E g_\mu\|^2) / (\|\partial_v f\|^2 + \langle E g_\mu, \partial_w f\rangle)`:
    squared length of the coarse step over its first-order decrease of ``f``. Bounded means a small step decreases
    ``f``; it blows up near the spurious minimizer for identity and tends to 0 for relu and clipped relu."""
    grad_v, grad_w = population_grad(v, w, v_star, w_star)
    g = expected_coarse_grad(v, w, v_star, w_star, ste, clip)
    gv2 = float(grad_v @ grad_v)
    return (gv2 + float(g @ g)) / (gv2 + float(g @ grad_w))


# ---------------------------------------------------------------------------------------------------------------------
# Critical points
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CriticalPoint:
    """A critical point of ``f``: ``v`` and the angle ``theta``; ``w`` is a unit-norm representative (any positive
    multiple of ``w`` and any rotation about ``w*`` is critical too)."""

    kind: str  # "global_min", "saddle" or "spurious_min"
    theta: float
    v: np.ndarray
    w: np.ndarray


def unit_at_angle(w_star: np.ndarray, theta: float) -> np.ndarray:
    """A unit vector at angle ``theta`` from ``w_star`` (rotated towards the coordinate axis least parallel to it)."""
    w_star = _vector(w_star, "w_star")
    if not np.any(w_star):
        raise ValueError("w_star must be nonzero")
    w_star = w_star / np.linalg.norm(w_star)
    axis = np.eye(w_star.size)[int(np.argmin(np.abs(w_star)))]
    perp = axis - (axis @ w_star) * w_star
    if np.linalg.norm(perp) < 1e-12:
        raise ValueError("an angle strictly between 0 and pi needs n >= 2")
    perp /= np.linalg.norm(perp)
    return math.cos(theta) * w_star + math.sin(theta) * perp


def critical_points(v_star, w_star) -> list[CriticalPoint]:
    r"""The critical points of f (docs/theory.md): the global minimizers :math:`\theta = 0, v = v^*`; and when
    :math:`(1^\top v^*)^2 < \frac{m+1}{2}\|v^*\|^2`, the spurious local minimizers :math:`\theta = \pi`,
    :math:`v = (I+J)^{-1}(J-I)v^*` and (for ``n >= 2``) the saddle points
    :math:`\theta = \frac{\pi}{2}\frac{(m+1)\|v^*\|^2}{D}`, :math:`v = (I+J)^{-1}(-\frac{(1^\top v^*)^2}{D}I+J)v^*`,
    :math:`D = (m+1)\|v^*\|^2 - (1^\top v^*)^2`."""
    v_star, w_star = _vector(v_star, "v_star"), _vector(w_star, "w_star")
    if not np.any(w_star):
        raise ValueError("w_star must be nonzero")
    w_star = w_star / np.linalg.norm(w_star)
    m = v_star.size
    s, ss = float(v_star.sum()), float(v_star @ v_star)

    def solve(x: np.ndarray) -> np.ndarray:  # (I + J)^{-1} x = x - (1'x)/(m+1) 1 (Sherman-Morrison)
        return x - x.sum() / (m + 1)

    points = [CriticalPoint("global_min", 0.0, v_star.copy(), w_star.copy())]
    if s * s < (m + 1) / 2 * ss:
        d = (m + 1) * ss - s * s
        if w_star.size >= 2:
            theta = math.pi / 2 * (m + 1) * ss / d
            v = solve(-(s * s) / d * v_star + s)
            points.append(CriticalPoint("saddle", theta, v, unit_at_angle(w_star, theta)))
        points.append(CriticalPoint("spurious_min", math.pi, solve(s - v_star), -w_star))
    return points


# Monte Carlo and descent live in their own modules; re-exported so ``two_layer`` is the one entry point.
from .two_layer_descent import Trajectory, coarse_gradient_descent, random_problem  # noqa: E402
from .two_layer_sampling import MonteCarlo, sample_coarse_grad, sample_coarse_grads, sample_terms  # noqa: E402

__all__ = [
    "CLOSED_FORMS", "CriticalPoint", "Frame", "MonteCarlo", "Trajectory", "angle", "check_problem",
    "coarse_gradient_descent", "correlation", "correlation_formula", "critical_points", "descent_ratio",
    "expected_coarse_grad", "frame", "h_term", "unit_at_angle", "population_grad", "population_loss", "random_problem",
    "sample_coarse_grad", "sample_coarse_grads", "sample_terms", "span_coefficients",
]
