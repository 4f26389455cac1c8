r"""Forward quantizers: the activation functions themselves, as pure functions of ``(x, bits, alpha)``.

With ``L = 2**bits - 1`` levels above zero and resolution ``alpha > 0``:

* ``staircase`` (Yin et al. 2019 and their code): :math:`q(x) = 0` for :math:`x \le 0`, :math:`k\alpha` for
  :math:`(k-1)\alpha < x \le k\alpha` (:math:`k = 1..L`), :math:`L\alpha` for :math:`x > L\alpha`; i.e.
  :math:`\alpha\,\mathrm{clamp}(\lceil x/\alpha \rceil, 0, L)`. One bit is the binarized ReLU :math:`\alpha 1\{x>0\}`.
  Thresholds :math:`t_k = k\alpha`, :math:`k = 0..L-1`.
* ``round`` (HWGQ's half-wave convention): :math:`\alpha\,\mathrm{clamp}(\mathrm{round}(x/\alpha), 0, L)`; a tie
  :math:`x = (k + \tfrac12)\alpha` rounds down. Thresholds :math:`t_k = (k + \tfrac12)\alpha`.
* ``sign`` (binary networks, ``bits = 1`` only): :math:`+\alpha` for :math:`x > 0`, :math:`-\alpha` for :math:`x \le 0`.

In every case :math:`q(x) = \mathrm{level}[\#\{k : t_k < x\}]`: a threshold belongs to the step below it.
The derivative of every forward is zero almost everywhere; the backward pass is the STE's business
(:mod:`stelab.ste`, :mod:`stelab.activations.ops`).

**Arithmetic.** The formula is evaluated as written, each operation correctly rounded in the input's compute type
(float32 for float32/bfloat16/float16 inputs, float64 for float64), with ``alpha`` as the user gave it rounded to that
type: ``x = k * alpha`` computed in that type lands exactly on level ``k``. An integer or fixed-point implementation
with the same ``alpha`` gives the same levels. Bfloat16/float16 outputs are the float32 levels rounded once.
:func:`grid_alpha` is an explicit option for users who want every level and threshold to be one exact number in every
float type (``alpha`` rounded to ``23 - bits`` significant bits); nothing applies it silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import kernels
from ..errors import check_alpha, check_bits, unknown_name
from ..kernels import reference
from .lloyd import lloyd_alpha

_ALPHA_RANGE = (2.0**-100, 2.0**100)


def grid_alpha(alpha: float | Tensor, bits: int) -> float | Tensor:
    """``alpha`` rounded (to nearest) to ``23 - bits`` significant bits, so ``k * alpha`` and ``(k + 1/2) * alpha``
    are exact float32 numbers for every ``0 <= k <= 2**bits - 1``. Idempotent; works on floats and tensors."""
    digits = 23 - bits
    if not isinstance(alpha, Tensor) and not _ALPHA_RANGE[0] <= alpha <= _ALPHA_RANGE[1]:
        raise ValueError(f"alpha must be in [2**-100, 2**100] so every level is a normal float32, got {alpha!r}")
    if isinstance(alpha, Tensor):
        mantissa, exponent = torch.frexp(alpha.detach().double())
        return torch.ldexp(torch.round(torch.ldexp(mantissa, torch.tensor(digits))), exponent - digits)
    mantissa, exponent = math.frexp(alpha)
    return math.ldexp(round(math.ldexp(mantissa, digits)), exponent - digits)


@dataclass(frozen=True)
class ForwardQuantizer:
    """A registered staircase family, as data: which of the kernels' formulas it evaluates (``formula``: a key of
    :data:`stelab.kernels.reference.MODES`: ``staircase``, ``round`` or ``sign``), up to how many bits, and its
    default resolution. Where it steps (``thresholds``) and to what (``levels``) follow from the formula.

    ``levels`` and ``thresholds`` are float64 descriptions (plots, theory); the evaluation is :func:`evaluate`.
    """

    name: str
    max_bits: int
    doc: str
    formula: str = "staircase"
    default_resolution: Callable[[int], float] = lloyd_alpha

    def __reduce__(self):
        # copies and pickles (deepcopy of a model, torch.save) go by name: default_resolution may be a lambda
        return get, (self.name,)

    @property
    def signed(self) -> bool:
        """Two levels ``-alpha, +alpha`` (the sign formula) instead of ``0, alpha, ..., L alpha``."""
        return self.formula == "sign"

    @property
    def threshold_offset(self) -> float:
        """Thresholds sit at ``(k + offset) alpha``: 0 for the staircase (ceil), 1/2 for round."""
        return 0.5 if self.formula == "round" else 0.0

    def check_bits(self, bits: int) -> int:
        check_bits(bits)
        if bits > self.max_bits:
            raise ValueError(f"forward {self.name!r} supports bits 1..{self.max_bits}, got {bits}")
        return bits

    def resolution(self, bits: int, alpha: float | Tensor) -> float | Tensor:
        """The resolution used: ``alpha`` itself (kept for symmetry with :func:`grid_alpha`, which is opt-in)."""
        return alpha

    def levels(self, bits: int, alpha: float | Tensor) -> Tensor:
        """Output values, lowest first (``L + 1`` of them; two for a signed one), float64."""
        a = self.resolution(bits, alpha)
        if self.signed:
            a = torch.as_tensor(a, dtype=torch.float64)
            return torch.stack([-a, a])
        return torch.arange(2**bits, dtype=torch.float64) * a

    def thresholds(self, bits: int, alpha: float | Tensor) -> Tensor:
        """``x`` moves up one level each time it exceeds a threshold (``len(levels) - 1`` of them), float64."""
        if self.signed:
            return torch.zeros(1, dtype=torch.float64)
        k = torch.arange(2**bits - 1, dtype=torch.float64)
        return (k + self.threshold_offset) * self.resolution(bits, alpha)

    def top(self, bits: int, alpha: float | Tensor) -> float | Tensor:
        """The clip level an STE sees: ``L * alpha`` (``alpha`` for a signed one)."""
        a = self.resolution(bits, alpha)
        return a if self.signed else (2**bits - 1) * a

    def default_alpha(self, bits: int) -> float:
        """The resolution when none is given (Lloyd's half-Gaussian one for the ReLU staircases; 1 for sign)."""
        return self.default_resolution(bits)

    def __call__(self, x: Tensor, bits: int, alpha: float | Tensor | None = None) -> Tensor:
        """The quantized values (no gradient semantics; see :func:`stelab.quantize` for training)."""
        self.check_bits(bits)
        alpha = self.default_alpha(bits) if alpha is None else alpha
        if not isinstance(alpha, Tensor):
            check_alpha(alpha)
        return evaluate(x, self.name, bits, alpha)


def evaluate(x: Tensor, forward: str, bits: int, a: float | Tensor, check_nan: bool = False) -> Tensor:
    """``q(x)`` for a resolution ``a`` (a float, or a 0-d tensor for a learned one); NaN in, NaN out.

    A float ``a`` runs the fused operator (:mod:`stelab.kernels`; forward only, no state); a tensor one the same formula
    in PyTorch (:func:`stelab.kernels.reference.forward`). ``check_nan`` raises on NaN input instead.
    """
    mode = reference.MODES[get(forward).formula]
    if isinstance(a, Tensor):
        if check_nan and bool(x.isnan().any()):
            raise ValueError("x contains NaN; a quantizer cannot place NaN on a level (a diverged run upstream?)")
        return reference.forward(x, a, 2**bits - 1, mode, [], -1)[0]
    with torch.no_grad():
        return kernels.quantize(x, float(a), 2**bits - 1, mode, [], -1, [1.0], check_nan)


def level_index(x: Tensor, forward: str, bits: int, a: Tensor) -> Tensor:
    """The level index ``k`` (``q(x) = k a``; ``+-1`` for sign) as ``x``'s dtype, from the same formula as ``q``."""
    return reference.level_index(x, a, 2**bits - 1, reference.MODES[get(forward).formula])


_FORWARDS: dict[str, ForwardQuantizer] = {}


def register(name: str, *, formula: str = "staircase", max_bits: int = 16, doc: str = "",
             default_alpha: Callable[[int], float] = lloyd_alpha, overwrite: bool = False) -> ForwardQuantizer:
    """Register a forward quantizer: ``formula`` is the kernels' formula it evaluates (``staircase``, ``round`` or
    ``sign``; the fused op, the export and the integer reference know these three), ``max_bits`` its widest
    bit-width, ``default_alpha(bits)`` its resolution when none is given. It is then a valid ``QuantConfig.forward``
    and ``--forward`` in every command, and appears in ``stelab info`` and the docs gallery. A name already taken is
    an error unless ``overwrite``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a forward quantizer's name must be an identifier, got {name!r}")
    if name in _FORWARDS and not overwrite:
        raise ValueError(f"forward quantizer {name!r} is already registered; pass overwrite=True to replace it")
    if formula not in reference.MODES:
        raise unknown_name("formula", formula, reference.MODES)
    check_bits(max_bits)
    if formula == "sign" and max_bits != 1:
        raise ValueError(f"the sign formula has one bit, so max_bits must be 1, got {max_bits}")
    _FORWARDS[name] = ForwardQuantizer(name, max_bits, doc, formula, default_alpha)
    return _FORWARDS[name]


def unregister(name: str) -> None:
    """Remove a registered forward quantizer (built-ins included; for tests and overrides)."""
    get(name)
    del _FORWARDS[name]


# The backward of every forward is the STE's (q' = 0 almost everywhere), so each doc states the forward only.
register("staircase", doc="q(x) = alpha * clamp(ceil(x / alpha), 0, L); q' = 0 a.e.")
register("round", formula="round", doc="q(x) = alpha * clamp(round(x / alpha), 0, L), ties down; q' = 0 a.e.")
register("sign", formula="sign", max_bits=1, default_alpha=lambda bits: 1.0,
         doc="q(x) = alpha if x > 0 else -alpha; q' = 0 a.e.")


def names() -> list[str]:
    return sorted(_FORWARDS)


def get(name: str | ForwardQuantizer) -> ForwardQuantizer:
    if isinstance(name, ForwardQuantizer):
        return name
    if name not in _FORWARDS:
        raise unknown_name("forward quantizer", name, _FORWARDS)
    return _FORWARDS[name]


def staircase(x: Tensor, bits: int = 2, alpha: float | None = None) -> Tensor:
    """The staircase of Yin et al. 2019, :math:`\\alpha\\,\\mathrm{clamp}(\\lceil x/\\alpha \\rceil, 0, L)` (forward
    only; ``alpha=None`` is Lloyd's resolution)."""
    return _FORWARDS["staircase"](x, bits, alpha)
