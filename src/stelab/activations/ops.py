r"""The quantized activation as an autograd op: a forward quantizer in the forward pass, an STE in the backward.

.. math::  y = q(x), \qquad \frac{\partial \ell}{\partial x} = \frac{\partial \ell}{\partial y}\,\mu'(x;\ \mathrm{top})

Fixed resolution, piecewise-constant ``mu'`` (identity, relu, clipped_relu, hardtanh, leaky_relu and any STE
registered with a ``Piecewise`` table): the fused operator ``stelab::quantize`` (:mod:`stelab.kernels`), one pass
forward writing ``y`` and a one-byte state (nothing for identity), one pass backward. Every other case (a learned
resolution, STEs with a smooth ``mu'`` such as log_tailed_relu, swish_sign, approx_sign) saves the input itself,
since ``mu'(x)`` must be evaluated at ``x`` in the backward pass and, for a learned ``alpha``, ``alpha`` moves.

With a learned resolution the op also returns :math:`\partial\ell/\partial\alpha = \sum \partial\ell/\partial y \cdot
\partial q/\partial \alpha`, with :math:`\partial q / \partial\alpha` given by one of the rules of the blended coarse
gradient code (Yin et al. 2019), for :math:`x` in the region named (0 elsewhere):

* ``mean``: :math:`2^{b-1}` on :math:`0 < x \le L\alpha`, :math:`L` above (the mean level index, then the top);
* ``ae``:   :math:`k` on the k-th step :math:`(k-1)\alpha < x \le k\alpha`, :math:`L` above; i.e. exactly
  :math:`q(x)/\alpha`, the derivative of the staircase with the step index held fixed ("a.e."). For ``sign`` this
  is :math:`\pm 1`, and it is the only rule ``sign`` accepts (the others assume levels :math:`\ge 0`);
* ``pact``: :math:`L` above :math:`L\alpha` only (PACT's clipping-level gradient);
* ``min``:  1 on :math:`0 < x \le L\alpha` (the smallest non-zero index);
* ``lsq``:  LSQ's step gradient (Esser et al. 2020; :mod:`stelab.quant.lsq`) with :math:`Q_N = 0, Q_P = L` and
  :math:`u = x/\alpha`: :math:`k - u` on :math:`0 < u < L` (:math:`k` the level index, rounding passed straight
  through), :math:`L` for :math:`u \ge L`, 0 for :math:`u \le 0`; times LSQ's gradient scale
  :math:`g = 1/\sqrt{N L}` with :math:`N` the number of elements of *one sample* of ``x``
  (``x.numel() / x.shape[0]``, e.g. :math:`C H W` of a conv activation; all of ``x`` for a 0-d or 1-d input).
  Why one sample and not the whole batch: the loss is a batch mean, so the summed step gradient is already of the
  size of one sample's; LSQ's :math:`N` is the layer's feature count, and the batch size must not change the
  step's rate. For ``round`` this is LSQ exactly (up to the tie convention); for ``staircase`` the same formula
  with the ceiling's index (:math:`k - u \in [0, 1)`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import kernels
from .. import ste as ste_registry
from ..errors import ResolutionError, check_alpha, check_bits
from ..pack import saved as pack_saved
from ..quant.lsq import grad_scale, step_grad_factor
from ..ste import STE
from ..ste.compiled import grad_times_derivative
from . import quantizers
from .config import ALPHA_RULES, QuantConfig, check_learned  # noqa: F401  (re-exported: stelab.activations.ops.*)

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class FusedPlan:
    """The constant arguments of ``stelab::quantize`` for one (forward, bits, alpha, STE): thresholds of ``mu'`` as
    multiples of ``top``, and either a mask (``mask_bits >= 0``: ``mu'`` takes two values, ``values = [lo, hi]``) or
    a region code (``values`` per region)."""

    alpha: float
    levels: int
    mode: int
    breaks: tuple[float, ...]
    mask_bits: int
    values: tuple[float, ...]

    def apply(self, x: Tensor, check_nan: bool) -> Tensor:
        return kernels.quantize(x, self.alpha, self.levels, self.mode, list(self.breaks), self.mask_bits,
                                list(self.values), check_nan)




def fused_plan(forward: str, bits: int, alpha: float, ste: STE) -> FusedPlan | None:
    """How ``stelab::quantize`` computes this layer, or ``None`` when ``mu'`` is not piecewise constant."""
    shape = ste.piecewise
    if shape is None or len(shape.breaks) > kernels.MAX_BREAKS:
        return None
    distinct = list(dict.fromkeys(shape.values))
    if len(distinct) <= 2 and len(shape.breaks) > 0:
        hi = distinct[-1]
        mask_bits = sum(1 << r for r, v in enumerate(shape.values) if v == hi)
        values = tuple(distinct) if len(distinct) == 2 else (hi, hi)
    else:
        mask_bits, values = -1, shape.values
    mode = kernels.MODES[quantizers.get(forward).formula]
    return FusedPlan(float(alpha), 2**bits - 1, mode, shape.breaks, mask_bits, values)


class _QuantizeSmooth(torch.autograd.Function):
    """Fixed resolution, ``mu'`` not piecewise constant: the input is saved and ``grad * mu'(x; top)`` evaluated,
    compiled into one pass for large tensors (:mod:`stelab.ste.compiled`)."""

    @staticmethod
    def forward(ctx, x: Tensor, forward: str, bits: int, alpha: float, ste: STE, check_nan: bool) -> Tensor:
        ctx.ste, ctx.top = ste, quantizers.get(forward).top(bits, alpha)
        ctx.save_for_backward(x)
        return quantizers.evaluate(x, forward, bits, alpha, check_nan)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return grad_times_derivative(ctx.ste, grad, x, ctx.top), None, None, None, None, None


def quantize_fixed(x: Tensor, forward: str, bits: int, alpha: float, ste: STE, check_nan: bool,
                   plan: FusedPlan | None = None) -> Tensor:
    """The fixed-resolution op: the fused operator when ``mu'`` is piecewise constant, else :class:`_QuantizeSmooth`.
    ``plan`` is :func:`fused_plan`'s result when the caller has it already (a module builds it once)."""
    plan = plan or fused_plan(forward, bits, alpha, ste)
    if plan is not None:
        return plan.apply(x, check_nan and not torch.compiler.is_compiling())
    return _QuantizeSmooth.apply(x, forward, bits, alpha, ste, check_nan and not torch.compiler.is_compiling())


def alpha_grad_factor(x: Tensor, code: Tensor, alpha: float | Tensor, bits: int, rule: str) -> Tensor:
    """``dq/dalpha`` per element for a learned-resolution rule (module docstring); ``code = q(x)/alpha``."""
    levels = 2**bits - 1
    top = levels * alpha
    if rule == "ae":
        return code.to(x.dtype)
    if rule == "lsq":
        return step_grad_factor(x / alpha, code.to(x.dtype), 0, levels) * lsq_grad_scale(x, levels)
    above = x > top
    if rule == "pact":
        return above * float(levels)
    inside = (x > 0) & (x <= top)
    if rule == "mean":
        return inside * float(2 ** (bits - 1)) + above * float(levels)
    return inside.to(x.dtype)  # "min"


def lsq_grad_scale(x: Tensor, levels: int) -> float:
    """LSQ's :math:`g = 1/\\sqrt{N L}` for an activation ``x``, :math:`N` the elements of one sample (docstring)."""
    n = x.numel() // x.shape[0] if x.dim() >= 2 and x.shape[0] > 0 else x.numel()
    return grad_scale(max(1, n), levels)


class _QuantizeLearned(torch.autograd.Function):
    """Learned resolution: ``alpha`` is a one-element tensor that receives a gradient by ``rule``."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, forward: str, bits: int, ste: STE, rule: str) -> Tensor:
        ctx.ste, ctx.forward, ctx.bits, ctx.rule = ste, forward, bits, rule
        ctx.save_for_backward(x, alpha)
        return quantizers.evaluate(x, forward, bits, alpha.detach().reshape(()))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, alpha = ctx.saved_tensors
        fq = quantizers.get(ctx.forward)
        a = alpha.detach().reshape(()).to(kernels.reference.compute_dtype(x.dtype))
        gx = grad * ctx.ste.derivative(x, fq.top(ctx.bits, a).to(x.dtype))
        ga = None
        if ctx.needs_input_grad[1]:
            code = quantizers.level_index(x, ctx.forward, ctx.bits, a)
            factor = alpha_grad_factor(x, code, a.to(x.dtype), ctx.bits, ctx.rule)
            ga = (grad * factor).sum().to(alpha.dtype).reshape(alpha.shape)
        return gx, ga, None, None, None, None


#: dq/dalpha of the rules that take three values only, by where x lies: x <= 0, 0 < x <= top, x > top.
_THREE_VALUED = {"mean": lambda bits, L: (0.0, float(2 ** (bits - 1)), float(L)),
                 "pact": lambda bits, L: (0.0, 0.0, float(L)),
                 "min": lambda bits, L: (0.0, 1.0, 0.0)}


@functools.lru_cache(maxsize=256)  # per layer and call on the training step: computed once per (STE, rule, bits)
def state_plan(breaks: tuple[float, ...], values: tuple[float, ...], rule: str,
               bits: int) -> tuple[list[float], list[float], list[float]] | None:
    r"""For a three-valued rule (mean, pact, min): ``(merged, values, factors)``, the breakpoints of ``mu'`` merged
    with 0 and 1 (in units of top, as ``breaks``), and on each region between them ``mu'`` and ``dq/dalpha``; so
    the forward's one-byte region code serves both in the backward. None for ae and lsq (they need ``x`` itself:
    the level index, the fraction ``k - x/alpha``) or when the merged breakpoints exceed the kernels' table.

    Region ``R`` holds :math:`m_{R-1}\,\mathrm{top} < x \le m_R\,\mathrm{top}`; there ``x`` exceeds the
    breakpoint ``b`` of ``mu'`` exactly when :math:`b \le m_{R-1}`, so ``mu'`` takes ``values[#{b <= m_{R-1}}]``,
    and the rule's value is chosen by how many of 0 and 1 are :math:`\le m_{R-1}`."""
    rule_values = _THREE_VALUED.get(rule)
    merged = sorted(set(breaks) | {0.0, 1.0})
    if rule_values is None or len(merged) > kernels.MAX_BREAKS:
        return None
    by_class = rule_values(bits, 2**bits - 1)
    lows = [-float("inf"), *merged]
    return (merged, [values[sum(b <= low for b in breaks)] for low in lows],
            [by_class[(0.0 <= low) + (1.0 <= low)] for low in lows])


class _QuantizeLearnedFused(torch.autograd.Function):
    """Learned resolution, piecewise-constant ``mu'``, a dense tensor a backend has a ``learned_backward`` for (the C++
    kernel on the CPU, the Triton one on CUDA): one backward pass that writes ``dx`` and reduces ``d alpha`` (the
    same rules as :func:`alpha_grad_factor`; per-thread partial sums on the CPU, per-block ones on CUDA).

    What it keeps for the backward: for ``mean``, ``pact`` and ``min`` on a backend with a ``learned_state_backward``
    (C++ and Triton), the forward's **one byte** per element, the region code of :func:`state_plan`, as the fixed op
    does; for ``ae`` and ``lsq`` ``x`` itself, 4 bytes per float32 element, as the unfused path does: ``ae`` needs
    the level index and ``lsq`` the fraction ``k - x/alpha``, which a byte does not hold exactly. On the CPU
    ``alpha`` is read on the host (no device synchronisation there) and the forward is the fixed op's one pass;
    elsewhere ``alpha`` stays a device tensor, read by the kernels themselves, so no call synchronises."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, forward: str, bits: int, ste: STE, rule: str) -> Tensor:
        on_cpu = x.device.type == "cpu"
        ctx.a = float(alpha.detach()) if on_cpu else alpha.detach().reshape(())
        ctx.bits, ctx.ste, ctx.rule = bits, ste, rule
        ctx.mode = kernels.MODES[quantizers.get(forward).formula]
        table = ste.piecewise
        plan = state_plan(table.breaks, table.values, rule, bits)
        backend = kernels.backend_for(x, len(plan[0])) if plan else None
        if plan and backend is not None and getattr(backend, "learned_state_backward", None) is not None:
            y, state, _ = backend.forward(x, ctx.a, 2**bits - 1, ctx.mode, plan[0], -1)
            setattr(state, kernels.STATE_BITS, len(plan[0]).bit_length())  # so stelab.PackSaved keeps it in bits
            ctx.plan, ctx.dtype = plan, x.dtype
            ctx.save_for_backward(state, alpha)
            return y
        ctx.plan = None
        ctx.save_for_backward(x, alpha)
        return quantizers.evaluate(x, forward, bits, ctx.a)  # a float alpha: the fixed op's pass; a tensor: no sync

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.plan is not None:
            return _QuantizeLearnedFused._from_state(ctx, grad)
        x, alpha = ctx.saved_tensors
        if grad.dtype != x.dtype or grad.stride() != x.stride():
            grad = torch.empty_like(x).copy_(grad)
        dx = torch.empty_like(x)
        levels, table = 2**ctx.bits - 1, ctx.ste.piecewise
        scale = lsq_grad_scale(x, levels) if ctx.rule == "lsq" else 1.0
        learned_backward = kernels.backend_for(x, len(table.breaks)).learned_backward
        total = learned_backward(x, grad, dx, ctx.a, levels, ctx.bits, ctx.mode, list(table.breaks),
                                 list(table.values), ctx.rule, scale)
        ga = None
        if ctx.needs_input_grad[1]:  # a float (C++) or a device tensor (Triton): no host read of the latter
            ga = torch.as_tensor(total, dtype=alpha.dtype, device=alpha.device).reshape(alpha.shape)
        return dx, ga, None, None, None, None

    @staticmethod
    def _from_state(ctx, grad: Tensor):
        state, alpha = ctx.saved_tensors
        if grad.dtype != ctx.dtype or grad.stride() != state.stride():
            grad = torch.empty_like(state, dtype=ctx.dtype).copy_(grad)
        dx = torch.empty_like(state, dtype=ctx.dtype)
        merged, values, factors = ctx.plan
        total = kernels.backend_for(dx, len(merged)).learned_state_backward(grad, state, dx, values, factors)
        ga = None
        if ctx.needs_input_grad[1]:  # a float (C++) or a device tensor (Triton): no host read of the latter
            ga = torch.as_tensor(total, dtype=alpha.dtype, device=alpha.device).reshape(alpha.shape)
        return dx, ga, None, None, None, None


def _learned_fused(x: Tensor, ste: STE) -> bool:
    """Whether the learned-resolution op runs fused (:class:`_QuantizeLearnedFused`) on ``x`` with ``ste``."""
    table = ste.piecewise
    return (table is not None and type(x) is Tensor and not torch.compiler.is_compiling()
            and kernels.backend_for(x, len(table.breaks)).learned_backward is not None)


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


def quantize_with(x: Tensor, config: QuantConfig, alpha: float | Tensor, ste: STE,
                  plan: FusedPlan | None = None) -> Tensor:
    """The one fixed/learned dispatch, for a validated ``config`` whose resolution and STE are already resolved.

    ``alpha`` is the resolution used: a float for a fixed one, the one-element tensor that learns when
    ``config.learn_alpha`` (a CPU one is checked every call, as training can push it through zero; on other devices
    the training loop checks it without a sync of its own). ``ste`` is the STE
    ``config.ste`` names (or any STE object), ``plan`` the fixed layer's :func:`fused_plan` when the caller keeps it.
    :class:`stelab.QuantReLU` and :func:`quantize` both end here.
    """
    if config.learn_alpha:
        check_input(x, config.check_nan)
        # Read on the host only where that is no device sync (a CPU alpha, which the fused CPU op reads anyway) and
        # never under compile (a graph break). On a GPU the training loop checks every learned resolution in the
        # sync it makes for the loss anyway (stelab.train.loop; every 25 steps there), not once per layer and call.
        if alpha.device.type == "cpu" and not torch.compiler.is_compiling():  # type: ignore[union-attr]
            try:
                check_alpha(float(alpha.detach()))  # type: ignore[union-attr]
            except ValueError as err:  # NaN included: float('nan') fails check_alpha's isfinite
                raise ResolutionError(f"the learned resolution {err} (learned alphas must stay positive and "
                                      "finite); lower the resolutions' rate (--step-lr-scale 0.1) or every rate "
                                      "(--lr), or try another --alpha-rule") from None
        learned = _QuantizeLearnedFused if _learned_fused(x, ste) else _QuantizeLearned
        y = learned.apply(x, alpha, config.forward, config.bits, ste, config.alpha_rule)
    else:
        check_input(x, check_nan=False)  # NaN is checked by the operator itself, in its pass over x
        y = quantize_fixed(x, config.forward, config.bits, float(alpha), ste, config.check_nan, plan)
    if pack_saved.marking():  # inside stelab.PackSaved: lets its hooks recognise y when autograd saves it
        pack_saved.mark(y, quantizers.get(config.forward).formula, config.bits, alpha)
    return y


class _FromConfig:
    """The default of :func:`quantize`'s keywords: not given, so ``config``'s value (or QuantConfig's) applies. A
    sentinel, not None: ``alpha=None`` means the forward's default resolution, and ``bits=None`` is an error."""

    def __repr__(self) -> str:
        return "<from config>"


FROM_CONFIG: Any = _FromConfig()


def quantize(x: Tensor, config: QuantConfig | None = None, /, *, bits: int = FROM_CONFIG,
             alpha: float | Tensor | None = FROM_CONFIG, ste: str | STE = FROM_CONFIG, forward: str = FROM_CONFIG,
             learn_alpha: bool = FROM_CONFIG, alpha_rule: str = FROM_CONFIG, check_nan: bool = FROM_CONFIG,
             **fields: Any) -> Tensor:
    r"""Quantized activation: ``q(x)`` forward, the STE ``mu'(x)`` backward.

    .. math::  y = q(x), \qquad \frac{\partial \ell}{\partial x} := \frac{\partial \ell}{\partial y}\,
               \mu'(x;\ \mathrm{top}), \qquad L = 2^{b} - 1,

    with the forward quantizer ``forward``: ``staircase`` :math:`q(x) = \alpha\,\mathrm{clamp}(\lceil x/\alpha
    \rceil, 0, L)` (Yin et al. 2019), ``round`` :math:`\alpha\,\mathrm{clamp}(\mathrm{round}(x/\alpha), 0, L)`,
    ``sign`` :math:`\pm\alpha` (1 bit); ``top = L alpha`` (``alpha`` for sign) is where the STE clips.
    E.g. ``quantize(x, bits=2, alpha=0.6511, ste="relu")``; see :mod:`stelab.activations.quantizers` and
    :mod:`stelab.ste`.

    Keywords are :class:`QuantConfig`'s fields, replacing those of ``config`` (not given: the config's value, or
    QuantConfig's default; :meth:`QuantConfig.merged`): ``bits`` (default 2), ``ste`` (a registered spec such as
    ``"leaky_relu(slope=0.05)"``, or an :class:`STE` object used as it is), ``forward`` (``staircase``),
    ``alpha``, ``learn_alpha``, ``alpha_rule``, ``check_nan``; any other keyword must be a field too (an unknown
    name raises ``ValueError`` listing them). Being a function of a tensor, ``alpha`` widens:

    * ``alpha`` may be a one-element tensor that requires grad: the resolution is then *learned* (this is how the
      functional form says ``learn_alpha=True``; there is no layer to own a parameter), and its gradient follows
      ``alpha_rule``. A number, or a tensor without grad, is a fixed resolution; ``None`` the forward's default
      (Lloyd's for staircase/round, 1 for sign). It is used as given, rounded to the input's compute type (float32;
      float64 for float64 inputs), and the forward is the documented formula evaluated in that arithmetic
      (:mod:`stelab.kernels.reference`).
    """
    if config is not None and not isinstance(config, QuantConfig):
        raise TypeError(f"quantize(x, config): config must be a stelab.QuantConfig, got {type(config).__name__} "
                        f"({config!r}); give fields by keyword, e.g. quantize(x, bits={config!r})"
                        if isinstance(config, int) else
                        f"quantize(x, config): config must be a stelab.QuantConfig, got {type(config).__name__}; "
                        "give fields by keyword, e.g. quantize(x, bits=2, ste='relu')")
    named = {"bits": bits, "alpha": alpha, "ste": ste, "forward": forward, "learn_alpha": learn_alpha,
             "alpha_rule": alpha_rule, "check_nan": check_nan}
    fields = {**{k: v for k, v in named.items() if v is not FROM_CONFIG}, **fields}
    # No dict is mutated here: torch.compile traces this function and graph-breaks on dict mutation.
    estimator = fields.get("ste") if isinstance(fields.get("ste"), STE) else None
    if estimator is not None:
        fields = {k: v for k, v in fields.items() if k != "ste"}
    alpha = fields.get("alpha")
    learned = isinstance(alpha, Tensor) and alpha.requires_grad
    if learned:
        if alpha.numel() != 1:  # type: ignore[union-attr]
            raise ValueError(f"a learned alpha must have one element, got shape {tuple(alpha.shape)}")  # type: ignore
        fields = {**fields, "alpha": None, "learn_alpha": True}
    elif fields.get("learn_alpha") or (config is not None and config.learn_alpha and "learn_alpha" not in fields):
        raise ValueError("the functional quantize learns alpha when alpha is a one-element tensor that requires "
                         "grad; give one (or use stelab.QuantReLU(learn_alpha=True), which owns the parameter)")
    cfg = QuantConfig.merged(config, **fields)
    estimator = estimator or ste_registry.get(cfg.ste)
    if not learned:
        alpha = quantizers.get(cfg.forward).default_alpha(cfg.bits) if cfg.alpha is None else cfg.alpha
    return quantize_with(x, cfg, alpha, estimator)  # type: ignore[arg-type]


__all__ = ["quantize", "quantize_with", "quantize_fixed", "fused_plan", "FusedPlan", "ALPHA_RULES",
           "alpha_grad_factor", "check_bits", "check_input", "check_learned", "lsq_grad_scale"]
