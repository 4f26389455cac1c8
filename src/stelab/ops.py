r"""The quantized activation as an autograd op: a forward quantizer in the forward pass, an STE in the backward.

.. math::  y = q(x), \qquad \frac{\partial \ell}{\partial x} = \frac{\partial \ell}{\partial y}\,\mu'(x;\ \mathrm{top})

What is saved for backward is the least the STE needs:

* a constant ``mu'`` (identity): nothing; the incoming gradient is passed through;
* ``mu'`` piecewise constant with values in {0, 1} (relu, clipped_relu, hardtanh): a boolean mask, 1 byte/element;
* other piecewise constant ``mu'`` (leaky_relu): the region code as ``uint8``, 1 byte/element;
* anything else (log_tailed_relu, swish_sign, approx_sign, user STEs, learned alpha): the input itself.

With a learned resolution the op also returns :math:`\partial\ell/\partial\alpha = \sum \partial\ell/\partial y \cdot
\partial q/\partial \alpha`, with :math:`\partial q / \partial\alpha` given by one of the rules of the blended coarse
gradient code (Yin et al. 2019), for :math:`x` in the region named (0 elsewhere):

* ``mean``: :math:`2^{b-1}` on :math:`0 < x \le L\alpha`, :math:`L` above (the mean level index, then the top);
* ``ae``:   :math:`k` on the k-th step :math:`(k-1)\alpha < x \le k\alpha`, :math:`L` above; i.e. exactly
  :math:`q(x)/\alpha`, the derivative of the staircase with the step index held fixed ("a.e.");
* ``pact``: :math:`L` above :math:`L\alpha` only (PACT's clipping-level gradient);
* ``min``:  1 on :math:`0 < x \le L\alpha` (the smallest non-zero index).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import quantizers
from . import ste as ste_registry
from .errors import check_alpha, check_bits, check_choice
from .ste import STE

ALPHA_RULES = ("mean", "ae", "pact", "min")
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _piecewise_state(x: Tensor, ste: STE, top: float) -> Tensor | None:
    """The compact region state for a piecewise-constant ``mu'`` (see module docstring)."""
    shape = ste.piecewise
    assert shape is not None
    if len(shape.breaks) == 0:
        return None
    if set(shape.values) <= {0.0, 1.0}:
        mask = None
        bounds = (-float("inf"), *shape.breaks, float("inf"))
        for i, value in enumerate(shape.values):
            if value != 1.0:
                continue
            lo, hi = bounds[i] * top, bounds[i + 1] * top
            region = (x > lo) if hi == float("inf") else (x <= hi) if lo == -float("inf") else (x > lo) & (x <= hi)
            mask = region if mask is None else mask | region
        return mask
    code = torch.zeros_like(x, dtype=torch.uint8)
    for b in shape.breaks:
        code += x > b * top
    return code


def _piecewise_backward(grad: Tensor, state: Tensor | None, ste: STE) -> Tensor:
    values = ste.piecewise.values  # type: ignore[union-attr]
    if state is None:
        return grad if values[0] == 1.0 else grad * values[0]
    if state.dtype == torch.bool:
        return grad * state
    if len(values) == 2:
        return torch.where(state.bool(), grad * values[1], grad * values[0])
    lut = torch.tensor(values, dtype=grad.dtype, device=grad.device)
    return grad * lut[state.long()]


class _QuantizeFixed(torch.autograd.Function):
    """Fixed resolution: ``alpha`` is a Python float."""

    @staticmethod
    def forward(ctx, x: Tensor, thresholds: Tensor, levels: Tensor, ste: STE, top: float) -> Tensor:
        ctx.ste, ctx.top = ste, top
        if ste.piecewise is not None:
            state = _piecewise_state(x, ste, top)
            ctx.mode = "piecewise"
            ctx.save_for_backward(state)
        else:
            ctx.mode = "input"
            ctx.save_for_backward(x)
        return quantizers.apply_forward(x, thresholds, levels)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (saved,) = ctx.saved_tensors
        if ctx.mode == "piecewise":
            gx = _piecewise_backward(grad, saved, ctx.ste)
        else:
            gx = grad * ctx.ste.derivative(saved, ctx.top)
        return gx, None, None, None, None


