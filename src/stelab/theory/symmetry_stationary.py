r"""The stationary set of the one-unit misspecified model, computed two independent ways, and what each STE's
coarse gradient does on the ray through every stationary point.

Analytic (uniform angles, :math:`\tau = 0`; ``docs/symmetry.md``): with :math:`B(\theta) = (\kappa\pi + 2\cos\theta
- \tfrac{2b}{3}\cos 3\theta)/(2\pi)` and :math:`v = 2B`, a point :math:`(v, w = s(\cos\theta, \sin\theta))` is
stationary iff :math:`v B'(\theta) = 0`:

* :math:`v \ne 0`: :math:`\sin\theta = 0`, or :math:`\sin^2\theta = (3b - 1)/(4b)` (when that lies in [0, 1]);
* :math:`v = 0`: :math:`B(\theta) = 0`, i.e. :math:`c = \cos\theta` solves :math:`\tfrac{8b}{3}c^3 - (2 + 2b)c -
  \kappa\pi = 0`.

Numerical: the reduced loss :math:`f^*(\theta) = \min_v f` computed by quadrature from the label function alone,
its derivative by central differences, every sign change on a grid refined by Brent's method (Danskin:
:math:`f^{*\prime}(\theta) = \partial_\theta f(v^*, \theta)`, and at :math:`v^* = 0` it changes sign with :math:`B`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import brentq

from .. import ste as ste_registry
from .symmetry import DTYPE, loss, radial_tangential
from .symmetry_exact import AngularModel


@dataclass(frozen=True)
class StationaryPoint:
    theta: float
    v: float
    loss: float
    kind: str

    def w(self, norm: float = 1.0) -> torch.Tensor:
        return norm * torch.tensor([[math.cos(self.theta), math.sin(self.theta)]], dtype=DTYPE)


def _wrap(theta: float) -> float:
    """Angle in (-pi, pi]."""
    t = math.atan2(math.sin(theta), math.cos(theta))
    return math.pi if t <= -math.pi + 1e-15 else t


def _require_one_unit_symmetric(model: AngularModel) -> None:
    if not model.symmetric:
        raise ValueError("the stationary set is enumerated for uniform angles only (tilt=0)")


def stationary_points_analytic(model: AngularModel) -> list[StationaryPoint]:
    """Closed-form enumeration (see the module docstring)."""
    _require_one_unit_symmetric(model)
    k, b = model.kappa, model.b

    def big_b(t: float) -> float:
        return (k * math.pi + 2 * math.cos(t) - 2 * b / 3 * math.cos(3 * t)) / (2 * math.pi)

    def b2(t: float) -> float:  # B''
        return (-2 * math.cos(t) + 6 * b * math.cos(3 * t)) / (2 * math.pi)

    thetas = [0.0, math.pi]
    if b != 0:
        q = (3 * b - 1) / (4 * b)
        if 0 <= q <= 1:
            a = math.asin(math.sqrt(q))
            thetas += [a, -a, math.pi - a, a - math.pi]
    roots = np.roots([8 * b / 3, 0.0, -(2 + 2 * b), -k * math.pi]) if b != 0 else np.array([-k * math.pi / 2])
    for c in roots:
        if abs(c.imag) < 1e-12 and abs(c.real) <= 1:
            a = math.acos(float(c.real))
            thetas += [a, -a]
    points = []
    for t in _dedupe([_wrap(t) for t in thetas]):
        v = 2 * big_b(t)
        # joint Hessian of f(v, theta) (the radial direction is flat): [[1/2, -B'], [-B', -v B'']]
        if abs(v) < 1e-12:
            kind = "saddle (v=0)"
        else:
            kind = "minimum" if v * b2(t) < 0 else "saddle"
        points.append(StationaryPoint(t, v, _reduced_loss_closed(model, t), kind))
    return _mark_global(points)


def _reduced_loss_closed(model: AngularModel, theta: float) -> float:
    """:math:`f^* = \\tfrac12(\\mathbb E y^2 - 2B^2)` with :math:`\\mathbb E y^2 = \\kappa^2 + (1 + b^2)/2`."""
    k, b = model.kappa, model.b
    big_b = (k * math.pi + 2 * math.cos(theta) - 2 * b / 3 * math.cos(3 * theta)) / (2 * math.pi)
    return 0.5 * (k * k + (1 + b * b) / 2 - 2 * big_b * big_b)


def _mark_global(points: list[StationaryPoint]) -> list[StationaryPoint]:
    best = min(p.loss for p in points)
    return sorted((StationaryPoint(p.theta, p.v, p.loss, "global minimum" if p.kind == "minimum" and
                                   p.loss <= best + 1e-12 else p.kind) for p in points), key=lambda p: p.theta)


def _dedupe(thetas: list[float], tol: float = 1e-9) -> list[float]:
    out: list[float] = []
    for t in sorted(thetas):
        if not any(abs(math.remainder(t - u, 2 * math.pi)) < tol for u in out):
            out.append(t)
    return out


def reduced_loss(model: AngularModel, theta: float) -> tuple[float, float]:
    """``(f*(theta), v*(theta))`` by quadrature."""
    W = torch.tensor([[math.cos(theta), math.sin(theta)]], dtype=DTYPE)
    data = model.quadrature(W)
    v = model.optimal_v(W, data)
    return loss(v, W, data), float(v[0])


def stationary_points_numeric(model: AngularModel, grid: int = 360, h: float = 1e-6) -> list[StationaryPoint]:
    """Roots of :math:`f^{*\\prime}` found by quadrature, central differences and Brent's method."""
    _require_one_unit_symmetric(model)

    def dfs(t: float) -> float:
        return (reduced_loss(model, t + h)[0] - reduced_loss(model, t - h)[0]) / (2 * h)

    # offset the grid so no grid point sits on a root at a "round" angle such as 0 or pi
    ts = -math.pi + 0.0123 + np.arange(grid + 1) * (2 * math.pi / grid)
    ds = np.array([dfs(t) for t in ts])
    points = []
    for i in range(grid):
        if ds[i] == 0 or ds[i] * ds[i + 1] < 0:
            t = ts[i] if ds[i] == 0 else brentq(dfs, ts[i], ts[i + 1], xtol=1e-13)
            f, v = reduced_loss(model, t)
            # curvature of f* by differences, and whether v* = 0: classifies like the Hessian in the analytic route
            curv = (reduced_loss(model, t + 1e-3)[0] - 2 * f + reduced_loss(model, t - 1e-3)[0]) / 1e-6
            kind = "saddle (v=0)" if abs(v) < 1e-7 else ("minimum" if curv > 0 else "saddle")
            points.append(StationaryPoint(_wrap(t), v, f, kind))
    return _mark_global(points)


