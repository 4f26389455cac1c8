r"""Learned step size quantization (LSQ; Esser, McKinstry, Bablani, Appuswamy, Modha, ICLR 2020), for weights and
activations, and the autograd op every weight quantizer uses.

LSQ quantizes :math:`v` with a learned step :math:`s > 0` and integer range :math:`[-Q_N, Q_P]`:

.. math::  u = v / s, \qquad k = \mathrm{clamp}(\mathrm{rnd}(u), -Q_N, Q_P), \qquad \hat v = s\,k,

with :math:`\mathrm{rnd}` stelab's nearest-integer rounding, ties toward zero
(:func:`stelab.quant.scales.round_half_to_zero`). The gradient of :math:`\hat v` with respect to the step
(rounding passed straight through, so :math:`\partial k/\partial u = 1` inside the range and 0 at the clip):

.. math::  \frac{\partial \hat v}{\partial s} = \begin{cases} -Q_N & u \le -Q_N \\ -u + \mathrm{rnd}(u) &
           -Q_N < u < Q_P \\ Q_P & u \ge Q_P \end{cases}

and the step's total gradient is multiplied by :math:`g = 1/\sqrt{N Q_P}`. Here :math:`N` is the number of values
that share the step: every weight of the tensor for a per-tensor step, the elements of one output channel
(``numel / C``) for a per-channel one; for activations pass the number of features of one sample (LSQ's choice as it
is usually described) as ``grad_scale``. The input's gradient is an STE :math:`\mu'(v; Q_P s)` (any registered one),
or, by default, LSQ's pass-through :math:`1\{-Q_N \le u \le Q_P\}`. The initial step
:math:`s_0 = 2\,\mathrm{mean}|v| / \sqrt{Q_P}` is the initialization commonly quoted for LSQ.

Only the abstract of the LSQ paper was read here; the formulas above are the standard description of the method,
and the boundary conventions (which side :math:`u = Q_P` and ties fall on) are stelab's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ResolutionError
from ..ste import STE
from .scales import compute_dtype, init_step, uniform_codes

__all__ = ["ScaledCodes", "check_step", "grad_scale", "init_step", "lsq_quantize", "step_grad_factor"]


def grad_scale(n: int, q_p: float) -> float:
    """LSQ's gradient scale :math:`g = 1/\\sqrt{N Q_P}`."""
    if n < 1 or q_p < 1:
        raise ValueError(f"grad_scale needs N >= 1 and Q_P >= 1, got N={n}, Q_P={q_p}")
    return 1.0 / math.sqrt(n * q_p)


def step_grad_factor(u: Tensor, k: Tensor, q_n: int, q_p: int) -> Tensor:
    """:math:`\\partial \\hat v/\\partial s` per element for ``u = v/s`` and codes ``k`` (the module's formula)."""
    inside = k - u
    return torch.where(u <= -q_n, torch.full_like(u, -float(q_n)), torch.where(u >= q_p, float(q_p), inside))


