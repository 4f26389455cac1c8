r"""``stelab::quantize`` and ``stelab::ste_backward``: the fused quantized activation as PyTorch custom operators.

One forward pass reads ``x`` and writes ``y`` plus a one-byte backward state; one backward pass reads the incoming
gradient and the state and writes ``dx`` (the math is in :mod:`stelab.kernels.reference`). That is the memory
traffic of ``relu``'s forward and backward, the floor for an elementwise op.

Registered with :mod:`torch.library` (``custom_op`` with a fake implementation and an autograd formula), so the op
runs in eager mode, under ``torch.compile`` without a graph break, under ``torch.autocast`` (it computes in the
dtype it is given, as ``relu`` does) and under DDP. Each call runs the first of :data:`BACKENDS` that supports its
tensor (:mod:`stelab.kernels.backend`, the protocol a backend follows):

* ``cpp``, CPU: the C++ kernel of :mod:`stelab.kernels.cpu` (vectorized, OpenMP over ``torch.get_num_threads()``)
  for dense tensors (contiguous, channels_last, any dense layout) of float32/float64/bfloat16/float16; the output
  keeps the input's memory format, and nothing is copied.
* ``triton``, CUDA: the Triton kernel of :mod:`stelab.kernels.triton_quant` (where ``triton`` is installed).
* ``reference``, anything else (no compiler, no triton, other devices, non-dense views): the pure-PyTorch math of
  :mod:`stelab.kernels.reference`, with identical results.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import cpu, reference, triton_quant
from .backend import Backend, dense
from .reference import MODES, ROUND, SIGN, STAIRCASE

__all__ = ["quantize", "quantize_fwd", "ste_backward", "MODES", "STAIRCASE", "ROUND", "SIGN", "STATE_BITS", "backend",
           "BACKENDS", "MAX_BREAKS", "select"]

#: The backends, in order of preference; the reference (last) supports every tensor.
BACKENDS: list[Backend] = [cpu.BACKEND, triton_quant.BACKEND, reference.BACKEND]
#: The most breakpoints of ``mu'`` a fused plan may have (more regions take the general path of the op).
MAX_BREAKS = reference.BACKEND.max_breaks

#: The attribute the op sets on the state it saves for backward: how many bits its values need (1 for a mask, else
#: those of the region count), so that ``stelab.PackSaved`` can keep it bit-packed (:mod:`stelab.pack.recompute`).
STATE_BITS = "_stelab_state_bits"


def _mark_state(state: Tensor, breaks: list[float], mask_bits: int) -> Tensor:
    if breaks:
        setattr(state, STATE_BITS, 1 if mask_bits >= 0 else len(breaks).bit_length())
    return state


def select(device: str, dtype: torch.dtype, is_dense: bool, n_breaks: int = 0) -> Backend:
    """The first backend that runs on ``device`` with ``dtype``, the layout, and ``n_breaks`` breakpoints."""
    for b in BACKENDS:
        if ((not b.devices or device in b.devices) and n_breaks <= b.max_breaks and b.available()
                and b.accepts(dtype, is_dense)):
            return b
    return reference.BACKEND


def backend_for(x: Tensor, n_breaks: int = 0) -> Backend:
    """The backend :func:`quantize_fwd` uses for ``x`` (with ``n_breaks`` breakpoints)."""
    return select(x.device.type, x.dtype, dense(x), n_breaks)


def backend(x: Tensor) -> str:
    """The name of the backend :func:`quantize_fwd` uses for ``x``: ``"cpp"``, ``"triton"`` or ``"reference"``."""
    return backend_for(x).name


def _nan_error() -> ValueError:
    return ValueError("x contains NaN; a quantizer cannot place NaN on a level (a diverged run upstream?)")


def _forward(x: Tensor, alpha: float, levels: int, mode: int, breaks: list[float], mask_bits: int,
             check_nan: bool) -> tuple[Tensor, Tensor]:
    b = backend_for(x, len(breaks))
    if check_nan and not b.finds_nan and bool(x.isnan().any()):
        raise _nan_error()
    y, state, nan = b.forward(x, alpha, levels, mode, breaks, mask_bits)
    if check_nan and nan:
        raise _nan_error()
    return y, state


@torch.library.custom_op("stelab::quantize", mutates_args=())
def quantize_fwd(x: Tensor, alpha: float, levels: int, mode: int, breaks: list[float], mask_bits: int,
                 values: list[float], check_nan: bool) -> tuple[Tensor, Tensor]:
    """``(y, state)`` for a fixed resolution; ``values`` is used by the backward only (see module docstring)."""
    return _forward(x, alpha, levels, mode, breaks, mask_bits, check_nan)


def _state_like(x: Tensor, breaks: list[float]) -> Tensor:
    if not breaks:
        return torch.empty(0, dtype=torch.uint8, device=x.device)
    return torch.empty_like(x, dtype=torch.uint8)


@quantize_fwd.register_fake
def _(x, alpha, levels, mode, breaks, mask_bits, values, check_nan):
    return torch.empty_like(x), _state_like(x, breaks)


@torch.library.custom_op("stelab::ste_backward", mutates_args=())
def ste_backward(grad: Tensor, state: Tensor, values: list[float]) -> Tensor:
    """``dx = grad * values[state]``, computed in float32 (float64 for float64) and rounded to ``grad``'s dtype.

    ``dx`` always has the state's (that is, the input's) layout, whatever layout ``grad`` arrives in: every kernel
    and the fake implementation agree on it, as ``torch.compile`` requires."""
    return _backward_kernel(grad, state, values)


def _dx_like(grad: Tensor, state: Tensor) -> Tensor:
    return torch.empty_like(state, dtype=grad.dtype)


def _in_state_layout(dx: Tensor, state: Tensor) -> Tensor:
    return dx if dx.stride() == state.stride() else _dx_like(dx, state).copy_(dx)


def _grad_in_state_layout(grad: Tensor, state: Tensor) -> Tensor:
    """The gradient can arrive in another layout than the input had (oneDNN's convolution backward returns NCHW
    gradients in a channels_last model). dx goes back in the input's layout, as relu's does: the batch norm before
    the activation runs its backward several times slower on mixed layouts than this one copy costs."""
    return grad if grad.stride() == state.stride() else _dx_like(grad, state).copy_(grad)


def _backward_kernel(grad: Tensor, state: Tensor, values: list[float]) -> Tensor:
    b = select(state.device.type, grad.dtype, dense(state), len(values) - 1)
    if b.needs_state_layout:
        grad = _grad_in_state_layout(grad, state)
    return _in_state_layout(b.backward(grad, state, values), state)


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


def _constant_backward(grad: Tensor, values: list[float], layout: tuple | None) -> Tensor:
    """``grad * values[0]`` in the input's layout ``(shape, stride)`` (see :func:`_grad_in_state_layout` for why)."""
    if layout is not None and grad.stride() != layout[1] and grad.shape == layout[0]:
        return torch.empty_strided(*layout, dtype=grad.dtype, device=grad.device).copy_(grad).mul_(values[0])
    return grad if values[0] == 1.0 else grad * values[0]


def _layout(x: Tensor) -> tuple | None:
    return (x.shape, x.stride()) if dense(x) else None


class _Eager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, levels, mode, breaks, mask_bits, values, check_nan):
        y, state = _forward(x, alpha, levels, mode, breaks, mask_bits, check_nan)
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
            gx = _backward_kernel(grad, state, ctx.values)
        return gx, None, None, None, None, None, None, None


def quantize(x: Tensor, alpha: float, levels: int, mode: int, breaks: list[float], mask_bits: int,
             values: list[float], check_nan: bool) -> Tensor:
    """``y`` of ``stelab::quantize`` with its STE backward; the state is made only when a gradient will need it."""
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor:
        return quantize_fwd(x, alpha, levels, mode, breaks, mask_bits, values, check_nan)[0]
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _forward(x, alpha, levels, mode, [], -1, check_nan)[0]
    return _Eager.apply(x, alpha, levels, mode, breaks, mask_bits, values, check_nan)
