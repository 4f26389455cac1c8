r"""``stelab::quantize`` and ``stelab::ste_backward``: the fused quantized activation as PyTorch custom operators.

One forward pass reads ``x`` and writes ``y`` plus a one-byte backward state; one backward pass reads the incoming
gradient and the state and writes ``dx`` (the math is in :mod:`stelab.kernels.reference`). That is the memory
traffic of ``relu``'s forward and backward, the floor for an elementwise op.

Registered with :mod:`torch.library` (``custom_op`` with a fake implementation and an autograd formula), so the op
runs in eager mode, under ``torch.compile`` without a graph break, under ``torch.autocast`` (it computes in the
dtype it is given, as ``relu`` does) and under DDP. Kernels, by device:

* CPU: the C++ kernel of :mod:`stelab.kernels.cpu` (vectorized, OpenMP over ``torch.get_num_threads()``) for dense
  tensors (contiguous, channels_last, any dense layout) of float32/float64/bfloat16/float16; the output keeps the
  input's memory format, and nothing is copied.
* CUDA: the Triton kernel of :mod:`stelab.kernels.triton_quant` (where ``triton`` is installed).
* Anything else (no compiler, no triton, other devices, non-dense views): the pure-PyTorch reference, with
  identical results.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import cpu, reference
from .reference import MODES, ROUND, SIGN, STAIRCASE

__all__ = ["quantize", "quantize_fwd", "ste_backward", "MODES", "STAIRCASE", "ROUND", "SIGN", "STATE_BITS", "backend"]

#: The attribute the op sets on the state it saves for backward: how many bits its values need (1 for a mask, else
#: those of the region count), so that ``stelab.PackSaved`` can keep it bit-packed (:mod:`stelab.pack.recompute`).
STATE_BITS = "_stelab_state_bits"


def _mark_state(state: Tensor, breaks: list[float], mask_bits: int) -> Tensor:
    if breaks:
        setattr(state, STATE_BITS, 1 if mask_bits >= 0 else len(breaks).bit_length())
    return state


def _dense(t: Tensor) -> bool:
    """Whether ``t``'s elements fill its memory span exactly in some order of its dimensions (contiguous,
    channels_last, any permutation), so a flat loop covers them and ``empty_like`` repeats the layout."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(((n, st) for n, st in zip(t.shape, t.stride()) if n != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _state_like(x: Tensor, breaks: list[float]) -> Tensor:
    if not breaks:
        return torch.empty(0, dtype=torch.uint8, device=x.device)
    return torch.empty_like(x, dtype=torch.uint8)


def _nan_error() -> ValueError:
    return ValueError("x contains NaN; a quantizer cannot place NaN on a level (a diverged run upstream?)")


def backend(x: Tensor) -> str:
    """Which implementation :func:`quantize_fwd` uses for ``x``: ``"cpp"``, ``"triton"`` or ``"reference"``."""
    if x.device.type == "cpu" and x.dtype in cpu.DTYPE_CODES and _dense(x) and cpu.available():
        return "cpp"
    if x.device.type == "cuda" and _dense(x):
        from . import triton_quant

        if triton_quant.available():
            return "triton"
    return "reference"


@torch.library.custom_op("stelab::quantize", mutates_args=())
def quantize_fwd(x: Tensor, alpha: float, levels: int, mode: int, breaks: list[float], mask_bits: int,
                 values: list[float], check_nan: bool) -> tuple[Tensor, Tensor]:
    """``(y, state)`` for a fixed resolution; ``values`` is used by the backward only (see module docstring)."""
    return _reference_forward(x, alpha, levels, mode, breaks, mask_bits, check_nan)


def _reference_forward(x, alpha, levels, mode, breaks, mask_bits, check_nan):
    if check_nan and bool(x.isnan().any()):
        raise _nan_error()
    return reference.forward(x, alpha, levels, mode, breaks, mask_bits)


# register_kernel returns the function itself, so the eager path below calls these same functions directly.
@quantize_fwd.register_kernel("cpu")
def _quantize_cpu(x, alpha, levels, mode, breaks, mask_bits, values, check_nan):
    if backend(x) != "cpp":
        return _reference_forward(x, alpha, levels, mode, breaks, mask_bits, check_nan)
    y = torch.empty_like(x)
    state = _state_like(x, breaks)
    has_nan = cpu.forward(x, y, state if breaks else None, alpha, levels, mode, breaks, mask_bits)
    if check_nan and has_nan:
        raise _nan_error()
    return y, state


@quantize_fwd.register_kernel("cuda")
def _quantize_cuda(x, alpha, levels, mode, breaks, mask_bits, values, check_nan):
    if backend(x) != "triton":
        return _reference_forward(x, alpha, levels, mode, breaks, mask_bits, check_nan)
    if check_nan and bool(x.isnan().any()):
        raise _nan_error()
    from . import triton_quant

    return triton_quant.forward(x, alpha, levels, mode, breaks, mask_bits)


@quantize_fwd.register_fake
def _(x, alpha, levels, mode, breaks, mask_bits, values, check_nan):
    return torch.empty_like(x), _state_like(x, breaks)


