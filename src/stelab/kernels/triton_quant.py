"""The Triton kernel of ``stelab::quantize`` for CUDA tensors: the same math as :mod:`stelab.kernels.reference`.

Division is ``div_rn`` (IEEE round to nearest): Triton's ``/`` on float32 is an approximate division on CUDA, which
would move inputs near a step to the wrong level. Without a GPU the kernels run on CPU tensors under the Triton
interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which is how the test suite checks them.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from .reference import compute_dtype

BLOCK = 1024
MAX_BREAKS = 4


@functools.cache
def available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


@functools.cache
def _kernels():
    from . import _triton_kernels

    return _triton_kernels.fwd, _triton_kernels.bwd, _triton_kernels.learned_bwd, _triton_kernels.learned_state_bwd


def supports(breaks: list[float], values: list[float]) -> bool:
    return len(breaks) <= MAX_BREAKS and len(values) <= MAX_BREAKS + 1


def forward(x: Tensor, alpha: float | Tensor, levels: int, mode: int, breaks: list[float],
            mask_bits: int) -> tuple[Tensor, Tensor]:
    """``(y, state)`` for a dense ``x`` (CUDA, or CPU under the interpreter). ``alpha`` may be a device tensor (a
    learned resolution): the kernel's parameters are then computed on the device, with no host read."""
    from .reference import forward as reference_forward
    from .reference import top_level

    if not supports(breaks, [0.0]):
        return reference_forward(x, alpha, levels, mode, breaks, mask_bits)
    fwd = _kernels()[0]
    c = compute_dtype(x.dtype)
    if isinstance(alpha, Tensor):
        params = _device_params(alpha, float(levels), mode, breaks, c, x.device, [float(levels)])
    else:
        top = top_level(alpha, levels, mode, c)
        pad = [torch.zeros((), dtype=c)] * (MAX_BREAKS - len(breaks))
        thresholds = [torch.tensor(b, dtype=c) * top for b in breaks] + pad
        params = torch.stack([torch.tensor(alpha, dtype=c), torch.tensor(float(levels), dtype=c),
                              *thresholds]).to(x.device)
    y = torch.empty_like(x)
    state = torch.empty_like(x, dtype=torch.uint8) if breaks else torch.empty(1, dtype=torch.uint8, device=x.device)
    n = x.numel()
    if n:
        fwd[(triton_cdiv(n, BLOCK),)](x, y, state, params, n, max(mask_bits, 0), MODE=mode, NB=len(breaks),
                                      MASK=mask_bits >= 0 and len(breaks) > 1, F64=c == torch.float64, BLOCK=BLOCK)
    return y, state if breaks else state[:0]


def backward(grad: Tensor, state: Tensor, values: list[float]) -> Tensor:
    from .reference import backward as reference_backward

    if not supports([], values):
        return reference_backward(grad, state, values)
    bwd = _kernels()[1]
    c = compute_dtype(grad.dtype)
    table = torch.tensor(values, dtype=c, device=grad.device)
    out = torch.empty_like(grad)
    n = grad.numel()
    if n:
        bwd[(triton_cdiv(n, BLOCK),)](grad, state, out, table, n, BLOCK=BLOCK)
    return out


RULES = {"mean": 0, "ae": 1, "pact": 2, "min": 3, "lsq": 4}


