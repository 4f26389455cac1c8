r"""Coarse gradient descent on the two-linear-layer model (Algorithm 1 of Yin et al., ICLR 2019).

Simultaneous steps, no normalisation of ``w``:

.. math::  v^{t+1} = v^t - \eta\,\partial_v f(v^t, w^t),\qquad w^{t+1} = w^t - \eta\,E g_\mu(v^t, w^t)

with the exact expectations (``batch_size=None``) or with both replaced by the means over a fresh mini-batch of
``batch_size`` inputs per step (the practical algorithm). Every step records the population loss ``f``, ``theta``,
``||w||``, ``||v - v*||`` and how the coarse gradient correlates with the true one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ... import ste as ste_registry
from .expected import expected_at
from .model import check_clip, check_problem, frame, grad_v_at, grad_w_at, loss_at
from .sampling import sample_terms

RECORDED = ("loss", "theta", "w_norm", "v_error", "grad_v_norm", "grad_w_norm", "inner", "cosine", "cosine_w")


@dataclass
class Trajectory:
    """Per-step records (index ``t`` is the iterate before step ``t+1``; index 0 is the start).

    ``grad_w_norm`` is :math:`|v^\\top v^*|/(2\\pi\\|w\\|)`, the norm of :math:`\\partial_w f` off the kinks
    :math:`\\theta \\in \\{0, \\pi\\}` (the size of the cone's slope there).
    ``inner`` = :math:`\\langle(\\partial_v f, g_w), \\nabla f\\rangle` and ``cosine`` the cosine of the same two
    vectors (the full coarse step versus the true gradient); ``cosine_w`` the cosine of :math:`g_w` and
    :math:`\\partial_w f` (0 where either vanishes). ``g_w`` is :math:`E g_\\mu` for exact descent and the mini-batch
    mean otherwise. ``stopped`` says why the run ended early ("" if it ran all steps).
    """

    ste: str
    eta: float
    batch_size: int | None
    records: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in RECORDED})
    v: np.ndarray | None = None
    w: np.ndarray | None = None
    stopped: str = ""

    def array(self, key: str) -> np.ndarray:
        return np.asarray(self.records[key], dtype=np.float64)

    def to_dict(self) -> dict:
        return {"ste": self.ste, "eta": self.eta, "batch_size": self.batch_size, "stopped": self.stopped,
                "v": self.v, "w": self.w, **self.records}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


def coarse_gradient_descent(v0, w0, v_star, w_star, ste="relu", eta: float = 0.1, steps: int = 1000,
                            clip: float = 1.0, batch_size: int | None = None, seed: int = 0) -> Trajectory:
    """Run ``steps`` coarse gradient steps from ``(v0, w0)``; see the module docstring.

    Stops early (``Trajectory.stopped``) if ``w`` becomes exactly 0 or the iterate stops being finite.
    """
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"eta must be a positive finite number, got {eta}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be None (exact expectation) or >= 1, got {batch_size}")
    mu = ste_registry.get(ste)
    clip = check_clip(clip)
    v, w, v_star, w_star = check_problem(v0, w0, v_star, w_star)
    v, w = v.copy(), w.copy()
    traj = Trajectory(mu.label, float(eta), batch_size)
    gen = torch.Generator().manual_seed(seed)
    t_vs, t_ws = torch.from_numpy(v_star), torch.from_numpy(w_star)
    for t in range(steps + 1):
        fr = frame(w, w_star)
        grad_v, grad_w = grad_v_at(v, v_star, fr.theta), grad_w_at(v, v_star, fr)
        if batch_size is None:
            step_v, step_w = grad_v, expected_at(mu, v, v_star, fr, clip)
        else:
            z = torch.randn(batch_size, v.size, w.size, generator=gen, dtype=torch.float64)
            terms = sample_terms(z, torch.from_numpy(v), torch.from_numpy(w), t_vs, t_ws, mu, clip)
            step_v, step_w = terms.grad_v.mean(0).numpy(), terms.grad_w.mean(0).numpy()
        true = np.concatenate([grad_v, grad_w])
        coarse = np.concatenate([step_v, step_w])
        rec = traj.records
        rec["loss"].append(loss_at(v, v_star, fr.theta))
        rec["theta"].append(fr.theta)
        rec["w_norm"].append(fr.norm)
        rec["v_error"].append(float(np.linalg.norm(v - v_star)))
        rec["grad_v_norm"].append(float(np.linalg.norm(grad_v)))
        rec["grad_w_norm"].append(abs(float(v @ v_star)) / (2 * math.pi * fr.norm))
        rec["inner"].append(float(coarse @ true))
        rec["cosine"].append(_cos(coarse, true))
        rec["cosine_w"].append(_cos(step_w, grad_w))
        if t == steps:
            break
        v, w = v - eta * step_v, w - eta * step_w
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
            traj.stopped = f"non-finite iterate after step {t + 1}"
            break
        if not np.any(w):
            traj.stopped = f"w became exactly 0 after step {t + 1}"
            break
    traj.v, traj.w = v, w
    return traj

