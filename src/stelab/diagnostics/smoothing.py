r"""The Gaussian-smoothed staircase, and contexts that make a model's quantized activations use it (or switch STEs).

A forward quantizer is a step function :math:`q(x) = \ell_0 + \sum_k \Delta_k\,1\{x > t_k\}` with thresholds
:math:`t_k` and level increments :math:`\Delta_k = \ell_{k+1} - \ell_k` (for the staircase :math:`t_k = k\alpha`,
:math:`\Delta_k = \alpha`). Its Gaussian smoothing at width :math:`s` has a closed form,

.. math::  q_s(x) = \mathbb{E}_{\xi\sim N(0,1)}\, q(x + s\xi)
   = \ell_0 + \sum_k \Delta_k\,\Phi\!\Big(\frac{x - t_k}{s}\Big),
   \qquad q_s'(x) = \sum_k \frac{\Delta_k}{s}\,\varphi\!\Big(\frac{x - t_k}{s}\Big),

so the loss of a network whose staircases are replaced by :math:`q_s` is differentiable, and its autograd gradient
tends to the gradient of the (data-averaged) quantized loss as :math:`s \to 0`. Widths are given relative to each
layer's resolution: ``width=0.25`` smooths a layer with resolution :math:`\alpha` at :math:`s = 0.25\,\alpha`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..activations.convert import quantized_modules
from ..activations.modules import QuantReLU
from ..ste import STE
from ..ste.smoothing import smoothed_step, smoothed_step_derivative


def _steps(thresholds: Tensor, levels: Tensor) -> tuple[list[float], list[float], float]:
    t = [float(v) for v in thresholds]
    lv = [float(v) for v in levels]
    return t, [b - a for a, b in zip(lv[:-1], lv[1:])], lv[0]


def smoothed_quantizer(x: Tensor, thresholds: Tensor, levels: Tensor, s: float) -> Tensor:
    r""":math:`q_s(x)` for the step function with these thresholds and levels (differentiable; see module doc)."""
    if not s > 0:
        raise ValueError(f"smoothing width s must be positive, got {s}")
    t, deltas, base = _steps(thresholds, levels)
    return _SmoothedQuantizer.apply(x, tuple(t), tuple(deltas), base, float(s))


def smoothed_quantizer_derivative(x: Tensor, thresholds: Tensor, levels: Tensor, s: float) -> Tensor:
    r""":math:`q_s'(x) = \sum_k \Delta_k \varphi((x - t_k)/s)/s`."""
    t, deltas, _ = _steps(thresholds, levels)
    return _derivative(x, t, deltas, s)


def _derivative(x: Tensor, t, deltas, s: float) -> Tensor:
    return smoothed_step_derivative(x, t, deltas, s)  # the one formula, shared with the gaussian_smoothed STE


class _SmoothedQuantizer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, t: tuple, deltas: tuple, base: float, s: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.t, ctx.deltas, ctx.s = t, deltas, s
        return smoothed_step(x, t, deltas, base, s)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad * _derivative(x, ctx.t, ctx.deltas, ctx.s), None, None, None, None


def module_tables(module: QuantReLU, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, float, float]:
    """``(thresholds, levels, top, alpha)`` of a quantized activation at its current resolution."""
    q, bits, alpha = module.quantizer, module.bits, module.current_alpha()
    return q.thresholds(bits, alpha).to(dtype), q.levels(bits, alpha).to(dtype), float(q.top(bits, alpha)), alpha


def require_quantized(model: nn.Module) -> list[tuple[str, QuantReLU]]:
    """The model's quantized activations; a clear error when it has none."""
    mods = quantized_modules(model)
    if not mods:
        raise ValueError(
            f"{type(model).__name__} has no quantized activations (stelab.QuantReLU); gradient-fidelity diagnostics "
            "compare STE gradients of quantized layers. Convert it first: stelab.quantize_activations(model, bits=2)"
        )
    return mods


@contextmanager
def replace_activations(model: nn.Module, fn: Callable[[QuantReLU, Tensor, Tensor], Tensor]) -> Iterator[None]:
    """Within the block, every QuantReLU's output is ``fn(module, input, output)`` (forward hooks, removed on
    exit)."""
    handles = [m.register_forward_hook(lambda mod, args, out: fn(mod, args[0], out))
               for _, m in require_quantized(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def smoothed(model: nn.Module, width: float) -> Iterator[None]:
    """Within the block the model computes with :math:`q_s` in place of each staircase, ``s = width * alpha``."""
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"smoothing width must be a positive number (in units of alpha), got {width!r}")

    def smooth(module: QuantReLU, x: Tensor, out: Tensor) -> Tensor:
        thresholds, levels, _, alpha = module_tables(module)
        return smoothed_quantizer(x, thresholds, levels, width * alpha)

    with replace_activations(model, smooth):
        yield


class STESelector:
    """Which STE the backward of :func:`switchable_ste` uses; change ``ste`` between backward passes."""

    def __init__(self) -> None:
        self.ste: STE | None = None


class _SwitchableSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, quantized: Tensor, selector: STESelector, top: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.selector, ctx.top = selector, top
        return quantized.clone()  # the module's own forward values, bit for bit

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        ste = ctx.selector.ste
        if ste is None:
            raise RuntimeError("STESelector.ste must be set before the backward pass")
        return grad * ste.derivative(x, ctx.top), None, None, None


@contextmanager
def switchable_ste(model: nn.Module, selector: STESelector) -> Iterator[None]:
    """One forward, many backwards: within the block the quantized activations compute the same forward values, and
    their backward multiplies by ``mu'`` of whatever STE ``selector.ste`` holds when the backward runs."""

    def switch(module: QuantReLU, x: Tensor, out: Tensor) -> Tensor:
        _, _, top, _ = module_tables(module, x.dtype)
        return _SwitchableSTE.apply(x, out.detach(), selector, top)

    with replace_activations(model, switch):
        yield
