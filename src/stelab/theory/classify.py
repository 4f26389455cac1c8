r"""Multi-class classification with a quantized two-linear-layer network and coarse gradient descent (Long, Yin &
Xin 2021).

The network is :math:`z = V\,q(Wx)` with :math:`W \in \mathbb{R}^{m\times n}`, :math:`V \in \mathbb{R}^{K\times m}`
and :math:`q` the core ``staircase`` quantizer at ``bits`` bits, through :func:`stelab.quantize`: forward :math:`q`,
backward :math:`\mu'(\cdot;\ \mathrm{top})` of the chosen STE. The *coarse gradient* is what autograd returns
through that op: exact in :math:`V`, and in :math:`W`

.. math::  \tilde\nabla_W \ell = \frac1N\sum_i \big[(V^\top \partial_z \ell_i) \odot \mu'(W x_i)\big]\, x_i^\top.

The readout :math:`V` is either trained (exact gradient) or fixed to the class assignment
:math:`V_{kj} = 1\{j \bmod K = k\}` (``fixed_readout``), so that only the STE-driven first layer learns.
Which STEs count as monotone: :mod:`stelab.theory.classify_ste`.

**Loss.** ``hinge`` (default): the multi-class hinge :math:`\ell_i = \sum_{l\ne y_i}\max(0, 1 + z_{il} - z_{iy_i})`
(Weston & Watkins). Its global minimum 0 is *attained* at finite weights exactly when every sample is classified with
margin 1, and there the coarse gradient of every STE is exactly zero, so "reaching the global minimum" is an exact,
checkable event (loss 0, accuracy 100%, the iterate a fixed point). ``cross_entropy`` is used for MNIST (smooth, the
usual choice; its infimum 0 is never attained). ``squared`` (:math:`\tfrac12\|z - e_y\|^2`, as in Yin et al. 2019)
is offered, but its minimum is 0 only if the quantized features fit one-hot targets exactly. A sample counts as
correct only if its class has the strictly largest score (ties, e.g. all-zero features, are errors).

**One bit cannot separate sign-symmetric classes without a bias.** With :math:`q(t) = \alpha 1\{t > 0\}`,
:math:`q(t) + q(-t) = \alpha` for every :math:`t \ne 0`, so :math:`z(x) + z(-x) = \alpha V\mathbf 1 =: c` for
every :math:`x` on no neuron's hyperplane. If :math:`x` and :math:`-x` are both correctly classified as :math:`k`,
then :math:`c_k > c_l` for all :math:`l \ne k`; two classes containing such pairs would need :math:`c_k > c_{k'}` and
:math:`c_{k'} > c_k`. Hence 100% accuracy at 1 bit needs neurons *exactly* orthogonal to data points (possible in
principle for the subspace data, a measure-zero set of :math:`W`; impossible for cones in general position). With
:math:`b \ge 2` bits :math:`q(t) + q(-t) = q(|t|)` is not constant and the obstruction disappears.
:func:`symmetric_pair_sum` exposes the identity for tests.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from ..activations import quantizers
from ..activations.ops import quantize
from ..errors import check_alpha, check_bits, check_choice
from ..ste import DEFAULT_STE, STE
from .classify_ste import (
    ONE_SIDED_STES,
    MonotoneCheck,
    check_monotone,
    check_one_sided,
    is_monotone,
    resolve_ste,
    ste_choices,
)

LOSSES = ("hinge", "cross_entropy", "squared")


# --------------------------------------------------------------------------------------------------------- network
@dataclass(frozen=True)
class CoarseGDConfig:
    """Coarse gradient descent on ``V q(W x)``. ``batch_size=0`` is full batch; ``alpha=None`` is Lloyd's
    resolution for ``bits``. ``init_scale`` sets the pre-activation standard deviation at initialisation
    (``W`` entries ~ N(0, (init_scale / rms ||x||)^2)); ``V`` entries ~ N(0, 1/hidden)."""

    bits: int = 2
    ste: str = DEFAULT_STE
    alpha: float | None = None
    hidden: int = 32
    loss: str = "hinge"
    lr: float = 0.1
    steps: int = 2000
    batch_size: int = 0
    momentum: float = 0.0
    init_scale: float = 1.0
    eval_every: int = 10
    stop_at_zero: bool = True
    fixed_readout: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_bits(self.bits)
        resolve_ste(self.ste)
        if self.alpha is not None:
            object.__setattr__(self, "alpha", check_alpha(self.alpha))
        check_choice("loss", self.loss, LOSSES)
        for name in ("hidden", "steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("batch_size", "eval_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive and finite, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.init_scale) and self.init_scale > 0):
            raise ValueError(f"init_scale must be positive and finite, got {self.init_scale}")

    def to_dict(self) -> dict:
        """The fields as plain data (for results files)."""
        return dataclasses.asdict(self)

    # Cached: the training loop reads them every step (cached_property writes the instance __dict__ directly, which
    # a frozen dataclass allows; equality and to_dict see only the fields).
    @cached_property
    def resolution(self) -> float:
        """The staircase step used: Lloyd's for the bits, or ``alpha`` as given."""
        staircase = quantizers.get("staircase")
        return staircase.resolution(self.bits, staircase.default_alpha(self.bits) if self.alpha is None else self.alpha)

    @cached_property
    def estimator(self) -> STE:
        """The STE object ``ste`` names."""
        return resolve_ste(self.ste)


