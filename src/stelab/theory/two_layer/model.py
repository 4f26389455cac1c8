r"""The two-linear-layer model itself: input checks, the plane of ``w`` and ``w*``, the population loss and gradient
in closed form, the critical points, and the problem generators (random teachers, a student at a given angle).

See :mod:`stelab.theory.two_layer` for the model and its formulas. Float64 numpy throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SQRT_2PI = math.sqrt(2 * math.pi)
# Below this sin(theta) the pair (w, w*) is treated as collinear: u is undefined and set to 0.
COLLINEAR = 1e-14


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
    u = perp / s if s > COLLINEAR else np.zeros_like(w)
    return Frame(norm, w_hat, u, theta)


def angle(w, w_star) -> float:
    """The angle between ``w`` and ``w_star`` in ``[0, pi]``."""
    _, w, _, w_star = check_problem([0.0], w, [0.0], w_star)
    return frame(w, w_star).theta


# ---------------------------------------------------------------------------------------------------------------------
# Population loss and gradient
# ---------------------------------------------------------------------------------------------------------------------
def loss_at(v, v_star, theta: float) -> float:
    """:math:`f` on checked inputs, from ``theta`` (the descent loop has the frame already)."""
    ones_v, ones_s = v.sum(), v_star.sum()
    vv = v @ v + ones_v**2
    cross = (1 - 2 * theta / math.pi) * (v @ v_star) + ones_v * ones_s
    ss = v_star @ v_star + ones_s**2
    return float((vv - 2 * cross + ss) / 8)


def grad_v_at(v, v_star, theta: float) -> np.ndarray:
    return (v + v.sum() - (1 - 2 * theta / math.pi) * v_star - v_star.sum()) / 4


def grad_w_at(v, v_star, fr: Frame) -> np.ndarray:
    return -(v @ v_star) / (2 * math.pi * fr.norm) * fr.u


def population_loss(v, w, v_star, w_star) -> float:
    """:math:`f(v, w) = E_Z \\ell`, closed form (module docstring)."""
    v, w, v_star, w_star = check_problem(v, w, v_star, w_star)
    return loss_at(v, v_star, frame(w, w_star).theta)


def population_grad(v, w, v_star, w_star) -> tuple[np.ndarray, np.ndarray]:
    """``(df/dv, df/dw)`` in closed form; ``df/dw = 0`` at ``theta in {0, pi}`` (see module docstring)."""
    v, w, v_star, w_star = check_problem(v, w, v_star, w_star)
    fr = frame(w, w_star)
    return grad_v_at(v, v_star, fr.theta), grad_w_at(v, v_star, fr)


def check_clip(clip) -> float:
    """``clip`` (the STE's ``top``) as a positive finite float."""
    clip = float(clip)
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive finite number, got {clip}")
    return clip


def h_term(v, v_star) -> float:
    """:math:`h = \\|v\\|^2 + (1^\\top v)^2 - (1^\\top v)(1^\\top v^*) + v^\\top v^*`."""
    return float(v @ v + v.sum() ** 2 - v.sum() * v_star.sum() + v @ v_star)


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


# ---------------------------------------------------------------------------------------------------------------------
# Problem generators
# ---------------------------------------------------------------------------------------------------------------------
def random_problem(m: int, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A random teacher: ``v* ~ N(0, I_m)``, ``w*`` uniform on the unit sphere of R^n (seeded)."""
    if m < 1 or n < 1:
        raise ValueError(f"m and n must be >= 1, got m={m}, n={n}")
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(n)
    return {"v_star": rng.standard_normal(m), "w_star": w_star / np.linalg.norm(w_star)}


def teacher_with_spurious_minima(m: int, n: int, seed: int = 0, tries: int = 1000) -> dict:
    """The first :func:`random_problem` from ``seed`` on whose teacher has spurious minimizers
    (``(1^T v*)^2 < (m+1)/2 ||v*||^2``) with a clearly nonzero identity coarse gradient there
    (``|1^T v*| > ||v*||/2``); ``seed`` in the result is the one used."""
    for s in range(seed, seed + tries):
        p = random_problem(m, n, s)
        total, sq = p["v_star"].sum(), p["v_star"] @ p["v_star"]
        if total * total < (m + 1) / 2 * sq and total * total > sq / 4:
            return {**p, "seed": s}
    raise RuntimeError(f"no teacher with a spurious minimizer in seeds {seed}..{seed + tries - 1}")


def student_near_teacher(m: int, n: int, theta: float, w_norm: float = 1.3, v_noise: float = 0.3, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A reproducible ``(v, w, v*, w*)``: unit ``w*`` uniform on the sphere, ``w`` at angle ``theta`` to it (in a
    random plane) with norm ``w_norm``, ``v* ~ N(0, I_m)`` and ``v = v* + v_noise N(0, I_m)``."""
    if m < 1 or n < 2:
        raise ValueError(f"need m >= 1 and n >= 2, got m={m}, n={n}")
    rng = np.random.default_rng(seed)
    w_star = rng.standard_normal(n)
    w_star /= np.linalg.norm(w_star)
    other = rng.standard_normal(n)
    other -= (other @ w_star) * w_star
    other /= np.linalg.norm(other)
    w = w_norm * (math.cos(theta) * w_star + math.sin(theta) * other)
    v_star = rng.standard_normal(m)
    v = v_star + v_noise * rng.standard_normal(m)
    return v, w, v_star, w_star