def alpha_grad_factor(x: Tensor, code: Tensor, alpha: Tensor, bits: int, rule: str) -> Tensor:
    """``dq/dalpha`` per element for a learned-resolution rule (module docstring); ``code = q(x)/alpha``."""
    levels = 2**bits - 1
    inside = (x > 0) & (x <= levels * alpha)
    above = x > levels * alpha
    if rule == "mean":
        return inside * float(2 ** (bits - 1)) + above * float(levels)
    if rule == "ae":
        return code.to(x.dtype)
    if rule == "pact":
        return above * float(levels)
    return inside.to(x.dtype)  # "min"


class _QuantizeLearned(torch.autograd.Function):
    """Learned resolution: ``alpha`` is a 0-d tensor that receives a gradient by ``rule``."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, forward: str, bits: int, ste: STE, rule: str) -> Tensor:
        fq = quantizers.get(forward)
        a = alpha.detach().to(x.dtype)
        y = quantizers.apply_forward(x, fq.thresholds(bits, a), fq.levels(bits, a))
        ctx.ste, ctx.forward, ctx.bits, ctx.rule = ste, forward, bits, rule
        ctx.save_for_backward(x, alpha)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, alpha = ctx.saved_tensors
        fq = quantizers.get(ctx.forward)
        a = alpha.detach().to(x.dtype)
        gx = grad * ctx.ste.derivative(x, fq.top(ctx.bits, a))
        ga = None
        if ctx.needs_input_grad[1]:
            y = quantizers.apply_forward(x, fq.thresholds(ctx.bits, a), fq.levels(ctx.bits, a))
            code = torch.round(y / a)
            factor = alpha_grad_factor(x, code, a, ctx.bits, ctx.rule)
            ga = (grad * factor).sum().to(alpha.dtype).reshape(alpha.shape)
        return gx, ga, None, None, None, None


def check_input(x: object, check_nan: bool = True) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        valid = ", ".join(str(d).replace("torch.", "") for d in _FLOAT_DTYPES)
        raise TypeError(f"x must be a floating-point tensor ({valid}), got {x.dtype}; convert it first")
    if check_nan and bool(torch.isnan(x).any()):
        raise ValueError("x contains NaN; a quantizer cannot place NaN on a level (a diverged run upstream?)")
    return x


def quantize(
    x: Tensor,
    bits: int = 2,
    alpha: float | Tensor | None = None,
    ste: str | STE = "clipped_relu",
    forward: str = "staircase",
    alpha_rule: str = "mean",
    check_nan: bool = True,
) -> Tensor:
    """Quantize ``x`` with forward quantizer ``forward`` and backward STE ``ste``.

    ``alpha`` is the resolution: ``None`` for the default (Lloyd's for staircase/round, 1 for sign), a float for a
    fixed one, or a tensor that requires grad for a learned one (its gradient follows ``alpha_rule``).
    """
    check_input(x, check_nan)
    fq = quantizers.get(forward)
    fq.check_bits(bits)
    estimator = ste_registry.get(ste)
    check_choice("alpha rule", alpha_rule, ALPHA_RULES)
    if isinstance(alpha, Tensor) and alpha.requires_grad:
        if alpha.numel() != 1:
            raise ValueError(f"a learned alpha must have one element, got shape {tuple(alpha.shape)}")
        value = float(alpha.detach())
        if not (value > 0 and value != float("inf")):
            raise ValueError(f"alpha must be a positive finite number, got {value}")
        return _QuantizeLearned.apply(x, alpha, fq.name, bits, estimator, alpha_rule)
    value = fq.default_alpha(bits) if alpha is None else check_alpha(alpha)
    return _QuantizeFixed.apply(x, fq.thresholds(bits, value), fq.levels(bits, value), estimator, fq.top(bits, value))


__all__ = ["quantize", "ALPHA_RULES", "alpha_grad_factor", "check_bits"]