def forward(w: Tensor, v: Tensor, x: Tensor, config: CoarseGDConfig) -> Tensor:
    """Scores ``z = V q(W x)`` for a batch ``x [N, n]`` -> ``[N, K]``; backward through ``q`` is the STE."""
    # check_nan off: train_coarse checks the weights for non-finite values itself, every 50 steps
    hidden = quantize(x @ w.T, bits=config.bits, alpha=config.resolution, ste=config.estimator, forward="staircase",
                      check_nan=False)
    return hidden @ v.T


def loss_fn(z: Tensor, y: Tensor, kind: str) -> Tensor:
    """Mean over samples of the per-sample loss ``kind`` (module docstring)."""
    if kind == "cross_entropy":
        return torch.nn.functional.cross_entropy(z, y)
    if kind == "squared":
        return 0.5 * ((z - torch.nn.functional.one_hot(y, z.shape[1]).to(z.dtype)) ** 2).sum(1).mean()
    target = z.gather(1, y[:, None])
    margins = torch.relu(1.0 + z - target).scatter(1, y[:, None], 0.0)
    return margins.sum(1).mean()


def accuracy(z: Tensor, y: Tensor) -> float:
    """Fraction of samples whose class has the strictly largest score."""
    target = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], -math.inf).max(1).values
    return float((target > others).double().mean())


def init_weights(x: Tensor, num_classes: int, config: CoarseGDConfig) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(config.seed)
    rms = float(x.pow(2).sum(1).mean().sqrt())
    w = torch.randn(config.hidden, x.shape[1], generator=gen, dtype=x.dtype) * (config.init_scale / rms)
    if config.fixed_readout:
        v = fixed_readout(num_classes, config.hidden, x.dtype)
    else:
        v = torch.randn(num_classes, config.hidden, generator=gen, dtype=x.dtype) / math.sqrt(config.hidden)
    return w, v