class ScaledCodes(torch.autograd.Function):
    """:math:`\\hat w = s\\,k`: ``codes`` computed outside (no gradient), ``scale`` broadcastable to ``w``.

    Backward: :math:`\\partial\\ell/\\partial w = \\partial\\ell/\\partial\\hat w \\cdot \\mu'(w; \\mathrm{top})` with
    ``ste`` (LSQ's pass-through when ``ste`` is None); when ``scale`` requires grad, :math:`\\partial\\ell/\\partial s
    = g \\sum \\partial\\ell/\\partial\\hat w \\cdot \\partial\\hat w/\\partial s` summed over the elements sharing the
    scale, where :math:`\\partial\\hat w/\\partial s` is :func:`step_grad_factor` when ``rounding`` (the codes move
    with ``s``: uniform) and the code :math:`k` itself otherwise (binary and ternary codes do not depend on ``s``).
    """

    @staticmethod
    def forward(ctx, w: Tensor, scale: Tensor, codes: Tensor, ste: STE | None, rounding: bool, q_n: int, q_p: int,
                g: float) -> Tensor:
        ctx.ste, ctx.rounding, ctx.q_n, ctx.q_p, ctx.g = ste, rounding, q_n, q_p, g
        ctx.save_for_backward(w, scale, codes)
        # codes come in compute_dtype(w.dtype) (float32 for 16-bit weights): s k rounded to w's dtype once
        return (scale.detach().to(w.dtype).to(codes.dtype) * codes).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        w, scale, codes = ctx.saved_tensors
        s = scale.detach().to(w.dtype)
        gw = gs = None
        if ctx.needs_input_grad[0]:
            if passes_through(ctx.ste):  # mu' = 1 everywhere (identity): grad * 1 is grad, without the passes
                gw = grad
            elif ctx.ste is None:
                u = w / s
                gw = grad * ((u >= -ctx.q_n) & (u <= ctx.q_p)).to(grad.dtype)
            else:
                # the floor: binary's data scale of an all-zero channel is 0, and mu'(w; 0) may divide by top
                gw = grad * ctx.ste.derivative(w, (s * ctx.q_p).clamp_min(torch.finfo(w.dtype).tiny))
        if ctx.needs_input_grad[1]:  # in compute_dtype: a bfloat16 u = w/s and sum were off by 1.5-7 %
            c = codes.dtype
            factor = step_grad_factor(w.to(c) / s.to(c), codes, ctx.q_n, ctx.q_p) if ctx.rounding else codes
            gs = ((grad.to(c) * factor).sum_to_size(scale.shape) * ctx.g).to(scale.dtype)
        return gw, gs, None, None, None, None, None, None


def passes_through(ste: STE | None) -> bool:
    """Whether ``mu'`` is 1 everywhere (a piecewise table of ones: the identity STE)."""
    return ste is not None and ste.piecewise is not None and all(v == 1.0 for v in ste.piecewise.values)


def check_step(step: Tensor, where: str = "") -> None:
    """A learned step must stay positive and finite: too large a learning rate can push it through zero or to NaN
    (``NaN <= 0`` is false, so the test is ``not 0 < s < inf``). Raises :class:`stelab.errors.ResolutionError`
    naming ``where`` (the layer) when it is not. Only for a CPU step (no device sync); elsewhere the training loop
    checks it (:func:`stelab.train.loop`)."""
    if torch.compiler.is_compiling() or step.device.type != "cpu":
        return  # on a GPU this would sync per layer and call: the training loop checks steps with the loss instead
    s = step.detach()
    if not bool(((s > 0) & (s < float("inf"))).all()):
        bad = s[~((s > 0) & (s < float("inf")))]
        layer = f" of {where}" if where else ""
        raise ResolutionError(f"the learned weight step{layer} became {float(bad.flatten()[0]):.3g}, non-positive "
                              "or not finite; lower the steps' rate (--step-lr-scale 0.1) or every rate "
                              "(--lr), or use a data scale rule "
                              "(--weight-scale-rule max) instead of lsq")


def lsq_quantize(v: Tensor, step: Tensor, q_n: int, q_p: int, *, grad_scale_value: float | None = None,
                 ste: STE | None = None) -> Tensor:
    """LSQ: :math:`s\\,\\mathrm{clamp}(\\mathrm{rnd}(v/s), -Q_N, Q_P)` with the step gradient of the module docstring.

    ``step`` is a tensor broadcastable to ``v`` (0-d, or a per-channel ``(C, 1, ...)`` view) that may require grad.
    ``grad_scale_value`` defaults to :math:`1/\\sqrt{N Q_P}` with :math:`N` = ``v.numel() / step.numel()`` (the
    values sharing one step); for activations give your own (LSQ uses the features of one sample).
    Activations: ``q_n = 0``, ``q_p = 2**b - 1``; symmetric weights: ``q_n = q_p = 2**(b-1) - 1``.
    """
    if q_n < 0 or q_p < 1:
        raise ValueError(f"LSQ needs Q_N >= 0 and Q_P >= 1, got Q_N={q_n}, Q_P={q_p}")
    check_step(step)
    g = grad_scale(max(1, v.numel() // max(1, step.numel())), q_p) if grad_scale_value is None else grad_scale_value
    c = compute_dtype(v.dtype)
    codes = uniform_codes(v.detach().to(c) / step.detach().to(v.dtype).to(c), q_n, q_p)
    return ScaledCodes.apply(v, step, codes, ste, True, q_n, q_p, float(g))
