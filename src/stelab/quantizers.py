r"""Forward quantizers: the activation functions themselves, as pure functions of ``(x, bits, alpha)``.

With ``L = 2**bits - 1`` levels above zero and resolution ``alpha > 0``:

* ``staircase`` (Yin et al. 2019 and their code): :math:`q(x) = 0` for :math:`x \le 0`, :math:`k\alpha` for
  :math:`(k-1)\alpha < x \le k\alpha` (:math:`k = 1..L`), :math:`L\alpha` for :math:`x > L\alpha`; i.e.
  :math:`\alpha\,\mathrm{clamp}(\lceil x/\alpha \rceil, 0, L)`. One bit is the binarized ReLU :math:`\alpha 1\{x>0\}`.
* ``round`` (HWGQ's half-wave convention): :math:`\alpha\,\mathrm{clamp}(\mathrm{round}(x/\alpha), 0, L)`; a tie
  :math:`x = (k - \tfrac12)\alpha` rounds down.
* ``sign`` (binary networks, ``bits = 1`` only): :math:`+\alpha` for :math:`x > 0`, :math:`-\alpha` for :math:`x \le 0`.

All three are evaluated the same way: the level index is the number of thresholds strictly below ``x``
(``torch.bucketize``), and the output is that level. Thresholds and levels are the floating-point numbers
``fl(k * alpha)``, so ``q(k * alpha) == k * alpha`` exactly, at every boundary, in every dtype; computing
``ceil(x / alpha)`` instead would send ``x = fl(3 * 0.1)`` to level 4. The derivative of every forward is zero almost
everywhere; the backward pass is the STE's business (:mod:`stelab.ste`, :mod:`stelab.ops`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import check_alpha, check_bits, unknown_name
from .lloyd import lloyd_alpha


@dataclass(frozen=True)
class ForwardQuantizer:
    """A staircase family: where it steps (``thresholds``) and to what (``levels``), for a bit-width and resolution."""

    name: str
    max_bits: int
    doc: str

    def check_bits(self, bits: int) -> int:
        check_bits(bits)
        if bits > self.max_bits:
            raise ValueError(f"forward {self.name!r} supports bits 1..{self.max_bits}, got {bits}")
        return bits

    def levels(self, bits: int, alpha: float | Tensor) -> Tensor:
        """Output values, lowest first (``L + 1`` of them; two for ``sign``)."""
        if self.name == "sign":
            return torch.stack([-torch.as_tensor(alpha), torch.as_tensor(alpha)]).to(_dtype(alpha))
        return torch.arange(2**bits, dtype=_dtype(alpha)) * alpha

    def thresholds(self, bits: int, alpha: float | Tensor) -> Tensor:
        """``x`` moves up one level each time it exceeds a threshold (``len(levels) - 1`` of them)."""
        k = torch.arange(2**bits - 1, dtype=_dtype(alpha))
        if self.name == "staircase":
            return k * alpha
        if self.name == "round":
            return (k + 0.5) * alpha
        return torch.zeros(1, dtype=_dtype(alpha))

    def top(self, bits: int, alpha: float | Tensor) -> float | Tensor:
        """The clip level an STE sees: ``L * alpha`` (``alpha`` for sign)."""
        return alpha if self.name == "sign" else (2**bits - 1) * alpha

    def default_alpha(self, bits: int) -> float:
        """Lloyd's half-Gaussian resolution for the ReLU staircases; 1 for sign."""
        return 1.0 if self.name == "sign" else lloyd_alpha(bits)

    def __call__(self, x: Tensor, bits: int, alpha: float | Tensor | None = None) -> Tensor:
        """The quantized values (no gradient semantics; see :func:`stelab.quantize` for training)."""
        alpha = self.default_alpha(bits) if alpha is None else alpha
        return apply_forward(x, self.thresholds(bits, alpha), self.levels(bits, alpha))


def _dtype(alpha: float | Tensor) -> torch.dtype:
    return alpha.dtype if isinstance(alpha, Tensor) else torch.float64


def apply_forward(x: Tensor, thresholds: Tensor, levels: Tensor) -> Tensor:
    """``levels[#{t in thresholds : t < x}]`` elementwise, in ``x``'s dtype."""
    thresholds = thresholds.to(device=x.device, dtype=x.dtype)
    levels = levels.to(device=x.device, dtype=x.dtype)
    if thresholds.numel() == 1:  # one threshold (binary): a select is cheaper than a search
        return torch.where(x > thresholds[0], levels[1], levels[0])
    code = torch.bucketize(x, thresholds, out_int32=True, right=False)
    return levels[code]


_FORWARDS: dict[str, ForwardQuantizer] = {
    "staircase": ForwardQuantizer("staircase", 16, "alpha * clamp(ceil(x / alpha), 0, L)"),
    "round": ForwardQuantizer("round", 16, "alpha * clamp(round(x / alpha), 0, L), ties down"),
    "sign": ForwardQuantizer("sign", 1, "alpha * (+1 if x > 0 else -1)"),
}


def names() -> list[str]:
    return sorted(_FORWARDS)


def get(name: str | ForwardQuantizer) -> ForwardQuantizer:
    if isinstance(name, ForwardQuantizer):
        return name
    if name not in _FORWARDS:
        raise unknown_name("forward quantizer", name, _FORWARDS)
    return _FORWARDS[name]


def staircase(x: Tensor, bits: int = 2, alpha: float | None = None) -> Tensor:
    """The staircase of Yin et al. 2019 (forward only)."""
    return _FORWARDS["staircase"](x, bits, alpha if alpha is None else check_alpha(alpha))
