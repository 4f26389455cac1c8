r"""Quantized weights as an autograd op: a weight quantizer forward, an STE backward, chosen independently.

.. math::  \hat w = Q(w) = s\,k(w), \qquad
           \frac{\partial \ell}{\partial w} := \frac{\partial \ell}{\partial \hat w}\,\mu'(w;\ \mathrm{top}),
           \quad \mathrm{top} = Q_P\,s

(``top`` is the largest level magnitude: ``s`` for binary and ternary, :math:`(2^{b-1}-1)s` for uniform), with
``mu'`` any registered STE that is not zero below 0 (:func:`stelab.weights.config.check_weight_ste`). A scale
computed from the weights (rules ``mean``, ``max``) is treated as a constant in the backward pass: the gradient
reaches ``w`` only through the STE, as in the formula. A learned scale (rule ``lsq``) gets LSQ's gradient
(:mod:`stelab.quant.lsq`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..kernels import cpu
from ..quant.lsq import ScaledCodes, check_step, passes_through
from ..ste import STE
from .config import WeightQuantConfig, check_weight_ste
from .quantizers import WeightQuantizer, channel_view, fused_kind, get


def resolve_scale(w: Tensor, config: WeightQuantConfig, step: Tensor | None = None, where: str = "") -> Tensor:
    """The scale used for ``w``, broadcastable to it: the learned ``step`` (rule ``lsq``; shape ``()`` or ``(C,)``,
    checked positive and finite, errors naming the layer ``where``), the config's number (``fixed``) or the data
    rule's statistic (``mean``, ``max``)."""
    q = get(config.quantizer)
    if config.learned:
        if step is None:
            raise ValueError("scale rule 'lsq' learns the scale: pass the step tensor (QuantLinear/QuantConv2d own it)")
        check_step(step, where)
        return step if config.granularity == "tensor" or step.dim() == 0 else channel_view(step, w)
    if config.rule == "fixed":
        return torch.tensor(config.scale, dtype=w.dtype, device=w.device)
    return q.data_scale(w, config.effective_bits, config.granularity, config.rule)


def quantize_weight(w: Tensor, config: WeightQuantConfig | None = None, /, *, step: Tensor | None = None,
                    **fields: Any) -> Tensor:
    """:math:`Q(w)` with the STE backward, for ``config`` with ``fields`` replaced (:meth:`WeightQuantConfig.merged`).

    ``step`` is the learned scale when the rule is ``lsq`` (a tensor that requires grad, shape ``()`` per tensor or
    ``(C,)`` per channel); it then receives LSQ's gradient, scaled by :math:`1/\\sqrt{N Q_P}` with :math:`N` the
    number of weights sharing one scale (for codes ``spacing`` apart, LSQ's for the level spacing:
    :meth:`~stelab.weights.quantizers.WeightQuantizer.step_grad_scale`).
    """
    cfg = WeightQuantConfig.merged(config, **fields)
    return quantize_weight_with(w, cfg, check_weight_ste(cfg.ste), step)