@torch.library.custom_op("stelab::ste_backward", mutates_args=())
def ste_backward(grad: Tensor, state: Tensor, values: list[float]) -> Tensor:
    """``dx = grad * values[state]``, computed in float32 (float64 for float64) and rounded to ``grad``'s dtype.

    ``dx`` always has the state's (that is, the input's) layout, whatever layout ``grad`` arrives in: every kernel
    and the fake implementation agree on it, as ``torch.compile`` requires."""
    return _in_state_layout(reference.backward(grad, state, values), state)


def _dx_like(grad: Tensor, state: Tensor) -> Tensor:
    return torch.empty_like(state, dtype=grad.dtype)


def _in_state_layout(dx: Tensor, state: Tensor) -> Tensor:
    return dx if dx.stride() == state.stride() else _dx_like(dx, state).copy_(dx)


def _grad_in_state_layout(grad: Tensor, state: Tensor) -> Tensor:
    """The gradient can arrive in another layout than the input had (oneDNN's convolution backward returns NCHW
    gradients in a channels_last model). dx goes back in the input's layout, as relu's does: the batch norm before
    the activation runs its backward several times slower on mixed layouts than this one copy costs."""
    return grad if grad.stride() == state.stride() else _dx_like(grad, state).copy_(grad)


@ste_backward.register_kernel("cpu")
def _ste_backward_cpu(grad, state, values):
    if grad.dtype not in cpu.DTYPE_CODES or not _dense(state) or not cpu.available():
        return _in_state_layout(reference.backward(grad, state, values), state)
    grad = _grad_in_state_layout(grad, state)
    out = torch.empty_like(grad)
    cpu.backward(grad, state, out, values)
    return out


@ste_backward.register_kernel("cuda")
def _ste_backward_cuda(grad, state, values):
    from . import triton_quant

    if not (_dense(state) and triton_quant.available()):
        return _in_state_layout(reference.backward(grad, state, values), state)
    return triton_quant.backward(_grad_in_state_layout(grad, state), state, values)


@ste_backward.register_fake
def _(grad, state, values):
    return _dx_like(grad, state)


def _setup_context(ctx, inputs, output):
    ctx.values, ctx.constant = inputs[6], not inputs[4]
    ctx.layout = _layout(inputs[0]) if ctx.constant else None
    ctx.save_for_backward(_mark_state(output[1], inputs[4], inputs[5]))


def _backward(ctx, grad_y, grad_state):
    (state,) = ctx.saved_tensors
    if ctx.constant:  # mu' is one constant: no state was kept
        gx = _constant_backward(grad_y, ctx.values, ctx.layout)
    else:
        gx = ste_backward(grad_y, state, ctx.values)
    return gx, None, None, None, None, None, None, None


quantize_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---- eager calls ----
# The custom operator is the op's one definition (schema, kernels, fake, autograd). Going through the dispatcher's
# Python custom-op machinery costs about 100 us per forward + backward on this CPU, which is 10-20% of a 2M-element
# activation; so eager calls on plain CPU/CUDA tensors run the same registered kernels through a thin autograd
# Function instead (about 20 us), and everything else (torch.compile, tensor subclasses, other devices) goes through
# ``torch.ops.stelab.quantize``. Tests check that both give identical results and gradients.
_FORWARD = {"cpu": _quantize_cpu, "cuda": _quantize_cuda}
_BACKWARD = {"cpu": _ste_backward_cpu, "cuda": _ste_backward_cuda}


def _constant_backward(grad: Tensor, values: list[float], layout: tuple | None) -> Tensor:
    """``grad * values[0]`` in the input's layout ``(shape, stride)`` (see :func:`_ste_backward_cpu` for why)."""
    if layout is not None and grad.stride() != layout[1] and grad.shape == layout[0]:
        return torch.empty_strided(*layout, dtype=grad.dtype, device=grad.device).copy_(grad).mul_(values[0])
    return grad if values[0] == 1.0 else grad * values[0]


def _layout(x: Tensor) -> tuple | None:
    return (x.shape, x.stride()) if _dense(x) else None


class _Eager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, levels, mode, breaks, mask_bits, values, check_nan):
        y, state = _FORWARD[x.device.type](x, alpha, levels, mode, breaks, mask_bits, values, check_nan)
        ctx.values, ctx.constant = values, not breaks
        ctx.layout = _layout(x) if ctx.constant else None
        ctx.save_for_backward(_mark_state(state, breaks, mask_bits))
        return y

    @staticmethod
    def backward(ctx, grad):
        (state,) = ctx.saved_tensors
        if ctx.constant:
            gx = _constant_backward(grad, ctx.values, ctx.layout)
        else:
            gx = _BACKWARD[grad.device.type](grad, state, ctx.values)
        return gx, None, None, None, None, None, None, None


def quantize(x: Tensor, alpha: float, levels: int, mode: int, breaks: list[float], mask_bits: int,
             values: list[float], check_nan: bool) -> Tensor:
    """``y`` of ``stelab::quantize`` with its STE backward; the state is made only when a gradient will need it."""
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor or x.device.type not in _FORWARD:
        return quantize_fwd(x, alpha, levels, mode, breaks, mask_bits, values, check_nan)[0]
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _FORWARD[x.device.type](x, alpha, levels, mode, [], -1, values, check_nan)[0]
    return _Eager.apply(x, alpha, levels, mode, breaks, mask_bits, values, check_nan)