def learned_backward(x: Tensor, grad: Tensor, dx: Tensor, alpha: float | Tensor, levels: int, bits: int, mode: int,
                     breaks: list[float], values: list[float], rule: str, lsq_scale: float) -> Tensor:
    """Fill ``dx`` (``grad * mu'(x)``) and return ``d alpha`` (``sum grad * dq/dalpha`` by ``rule``) for dense ``x``,
    ``grad`` and ``dx`` of one layout, in one pass: per-block partial sums, added on the device (float64), so
    nothing is read on the host. ``alpha`` may be a device tensor (a learned resolution: no sync to read it)."""
    c = compute_dtype(x.dtype)
    params = _device_params(alpha, float(levels), mode, breaks, c, x.device,
                            [float(levels), None, float(1 << (bits - 1)), lsq_scale])
    table = torch.tensor(values, dtype=c).to(x.device)
    n = x.numel()
    blocks = max(1, triton_cdiv(n, BLOCK))
    partial = torch.zeros(blocks, dtype=c, device=x.device)
    if n:
        kernel = _kernels()[2]
        kernel[(blocks,)](x, grad, dx, partial, params, table, n, MODE=mode, RULE=RULES[rule], NB=len(breaks),
                          F64=c == torch.float64, BLOCK=BLOCK)
    return partial.sum(dtype=torch.float64)


def _device_params(alpha: float | Tensor, levels: float, mode: int, breaks: list[float], c: torch.dtype,
                   device: torch.device, consts: list[float | None]) -> Tensor:
    """``[alpha, *consts, thresholds (MAX_BREAKS)]`` on ``device`` in ``c``, a ``None`` in ``consts`` standing for
    top (``L alpha``, or ``alpha`` for sign); the thresholds are ``top * b`` (the C++ kernel's rounding)."""
    from .reference import SIGN

    a = (alpha.detach().reshape(()).to(device=device, dtype=c) if isinstance(alpha, Tensor)
         else torch.tensor(alpha, dtype=c, device=device))
    top = a if mode == SIGN else a * levels
    known = torch.tensor([0.0 if v is None else v for v in consts], dtype=c).to(device)
    thresholds = [top * torch.tensor(b, dtype=c, device=device) for b in breaks]
    thresholds += [torch.zeros((), dtype=c, device=device)] * (MAX_BREAKS - len(breaks))
    return torch.stack([a, *(top if v is None else known[i] for i, v in enumerate(consts)), *thresholds])


def learned_state_backward(grad: Tensor, state: Tensor, dx: Tensor, values: list[float],
                           factors: list[float]) -> Tensor:
    """Fill ``dx`` (``grad * values[state]``) and return ``d alpha`` (``sum grad * factors[state]``, per-block partial
    sums added on the device in float64: no host read) for dense ``grad``, ``state`` and ``dx`` of one layout."""
    c = compute_dtype(grad.dtype)
    v = torch.tensor(values, dtype=c).to(grad.device)
    f = torch.tensor(factors, dtype=c).to(grad.device)
    n = grad.numel()
    blocks = max(1, triton_cdiv(n, BLOCK))
    partial = torch.zeros(blocks, dtype=c, device=grad.device)
    if n:
        _kernels()[3][(blocks,)](grad, state, dx, partial, v, f, n, BLOCK=BLOCK)
    return partial.sum(dtype=torch.float64)


def triton_cdiv(n: int, block: int) -> int:
    return (n + block - 1) // block


class _Triton:
    """This kernel as a backend (:mod:`stelab.kernels.backend`): dense CUDA tensors (CPU ones too under the
    interpreter, which the tests use)."""

    name = "triton"
    max_breaks = MAX_BREAKS
    finds_nan = False
    needs_state_layout = True
    learned_backward = staticmethod(learned_backward)
    learned_state_backward = staticmethod(learned_state_backward)

    @property
    def devices(self) -> tuple[str, ...]:
        return ("cuda", "cpu") if interpreted() else ("cuda",)

    def available(self) -> bool:
        return available()

    def accepts(self, dtype: torch.dtype, dense: bool) -> bool:
        return dense and dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)

    def forward(self, x: Tensor, alpha: float | Tensor, levels: int, mode: int, breaks: list[float],
                mask_bits: int) -> tuple[Tensor, Tensor, bool | None]:
        return (*forward(x, alpha, levels, mode, breaks, mask_bits), None)

    def backward(self, grad: Tensor, state: Tensor, values: list[float]) -> Tensor:
        return backward(grad, state, values)


BACKEND = _Triton()