def fixed_readout(num_classes: int, hidden: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The class-assignment readout ``V[k, j] = 1{j mod K = k}``: neuron ``j`` votes for class ``j mod K``."""
    return (torch.arange(hidden)[None, :] % num_classes == torch.arange(num_classes)[:, None]).to(dtype)


def coarse_gradients(w: Tensor, v: Tensor, x: Tensor, y: Tensor, config: CoarseGDConfig) -> tuple[Tensor, Tensor,
                                                                                                     Tensor]:
    """``(loss, coarse grad in W, grad in V)`` by autograd through the core quantize op."""
    w, v = w.detach().requires_grad_(True), v.detach().requires_grad_(True)
    loss = loss_fn(forward(w, v, x, config), y, config.loss)
    gw, gv = torch.autograd.grad(loss, (w, v))
    return loss.detach(), gw, gv


@torch.no_grad()
def evaluate(w: Tensor, v: Tensor, x: Tensor, y: Tensor, config: CoarseGDConfig, chunk: int = 8192) -> dict:
    z = torch.cat([forward(w, v, x[i:i + chunk], config) for i in range(0, len(x), chunk)])
    return {"loss": float(loss_fn(z, y, config.loss)), "accuracy": accuracy(z, y)}


def _check_data(x: Tensor | np.ndarray, y: Tensor | np.ndarray, num_classes: int) -> tuple[Tensor, Tensor]:
    """``x`` as a float64 tensor (a tensor keeps its dtype) ``[N, n]`` and ``y`` as int64 labels ``[N]`` in range."""
    x = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, Tensor) else x
    y = torch.as_tensor(y, dtype=torch.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be [N, n] and y [N], got {tuple(x.shape)} and {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return x, y


def train_coarse(config: CoarseGDConfig, x: Tensor | np.ndarray, y: Tensor | np.ndarray, num_classes: int,
                 test: tuple[Tensor, Tensor] | None = None,
                 on_eval: Callable[[dict], None] | None = None) -> dict:
    """Run coarse gradient descent; returns history, final train (and test) metrics, weights, and the first step at
    which the training accuracy was 100% and the loss 0 (the hinge global minimum), or ``None``.

    Full batch (``batch_size=0``) or mini-batch: each epoch is a seeded random partition into batches (a last partial
    batch is dropped). Evaluations use the whole training set. With ``stop_at_zero`` a run stops at the first
    evaluation with loss exactly 0: for the hinge loss every per-sample loss is then 0, so every later coarse
    gradient, full or mini-batch, is exactly zero and the rest of the run would not move.
    """
    x, y = _check_data(x, y, num_classes)
    w, v = init_weights(x, num_classes, config)
    mw, mv = torch.zeros_like(w), torch.zeros_like(v)
    gen = torch.Generator().manual_seed(config.seed + 1)
    n, bs = len(y), config.batch_size or len(y)
    history: list[dict] = []
    first_perfect = first_zero = None
    order, pos, start = torch.randperm(n, generator=gen), 0, time.perf_counter()
    diverged = False
    for step in range(config.steps + 1):
        if step % 50 == 0 and not (torch.isfinite(w).all() and torch.isfinite(v).all()):
            diverged = True  # stop and report rather than train on NaN (forward skips the quantizer's NaN check)
            break
        if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
            record = {"step": step, **evaluate(w, v, x, y, config)}
            history.append(record)
            if on_eval is not None:
                on_eval(record)
            if first_perfect is None and record["accuracy"] == 1.0:
                first_perfect = step
            if first_zero is None and record["loss"] == 0.0:
                first_zero = step
                if config.stop_at_zero:
                    break
        if step == config.steps:
            break
        if bs >= n:
            idx = None
        else:
            if pos + bs > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx, pos = order[pos:pos + bs], pos + bs
        _, gw, gv = coarse_gradients(w, v, x if idx is None else x[idx], y if idx is None else y[idx], config)
        if config.momentum:
            gw, gv = mw.mul_(config.momentum).add_(gw), mv.mul_(config.momentum).add_(gv)
        w -= config.lr * gw
        if not config.fixed_readout:
            v -= config.lr * gv
    diverged = diverged or not (torch.isfinite(w).all() and torch.isfinite(v).all())
    final = {"loss": math.nan, "accuracy": 0.0} if diverged else evaluate(w, v, x, y, config)
    out = {"config": config.to_dict(), "train": final, "steps_run": step, "diverged": diverged,
           "first_step_perfect": first_perfect, "first_step_zero_loss": first_zero, "history": history,
           "seconds": time.perf_counter() - start,
           "weight_norms": {"W": float(w.norm()), "V": float(v.norm())}, "w": w, "v": v}
    if test is not None:
        xt, yt = torch.as_tensor(test[0], dtype=x.dtype), torch.as_tensor(test[1])
        out["test"] = {"loss": math.nan, "accuracy": 0.0} if diverged else evaluate(w, v, xt, yt, config)
    return out


def symmetric_pair_sum(w: Tensor, v: Tensor, x: Tensor, config: CoarseGDConfig) -> Tensor:
    """``z(x) + z(-x)`` for a batch: ``alpha V 1`` at one bit off the neurons' hyperplanes (module docstring)."""
    with torch.no_grad():
        return forward(w, v, x, config) + forward(w, v, -x, config)


__all__ = ["LOSSES", "ONE_SIDED_STES", "CoarseGDConfig", "MonotoneCheck", "accuracy", "check_monotone",
           "check_one_sided", "coarse_gradients", "evaluate", "fixed_readout", "forward", "init_weights",
           "is_monotone", "loss_fn", "resolve_ste", "ste_choices", "symmetric_pair_sum", "train_coarse"]
