"""What the quantizers of both sides compute with: the compute dtype, per-tensor or per-channel statistics of
``|v|``, LSQ's initial step and the symmetric integer code (round half toward zero)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype codes and step gradients are computed in: float32 for the 16-bit float types, else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def channel_view(t: Tensor, like: Tensor) -> Tensor:
    """A per-channel vector (shape ``(C,)``) reshaped to broadcast against ``like`` along dim 0."""
    return t.reshape(-1, *([1] * (like.dim() - 1))) if like.dim() > 0 else t.reshape(())


def _per(w: Tensor, granularity: str, reduce: Callable[[Tensor], Tensor]) -> Tensor:
    """``reduce`` of ``|w|`` over the whole tensor (0-d) or over each output channel (broadcastable to ``w``)."""
    a = w.detach().abs()
    if granularity == "tensor" or w.dim() == 0:
        return reduce(a.reshape(1, -1)).reshape(())
    return channel_view(reduce(a.reshape(a.shape[0], -1)), w)


def abs_mean(w: Tensor, granularity: str) -> Tensor:
    """:math:`\\mathrm{mean}|w|` per tensor or per output channel."""
    return _per(w, granularity, lambda a: a.mean(dim=1))


def abs_max(w: Tensor, granularity: str) -> Tensor:
    """:math:`\\max|w|` per tensor or per output channel."""
    return _per(w, granularity, lambda a: a.amax(dim=1))


def init_step(v: Tensor, q_p: int, granularity: str = "tensor") -> Tensor:
    """LSQ's initial step :math:`2\\,\\mathrm{mean}|v| / \\sqrt{Q_P}` (per tensor, or per output channel)."""
    return abs_mean(v, granularity) * (2.0 / math.sqrt(q_p))


def round_half_to_zero(u: Tensor) -> Tensor:
    """:math:`\\mathrm{sign}(u)\\lceil |u| - 1/2 \\rceil`: nearest integer, ties toward zero (odd)."""
    return torch.sign(u) * torch.ceil(u.abs() - 0.5) + 0.0  # + 0.0 turns -0 (sign -1 times 0) into +0


def uniform_codes(u: Tensor, q_n: int, q_p: int) -> Tensor:
    """:math:`\\mathrm{clamp}(\\mathrm{rnd}(u), -Q_N, Q_P)` for ``u = v / s`` (the LSQ/uniform code)."""
    return torch.clamp(round_half_to_zero(u), -q_n, q_p)