def enumeration_gap(first: list[StationaryPoint], second: list[StationaryPoint]) -> float:
    """Largest difference in (theta mod 2 pi, v, loss) between two enumerations, each point matched to its nearest
    in angle; ``inf`` when they do not have the same number of points."""
    if len(first) != len(second):
        return math.inf
    gap = 0.0
    for p in first:
        q = min(second, key=lambda q: abs(math.remainder(p.theta - q.theta, 2 * math.pi)))
        gap = max(gap, abs(math.remainder(p.theta - q.theta, 2 * math.pi)), abs(p.v - q.v), abs(p.loss - q.loss))
    return gap


@dataclass(frozen=True)
class RayBehaviour:
    """One STE on the ray ``s * (cos theta, sin theta)`` at fixed ``v``."""

    ste: str
    norm_at_1: float
    radial_at_1: float
    tangential_at_1: float
    scale_invariant: bool
    zero_norms: list[float]  # s where the radial part vanishes (for STEs that are not scale-invariant)
    grad_norm_at_zero: list[float]  # full coarse-gradient norm there (is it a zero of the whole gradient?)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def ray_behaviour(model: AngularModel, point: StationaryPoint, ste: str, s_grid: np.ndarray | None = None,
                  top: float = 1.0) -> RayBehaviour:
    """The coarse gradient of ``ste`` along the ray through ``point``: at ``||w|| = 1``, and the norms where its
    radial part changes sign (Brent-refined), with the whole gradient's norm there."""
    mu = ste_registry.get(ste)
    v = torch.tensor([point.v], dtype=DTYPE)
    s_grid = np.geomspace(0.25, 1e3, 121) if s_grid is None else s_grid

    def parts(s: float) -> tuple[float, float, float]:
        W = point.w(s)
        g = model.coarse_grad_w(v, W, ste, top)
        r, t = radial_tangential(W, g)
        return float(g.norm()), float(r[0]), float(t.norm())

    n1, r1, t1 = parts(1.0)
    zeros, at_zero = [], []
    if not mu.scale_invariant and abs(point.v) > 1e-12:
        rs = radial_along_ray(model, point, ste, s_grid, top)
        for i in range(len(s_grid) - 1):
            if rs[i] * rs[i + 1] < 0:
                s0 = brentq(lambda s: parts(s)[1], s_grid[i], s_grid[i + 1], xtol=1e-13, rtol=1e-13)
                zeros.append(s0)
                at_zero.append(parts(s0)[0])
    return RayBehaviour(mu.label, n1, r1, t1, mu.scale_invariant, zeros, at_zero)


def radial_along_ray(model: AngularModel, point: StationaryPoint, ste: str, s_values: np.ndarray,
                     top: float = 1.0) -> np.ndarray:
    """Radial part :math:`\\hat w\\cdot g` of the coarse gradient at ``s * (cos theta, sin theta)`` for each ``s``
    (positive: a descent step shrinks ``||w||``)."""
    v = torch.tensor([point.v], dtype=DTYPE)
    out = []
    for s in s_values:
        W = point.w(float(s))
        out.append(float(radial_tangential(W, model.coarse_grad_w(v, W, ste, top))[0][0]))
    return np.array(out)
