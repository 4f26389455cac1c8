r"""The quantized activation as an autograd op: a forward quantizer in the forward pass, an STE in the backward.

.. math::  y = q(x), \qquad \frac{\partial \ell}{\partial x} = \frac{\partial \ell}{\partial y}\,\mu'(x;\ \mathrm{top})

What is saved for backward is the least the STE needs:

* a constant ``mu'`` (identity): nothing; the incoming gradient is passed through;
* ``mu'`` piecewise constant with values in {0, 1} (relu, clipped_relu, hardtanh) or with two values (leaky_relu):
  a boolean mask, 1 byte/element;
* other piecewise constant ``mu'``: the region code as ``uint8``, 1 byte/element;
* anything else (log_tailed_relu, swish_sign, approx_sign, user STEs, learned alpha): the input itself.

With a learned resolution the op also returns :math:`\partial\ell/\partial\alpha = \sum \partial\ell/\partial y \cdot
\partial q/\partial \alpha`, with :math:`\partial q / \partial\alpha` given by one of the rules of the blended coarse
gradient code (Yin et al. 2019), for :math:`x` in the region named (0 elsewhere):

* ``mean``: :math:`2^{b-1}` on :math:`0 < x \le L\alpha`, :math:`L` above (the mean level index, then the top);
* ``ae``:   :math:`k` on the k-th step :math:`(k-1)\alpha < x \le k\alpha`, :math:`L` above; i.e. exactly
  :math:`q(x)/\alpha`, the derivative of the staircase with the step index held fixed ("a.e."). For ``sign`` this
  is :math:`\pm 1`, and it is the only rule ``sign`` accepts (the others assume levels :math:`\ge 0`);
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
_INF = float("inf")


def _piecewise_state(x: Tensor, ste: STE, top: float) -> Tensor | None:
    """The compact region state for a piecewise-constant ``mu'`` (see module docstring)."""
    shape = ste.piecewise
    assert shape is not None
    if len(shape.breaks) == 0:
        return None
    if len(shape.values) == 2:  # one breakpoint: the mask of the upper region says which value
        return x > shape.breaks[0] * top
    if set(shape.values) <= {0.0, 1.0}:
        mask = None
        bounds = (-_INF, *shape.breaks, _INF)
        for i, value in enumerate(shape.values):
            if value != 1.0:
                continue
            lo, hi = bounds[i] * top, bounds[i + 1] * top  # region i is lo < x <= hi
            if lo == -_INF:
                region = x <= hi
            else:
                region = x > lo
                if hi != _INF:
                    region &= x <= hi  # in place: one temporary fewer
            mask = region if mask is None else mask.logical_or_(region)
        if mask is None:  # mu' = 0 everywhere
            mask = torch.zeros_like(x, dtype=torch.bool)
        return mask
    code = torch.zeros_like(x, dtype=torch.uint8)
    for b in shape.breaks:
        code += x > b * top
    return code


def _piecewise_backward(grad: Tensor, state: Tensor | None, ste: STE) -> Tensor:
    values = ste.piecewise.values  # type: ignore[union-attr]
    if state is None:
        return grad if values[0] == 1.0 else grad * values[0]
    # One fresh float buffer, filled from the 1-byte state in place: ``grad * mask`` would first convert the mask to
    # a float temporary, a second activation-sized allocation.
    if len(values) == 2 and values != (0.0, 1.0):  # region mask of a two-valued mu' (leaky relu)
        lo, hi = (torch.tensor(v, dtype=grad.dtype, device=grad.device) for v in values)
        return torch.where(state, hi, lo).mul_(grad)
    if state.dtype == torch.bool:  # mu' = mask
        return torch.empty_like(grad).copy_(state).mul_(grad)
    lut = torch.tensor(values, dtype=grad.dtype, device=grad.device)
    return lut[state.long()].mul_(grad)


class _QuantizeFixed(torch.autograd.Function):
    """Fixed resolution: every argument but ``x`` is a Python constant (``alpha`` already on the grid)."""

    @staticmethod
    def forward(ctx, x: Tensor, forward: str, bits: int, alpha: float, ste: STE, top: float, keep_nan: bool) -> Tensor:
        ctx.ste, ctx.top = ste, top
        if ste.piecewise is not None:
            ctx.piecewise = True
            ctx.save_for_backward(_piecewise_state(x, ste, top))
        else:
            ctx.piecewise = False
            ctx.save_for_backward(x)
        return quantizers.evaluate(x, forward, bits, alpha, keep_nan)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (saved,) = ctx.saved_tensors
        if ctx.piecewise:
            gx = _piecewise_backward(grad, saved, ctx.ste)
        else:
            gx = grad * ctx.ste.derivative(saved, ctx.top)
        return gx, None, None, None, None, None, None


