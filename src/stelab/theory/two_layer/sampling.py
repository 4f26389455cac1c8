r"""Monte Carlo for the two-linear-layer model: per-sample losses, true v-gradients and coarse w-gradients.

For a batch of inputs :math:`Z_b` (shape ``(B, m, n)``, i.i.d. :math:`N(0,1)`), with residual
:math:`r_b = v^\top\sigma(Z_b w) - v^{*\top}\sigma(Z_b w^*)`:
:math:`\ell_b = r_b^2/2`, :math:`\nabla_v \ell_b = \sigma(Z_b w)\,r_b` (the exact sample gradient, whose mean is
:math:`\partial_v f`), and :math:`g_b = Z_b^\top(\mu'(Z_b w)\odot v)\,r_b` with :math:`\mu'` from the core STE
registry. Torch float64, seeded :class:`torch.Generator`, batched so memory stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ... import ste as ste_registry
from .model import check_clip, check_problem


@dataclass(frozen=True)
class SampleTerms:
    """Per-sample loss ``(B,)``, v-gradient ``(B, m)`` and coarse w-gradient ``(B, n)``."""

    loss: Tensor
    grad_v: Tensor
    grad_w: Tensor


def teacher_outputs(z: Tensor, v_star: Tensor, w_star: Tensor) -> Tensor:
    r"""The teacher's outputs :math:`v^{*\top}\sigma(Z_b w^*)`, shape ``(B,)``, for inputs ``z`` of shape
    ``(B, m, n)``."""
    return (z @ w_star > 0).to(z.dtype) @ v_star


def sample_terms(z: Tensor, v: Tensor, w: Tensor, v_star: Tensor, w_star: Tensor, ste, clip: float = 1.0
                 ) -> SampleTerms:
    """Per-sample terms for inputs ``z`` of shape ``(B, m, n)``; all tensors float64."""
    mu = ste_registry.get(ste)
    pre = z @ w  # (B, m)
    on = (pre > 0).to(z.dtype)
    residual = on @ v - teacher_outputs(z, v_star, w_star)  # (B,)
    back = mu.derivative(pre, clip) * v  # (B, m)
    grad_w = torch.einsum("bmn,bm->bn", z, back) * residual[:, None]
    return SampleTerms(residual**2 / 2, on * residual[:, None], grad_w)


@dataclass(frozen=True)
class MonteCarlo:
    """Sample means and their standard errors (numpy float64)."""

    loss: float
    loss_se: float
    grad_v: np.ndarray
    grad_v_se: np.ndarray
    grad_w: np.ndarray
    grad_w_se: np.ndarray
    samples: int


def sample_coarse_grad(v, w, v_star, w_star, ste="relu", clip: float = 1.0, samples: int = 100_000,
                       batch_size: int = 20_000, seed: int = 0) -> MonteCarlo:
    """Monte Carlo estimate of ``f``, ``df/dv`` and ``E g_mu`` with standard errors from ``samples`` draws of ``Z``.

    The standard error of each mean is ``std / sqrt(samples)`` with the unbiased sample standard deviation.
    """
    (result,) = sample_coarse_grads(v, w, v_star, w_star, (ste,), clip, samples, batch_size, seed).values()
    return result


def sample_coarse_grads(v, w, v_star, w_star, stes, clip: float = 1.0, samples: int = 100_000,
                        batch_size: int = 20_000, seed: int = 0) -> dict[str, MonteCarlo]:
    """:func:`sample_coarse_grad` for several STEs on the same draws of ``Z`` (common random numbers), keyed by
    the names as given (``STE.label`` for :class:`~stelab.ste.STE` instances)."""
    v, w, v_star, w_star = (torch.from_numpy(a) for a in check_problem(v, w, v_star, w_star))
    clip = check_clip(clip)
    if samples < 2 or batch_size < 1:
        raise ValueError(f"need samples >= 2 and batch_size >= 1, got {samples} and {batch_size}")
    mus = [ste_registry.get(s) for s in stes]
    gen = torch.Generator().manual_seed(seed)
    m, n = v.numel(), w.numel()
    # Running sums of each statistic and of its square: (loss, grad_v..., grad_w...) in one float64 vector per STE.
    total = torch.zeros(len(mus), 1 + m + n, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    done = 0
    while done < samples:
        b = min(batch_size, samples - done)
        z = torch.randn(b, m, n, generator=gen, dtype=torch.float64)
        for i, mu in enumerate(mus):
            t = sample_terms(z, v, w, v_star, w_star, mu, clip)
            stats = torch.cat([t.loss[:, None], t.grad_v, t.grad_w], dim=1)
            total[i] += stats.sum(0)
            total_sq[i] += (stats**2).sum(0)
        done += b
    mean = total / samples
    var = (total_sq - samples * mean**2).clamp(min=0) / (samples - 1)
    se, mean = (var / samples).sqrt().numpy(), mean.numpy()
    keys = [s if isinstance(s, str) else s.label for s in stes]
    return {key: MonteCarlo(float(mean[i, 0]), float(se[i, 0]), mean[i, 1:1 + m], se[i, 1:1 + m], mean[i, 1 + m:],
                            se[i, 1 + m:], samples) for i, key in enumerate(keys)}


def empirical_loss_along(z: Tensor, v, w, v_star, w_star, direction, steps) -> np.ndarray:
    r"""The empirical loss :math:`\frac1N\sum_b \ell(v, w - \eta\,d; Z_b)` for each step size :math:`\eta` in
    ``steps``. Only ``w`` moves: ``v`` enters the loss smoothly, ``w`` through
    :math:`\sigma`, so this is the part whose sampled version is piecewise constant."""
    v, w, v_star, w_star = (torch.from_numpy(a) for a in check_problem(v, w, v_star, w_star))
    d = torch.as_tensor(np.asarray(direction, dtype=np.float64))
    teacher = teacher_outputs(z, v_star, w_star)  # (N,)
    pre, slope = z @ w, z @ d  # pre-activations move linearly in eta: pre - eta * slope
    out = np.empty(len(steps))
    for i, eta in enumerate(steps):
        residual = ((pre - float(eta) * slope) > 0).to(z.dtype) @ v - teacher
        out[i] = float((residual**2).mean()) / 2
    return out


def standard_normal_inputs(samples: int, m: int, n: int, seed: int = 0) -> Tensor:
    """``samples`` i.i.d. ``m x n`` standard normal inputs, float64, seeded."""
    if samples < 1 or m < 1 or n < 1:
        raise ValueError(f"samples, m and n must be >= 1, got {samples}, {m}, {n}")
    return torch.randn(samples, m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def standard_error_ok(estimate: np.ndarray, se: np.ndarray, exact: np.ndarray, k: float = 4.0) -> bool:
    """``|estimate - exact| <= k * se`` in every coordinate (coordinates with ``se == 0`` must match to 1e-12)."""
    tol = np.maximum(k * se, 1e-12 * (1 + np.abs(exact)))
    return bool(np.all(np.abs(estimate - exact) <= tol))


def z_scores(estimate: np.ndarray, se: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """``(estimate - exact) / se`` (0 where both the error and the standard error vanish)."""
    err = np.asarray(estimate) - np.asarray(exact)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, err / np.where(se > 0, se, 1), np.where(np.abs(err) < 1e-12, 0.0, math.inf))
    return z
