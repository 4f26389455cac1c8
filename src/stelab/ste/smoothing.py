r"""The Gaussian-smoothed step function: the one definition of :math:`q_s` and :math:`q_s'` that the
``gaussian_smoothed`` STE and the diagnostics' reference gradient (:mod:`stelab.diagnostics.smoothing`) share.

A step function :math:`q(x) = \ell_0 + \sum_k \Delta_k\,1\{x > t_k\}` smoothed by Gaussian noise of width :math:`s`:

.. math::  q_s(x) = \mathbb{E}_{\xi\sim N(0,1)}\, q(x + s\xi)
   = \ell_0 + \sum_k \Delta_k\,\Phi\Big(\frac{x - t_k}{s}\Big), \qquad
   q_s'(x) = \sum_k \frac{\Delta_k}{s}\,\varphi\Big(\frac{x - t_k}{s}\Big).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def smoothed_step(x: Tensor, thresholds: Sequence[float], deltas: Sequence[float], base: float, s: float) -> Tensor:
    r""":math:`q_s(x)` (module docstring); a loop over thresholds keeps one activation-sized temporary."""
    out = torch.full_like(x, base)
    for tk, dk in zip(thresholds, deltas):
        out += dk * torch.special.ndtr((x - tk) / s)
    return out


def smoothed_step_derivative(x: Tensor, thresholds: Sequence[float], deltas: Sequence[float], s: float) -> Tensor:
    r""":math:`q_s'(x) = \sum_k \Delta_k \varphi((x - t_k)/s)/s` (module docstring)."""
    out = torch.zeros_like(x)
    for tk, dk in zip(thresholds, deltas):
        out += torch.exp(-0.5 * ((x - tk) / s) ** 2) * (dk * _INV_SQRT_2PI / s)
    return out


__all__ = ["smoothed_step", "smoothed_step_derivative"]