def alpha_grad_factor(x: Tensor, code: Tensor, alpha: float | Tensor, bits: int, rule: str) -> Tensor:
    """``dq/dalpha`` per element for a learned-resolution rule (module docstring); ``code = q(x)/alpha``."""
    levels = 2**bits - 1
    top = levels * alpha
    if rule == "ae":
        return code.to(x.dtype)
    above = x > top
    if rule == "pact":
        return above * float(levels)
    inside = (x > 0) & (x <= top)
    if rule == "mean":
        return inside * float(2 ** (bits - 1)) + above * float(levels)
    return inside.to(x.dtype)  # "min"


class _QuantizeLearned(torch.autograd.Function):
    """Learned resolution: ``alpha`` is a one-element tensor that receives a gradient by ``rule``."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, forward: str, bits: int, ste: STE, rule: str) -> Tensor:
        fq = quantizers.get(forward)
        a = fq.resolution(bits, alpha.reshape(())).to(x.dtype)
        ctx.ste, ctx.forward, ctx.bits, ctx.rule = ste, forward, bits, rule
        ctx.save_for_backward(x, alpha)
        return quantizers.evaluate(x, forward, bits, a)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, alpha = ctx.saved_tensors
        fq = quantizers.get(ctx.forward)
        a = fq.resolution(ctx.bits, alpha.reshape(())).to(x.dtype)
        gx = grad * ctx.ste.derivative(x, fq.top(ctx.bits, a).to(x.dtype))
        ga = None
        if ctx.needs_input_grad[1]:
            code = torch.round(quantizers.evaluate(x, ctx.forward, ctx.bits, a) / a)  # exact: levels are k*a
            factor = alpha_grad_factor(x, code, a, ctx.bits, ctx.rule)
            ga = (grad * factor).sum().to(alpha.dtype).reshape(alpha.shape)
        return gx, ga, None, None, None, None


def check_input(x: object, check_nan: bool = True) -> Tensor:
    """Reject non-tensors, non-float dtypes and (when ``check_nan``) NaN, with what was wrong and what is valid.

    The NaN check is one sum (NaN anywhere makes the sum NaN; only then, since ``inf - inf`` is NaN too, an exact
    ``isnan`` pass confirms) and a host sync. Under ``torch.compile`` it is skipped (it would break the graph), and
    NaN then propagates to the output as NaN (the arithmetic forward keeps it).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        valid = ", ".join(str(d).replace("torch.", "") for d in _FLOAT_DTYPES)
        raise TypeError(f"x must be a floating-point tensor ({valid}), got {x.dtype}; convert it first")
    if check_nan and not torch.compiler.is_compiling() and bool(x.sum().isnan()) and bool(x.isnan().any()):
        raise ValueError("x contains NaN; a quantizer cannot place NaN on a level (a diverged run upstream?)")
    return x


def check_learned(forward: str, alpha_rule: str) -> None:
    """``sign`` levels are ``+-alpha``: only the ``ae`` rule (``dq/dalpha = q(x)/alpha = +-1``) is right for it."""
    check_choice("alpha rule", alpha_rule, ALPHA_RULES)
    if forward == "sign" and alpha_rule != "ae":
        raise ValueError(f"a learned alpha with forward 'sign' needs alpha_rule 'ae' (dq/dalpha = +-1), got "
                         f"{alpha_rule!r}; valid choices for sign: ae")


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
    fixed one, or a tensor that requires grad for a learned one (its gradient follows ``alpha_rule``). Either way it
    is used snapped to the exact grid (:func:`stelab.quantizers.grid_alpha`).
    """
    check_input(x, check_nan)
    fq = quantizers.get(forward)
    fq.check_bits(bits)
    estimator = ste_registry.get(ste)
    check_choice("alpha rule", alpha_rule, ALPHA_RULES)
    if isinstance(alpha, Tensor) and alpha.requires_grad:
        if alpha.numel() != 1:
            raise ValueError(f"a learned alpha must have one element, got shape {tuple(alpha.shape)}")
        check_learned(fq.name, alpha_rule)
        if not torch.compiler.is_compiling():
            check_alpha(float(alpha.detach()))
        return _QuantizeLearned.apply(x, alpha, fq.name, bits, estimator, alpha_rule)
    value = fq.resolution(bits, fq.default_alpha(bits) if alpha is None else check_alpha(alpha))
    return _QuantizeFixed.apply(x, fq.name, bits, value, estimator, fq.top(bits, value), forward_keeps_nan(check_nan))


def forward_keeps_nan(check_nan: bool) -> bool:
    """Whether the forward must carry NaN through: yes unless :func:`check_input` has just ruled NaN out."""
    return not check_nan or torch.compiler.is_compiling()


__all__ = ["quantize", "ALPHA_RULES", "alpha_grad_factor", "check_bits", "check_input", "check_learned"]
