r"""Synthetic multi-class data that no linear classifier separates (Long, Yin & Xin 2020, 2021).

Two generators, both symmetric under :math:`x \to -x` within every class, so the origin lies in the convex hull of
every class and hence in the intersection of any two hulls. An affine classifier ``argmax(A x + b)`` has convex
decision regions, so it cannot label two classes whose hulls meet: **no linear classifier reaches 100%**
(:func:`origin_in_convex_hull` checks the premise by linear programming).

* ``subspaces``: class ``k`` lives in its own ``subspace_dim``-dimensional subspace :math:`S_k`, the subspaces
  mutually orthogonal (a random orthonormal frame of :math:`\mathbb{R}^n`). A point is :math:`x = r\,Q_k u` with
  :math:`u` uniform on the unit sphere of :math:`S_k` (so both signs occur) and :math:`r` uniform on
  ``[margin, max_radius]``. Since :math:`S_k \perp S_l`, :math:`\mathrm{dist}(x, S_l) = \|x\| \ge` ``margin``: the
  margin is the distance from every point to every other class's subspace.
* ``cones``: the harder variant. Class ``k`` is the double cone of half-angle ``half_angle`` (degrees) around a random
  axis :math:`\pm a_k`: :math:`x = r\,s\,(\cos\phi\,a_k + \sin\phi\,t)` with :math:`s = \pm 1`,
  :math:`\phi` uniform on ``[0, half_angle]`` and :math:`t` a random unit vector orthogonal to :math:`a_k` in the
  whole space, so points of different classes are no longer orthogonal. Axes are drawn until the angle between any
  two axis *lines* is at least ``2 half_angle + margin``; then any two points of different classes are at least
  ``margin`` degrees apart as lines (:func:`min_cross_class_angle` measures it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import check_choice

KINDS = ("subspaces", "cones")


@dataclass(frozen=True)
class ClassifyData:
    """Inputs ``x`` (float64 ``[N, dim]``), labels ``y`` (int64 ``[N]``), and how they were made."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def __len__(self) -> int:
        return self.x.shape[0]


def _check_positive_int(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    g = rng.standard_normal((rows, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _radii(rng: np.random.Generator, rows: int, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, size=(rows, 1))


def orthogonal_subspaces(num_classes: int = 4, dim: int = 20, subspace_dim: int = 2, per_class: int = 50,
                         margin: float = 0.5, max_radius: float = 1.5, seed: int = 0) -> ClassifyData:
    """K classes in mutually orthogonal subspaces, both signs; every point at distance >= ``margin`` from the
    other classes' subspaces (see module docstring)."""
    k = _check_positive_int("num_classes", num_classes, 2)
    d = _check_positive_int("subspace_dim", subspace_dim)
    n = _check_positive_int("dim", dim)
    per = _check_positive_int("per_class", per_class)
    if k * d > n:
        raise ValueError(f"{k} orthogonal subspaces of dimension {d} need dim >= {k * d}, got dim={n}")
    if not (0 < margin <= max_radius):
        raise ValueError(f"need 0 < margin <= max_radius, got margin={margin}, max_radius={max_radius}")
    rng = np.random.default_rng(seed)
    frame, _ = np.linalg.qr(rng.standard_normal((n, n)))
    xs, ys = [], []
    for c in range(k):
        basis = frame[:, c * d:(c + 1) * d]  # [n, d], orthonormal columns
        coords = _unit_rows(rng, per, d) * _radii(rng, per, margin, max_radius)
        xs.append(coords @ basis.T)
        ys.append(np.full(per, c, dtype=np.int64))
    meta = {"kind": "subspaces", "num_classes": k, "dim": n, "subspace_dim": d, "per_class": per,
            "margin": float(margin), "max_radius": float(max_radius), "seed": seed}
    return _shuffled(rng, np.concatenate(xs), np.concatenate(ys), k, meta)


def cones(num_classes: int = 4, dim: int = 20, half_angle: float = 30.0, per_class: int = 50, margin: float = 10.0,
          min_radius: float = 0.5, max_radius: float = 1.5, seed: int = 0, max_tries: int = 10_000) -> ClassifyData:
    """K double cones (both signs) of half-angle ``half_angle`` degrees around random axes; any two points of
    different classes are at least ``margin`` degrees apart as lines (see module docstring)."""
    k = _check_positive_int("num_classes", num_classes, 2)
    n = _check_positive_int("dim", dim, 2)
    per = _check_positive_int("per_class", per_class)
    if not (0 <= half_angle and 0 < margin and 2 * half_angle + margin <= 90):
        raise ValueError(f"need half_angle >= 0, margin > 0 and 2*half_angle + margin <= 90 degrees, "
                         f"got half_angle={half_angle}, margin={margin}")
    if not (0 < min_radius <= max_radius):
        raise ValueError(f"need 0 < min_radius <= max_radius, got {min_radius}, {max_radius}")
    rng = np.random.default_rng(seed)
    need = np.cos(np.radians(2 * half_angle + margin))  # |cos| between axis lines must not exceed this
    for _ in range(max_tries):
        axes = _unit_rows(rng, k, n)
        cos = np.abs(axes @ axes.T)[~np.eye(k, dtype=bool)]
        if (cos <= need + 1e-12).all():
            break
    else:
        raise ValueError(f"could not place {k} axes {2 * half_angle + margin} degrees apart in dimension {n}; "
                         f"use a larger dim, fewer classes, a smaller half_angle or margin")
    xs, ys = [], []
    for c in range(k):
        a = axes[c]
        t = rng.standard_normal((per, n))
        t -= np.outer(t @ a, a)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        phi = np.radians(rng.uniform(0.0, half_angle, size=(per, 1)))
        sign = rng.choice([-1.0, 1.0], size=(per, 1))
        xs.append(sign * (np.cos(phi) * a + np.sin(phi) * t) * _radii(rng, per, min_radius, max_radius))
        ys.append(np.full(per, c, dtype=np.int64))
    meta = {"kind": "cones", "num_classes": k, "dim": n, "half_angle": float(half_angle), "per_class": per,
            "margin": float(margin), "min_radius": float(min_radius), "max_radius": float(max_radius), "seed": seed}
    return _shuffled(rng, np.concatenate(xs), np.concatenate(ys), k, meta)


def _shuffled(rng, x, y, k, meta) -> ClassifyData:
    order = rng.permutation(len(y))
    return ClassifyData(x[order], y[order], k, meta)


def make(kind: str, **options) -> ClassifyData:
    """``make("subspaces", ...)`` or ``make("cones", ...)`` with the generator's keyword options."""
    check_choice("synthetic data kind", kind, KINDS)
    return (orthogonal_subspaces if kind == "subspaces" else cones)(**options)


def min_cross_class_angle(x: np.ndarray, y: np.ndarray) -> float:
    """Smallest angle in degrees between the lines through two points of different classes."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = np.clip(np.abs(u @ u.T), 0.0, 1.0)
    cross = y[:, None] != y[None, :]
    return float(np.degrees(np.arccos(cos[cross].max())))


def origin_in_convex_hull(points: np.ndarray) -> bool:
    r"""Is :math:`0 \in \mathrm{conv}(\text{points})`? Feasibility LP: :math:`\lambda \ge 0`, :math:`\sum\lambda = 1`,
    :math:`\sum_i \lambda_i x_i = 0`."""
    from scipy.optimize import linprog

    n_points = points.shape[0]
    a_eq = np.vstack([points.T, np.ones((1, n_points))])
    b_eq = np.concatenate([np.zeros(points.shape[1]), [1.0]])
    res = linprog(np.zeros(n_points), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    return bool(res.status == 0)
