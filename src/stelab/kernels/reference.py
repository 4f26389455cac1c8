r"""The fused quantized activation in plain PyTorch: the reference every kernel is checked against, and the path
taken where no kernel applies (no compiler, other devices, non-dense tensors).

Everything is computed in the *compute type* ``c`` (float64 for float64 inputs, float32 otherwise), with
:math:`a` = ``alpha`` rounded to ``c`` and :math:`L` = ``levels``:

.. math::
    k = \mathrm{clamp}(\lceil x / a \rceil, 0, L) \ \text{(staircase)}, \qquad
    k = \mathrm{clamp}(\lceil x / a - \tfrac12 \rceil, 0, L) \ \text{(round, ties down)}, \qquad y = k\,a,

each operation correctly rounded in ``c``; ``sign``: :math:`y = a` if :math:`x > 0` else :math:`-a`. NaN gives NaN,
and the bottom level is :math:`+0`. ``y`` is rounded once to the input's dtype.

The backward state is one byte per element: the region :math:`r = \#\{j : x > t_j\}` of ``mu'``, with thresholds
:math:`t_j = b_j \cdot \mathrm{top}` (``top`` :math:`= L a`, or :math:`a` for sign; both rounded in ``c``); or, when
``mask_bits >= 0``, the bit ``(mask_bits >> r) & 1``. The backward is :math:`dx = g \cdot v_s` in ``c``.
"""

from __future__ import annotations

import torch
from torch import Tensor

STAIRCASE, ROUND, SIGN = 0, 1, 2
MODES = {"staircase": STAIRCASE, "round": ROUND, "sign": SIGN}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def top_level(alpha: float | Tensor, levels: int, mode: int, c: torch.dtype) -> Tensor:
    """``top`` (``L * a``, or ``a`` for sign) rounded in the compute type ``c``, as a 0-d tensor."""
    a = _alpha(alpha, c, torch.device("cpu"))
    return a if mode == SIGN else torch.tensor(float(levels), dtype=c) * a


def _alpha(alpha: float | Tensor, c: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(alpha, Tensor):  # a learned resolution (0-d)
        return alpha.detach().to(device=device, dtype=c)
    return torch.tensor(alpha, dtype=c, device=device)


def _index(xc: Tensor, a: Tensor, levels: int, mode: int) -> Tensor:
    """The level index k in the compute type (for sign: +-1)."""
    if mode == SIGN:
        return torch.where(xc > 0, 1.0, -1.0).to(xc.dtype)
    r = xc / a
    if mode == ROUND:
        r = r - 0.5  # exact for |r| < 2**22 in float32; beyond that k is clamped to L anyway
    k = torch.ceil(r)
    return torch.where(k > 0, k, 0.0).clamp_max_(float(levels))  # where: -0 becomes +0 (and NaN 0)


def level_index(x: Tensor, alpha: float | Tensor, levels: int, mode: int) -> Tensor:
    """``k`` with ``q(x) = k a``, as ``x``'s dtype (exact: ``k`` is a small integer)."""
    c = compute_dtype(x.dtype)
    return _index(x.to(c), _alpha(alpha, c, x.device), levels, mode).to(x.dtype)


def forward(x: Tensor, alpha: float | Tensor, levels: int, mode: int, breaks: list[float],
            mask_bits: int) -> tuple[Tensor, Tensor]:
    """``(y, state)``; ``state`` is empty when there are no breakpoints (``mu'`` constant)."""
    c = compute_dtype(x.dtype)
    xc = x.to(c)
    a = _alpha(alpha, c, x.device)
    y = _index(xc, a, levels, mode).mul_(a)
    y = torch.where(xc.isnan(), xc, y).to(x.dtype)
    return y, region_state(xc, a, levels, mode, breaks, mask_bits)


def region_state(xc: Tensor, alpha: float | Tensor, levels: int, mode: int, breaks: list[float],
                 mask_bits: int) -> Tensor:
    """The one-byte backward state of ``xc`` (already in the compute type); see the module docstring."""
    if not breaks:
        return torch.empty(0, dtype=torch.uint8, device=xc.device)
    top = top_level(alpha, levels, mode, xc.dtype).to(xc.device)
    region = torch.zeros_like(xc, dtype=torch.uint8)
    for b in breaks:
        region += xc > torch.tensor(b, dtype=xc.dtype, device=xc.device) * top
    if mask_bits >= 0:
        region = (torch.tensor(mask_bits, dtype=torch.int32, device=xc.device) >> region.int()) & 1
        region = region.to(torch.uint8)
    return region


def backward(grad: Tensor, state: Tensor, values: list[float]) -> Tensor:
    """``grad * values[state]`` in the compute type, rounded to ``grad``'s dtype."""
    c = compute_dtype(grad.dtype)
    lut = torch.tensor(values, dtype=c, device=grad.device)
    return (grad.to(c) * lut[state.long()]).to(grad.dtype)


class _Reference:
    """The reference as a backend (:mod:`stelab.kernels.backend`): every device, dtype and layout."""

    name = "reference"
    devices: tuple[str, ...] = ()  # every device
    max_breaks = 8  # the op's limit (the C++ kernel's): a fused plan has at most this many breakpoints
    finds_nan = False
    needs_state_layout = False
    learned_backward = None
    learned_state_backward = None

    def available(self) -> bool:
        return True

    def accepts(self, dtype: torch.dtype, dense: bool) -> bool:
        return True

    def forward(self, x: Tensor, alpha: float, levels: int, mode: int, breaks: list[float],
                mask_bits: int) -> tuple[Tensor, Tensor, bool | None]:
        return (*forward(x, alpha, levels, mode, breaks, mask_bits), None)

    def backward(self, grad: Tensor, state: Tensor, values: list[float]) -> Tensor:
        return backward(grad, state, values)


BACKEND = _Reference()