def quantize_weight_with(w: Tensor, config: WeightQuantConfig, ste: STE, step: Tensor | None = None,
                         where: str = "") -> Tensor:
    """:func:`quantize_weight` for a validated ``config`` whose STE is already resolved (a layer keeps both, so its
    forward does not parse the STE's name every call); ``where`` names the layer in errors."""
    q = get(config.quantizer)
    bits = config.effective_bits
    q_p = q.q_max(bits)
    if step is not None and config.learned and _runs_fused(w, step, q, ste):
        n = max(1, w.numel() // max(1, step.numel()))
        return _FusedStepWeight.apply(w, step, fused_kind(q), q_p, q.step_grad_scale(n, bits), where)
    scale = resolve_scale(w, config, step, where)
    codes = q.codes(w, scale, bits, config.granularity)
    g = q.step_grad_scale(max(1, w.numel() // max(1, scale.numel())), bits)
    return ScaledCodes.apply(w, scale, codes, ste, q.codes_follow_step, q_p, q_p, g)


def _runs_fused(w: Tensor, step: Tensor, q: WeightQuantizer, ste: STE) -> bool:
    """Whether the CPU kernel serves this learned-step weight: built-in uniform or midrise codes, the identity STE
    (LSQ's weights' default), dense float32/64 weights with a step of their dtype, per tensor or per output channel,
    in eager mode."""
    return (w.device.type == "cpu" and w.dtype in (torch.float32, torch.float64) and step.dtype == w.dtype
            and w.dim() >= 1 and step.numel() in (1, w.shape[0]) and _channel_major(w) and step.is_contiguous()
            and fused_kind(q) is not None and passes_through(ste) and not torch.compiler.is_compiling()
            and type(w) in (Tensor, torch.nn.Parameter) and cpu.available())  # no other subclass (FakeTensor, ...)


def _channel_major(w: Tensor) -> bool:
    """Dense with each output channel's weights in one block (contiguous, or a channels_last conv weight): what the
    kernel reads as ``C`` runs of ``numel / C`` elements, in any order within a run."""
    return w.is_contiguous() or (w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last))


class _FusedStepWeight(torch.autograd.Function):
    r""":math:`\hat w = s\,k(w/s)` with a learned step ``s`` in one C++ call, and in one more the step's LSQ gradient
    (:func:`stelab.quant.lsq.step_grad_factor` summed over the weights it scales, times ``g``); the weight's gradient
    is the incoming one (identity STE). The same numbers as :class:`stelab.quant.lsq.ScaledCodes` (the forward bit for
    bit; the step's sum in double), without its ten small tensor operations each way per layer."""

    @staticmethod
    def forward(ctx, w: Tensor, step: Tensor, kind: str, q: int, g: float, where: str) -> Tensor:
        out = torch.empty_like(w)
        if cpu.weight_forward(w.detach(), step.detach(), out, q, kind):
            check_step(step, where)  # a step not positive and finite: the error naming the layer
        ctx.save_for_backward(w, step)
        ctx.kind, ctx.q, ctx.g = kind, q, g
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        w, step = ctx.saved_tensors
        gs = None
        if ctx.needs_input_grad[1]:
            if grad.stride() != w.stride():  # the kernel pairs grad and w element by element in memory
                grad = torch.empty_like(w).copy_(grad)
            sums = cpu.weight_step_grad(w.detach(), step.detach(), grad, ctx.q, ctx.kind)
            gs = (sums * ctx.g).to(step.dtype).reshape(step.shape)
        return grad, gs, None, None, None, None


class _PassThrough(torch.autograd.Function):
    """Forward ``value``; backward the incoming gradient to ``w`` unchanged."""

    @staticmethod
    def forward(ctx, w: Tensor, value: Tensor) -> Tensor:
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def relaxed_weight(w: Tensor, quantized: Tensor, lam: float | Tensor, denominator: Tensor | None = None) -> Tensor:
    """BinaryRelax's pseudo-quantized weights :math:`(w + \\lambda Q(w)) / (1 + \\lambda)`, whose gradient is passed
    to ``w`` unchanged (the gradient is evaluated at the relaxed weights and applied to the float ones;
    :mod:`stelab.weights.optim`). ``lam`` is a number, or a 0-d tensor given with ``denominator`` :math:`= 1 + \\lambda`
    (a layer's buffers; not checked here, which would sync with the device)."""
    if isinstance(lam, Tensor):
        if denominator is None:
            raise ValueError("a tensor lambda needs its denominator 1 + lambda (as a tensor)")
        value = (w.detach() + lam * quantized.detach()) / denominator
    else:
        if not lam >= 0:
            raise ValueError(f"the relaxation parameter lambda must be >= 0, got {lam}")
        value = (w.detach() + lam * quantized.detach()) / (1.0 + lam)
    return _PassThrough.apply(w, value)
