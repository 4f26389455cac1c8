r"""Weight quantizers: forward maps :math:`Q(w) = s\,k(w)` from float weights to a few levels, as a registry.

A weight quantizer writes every weight as a scale :math:`s > 0` times an integer code :math:`k`. The scale is one
number per tensor (``granularity="tensor"``) or one per output channel (``"channel"``: dim 0 of a conv or linear
weight, i.e. :math:`w_{c,\cdot}`; the statistics below are then taken over each channel's elements). The registered
quantizers (``names()``):

* ``binary`` (1 bit; BinaryConnect/BWN/XNOR-Net style): :math:`k = +1` for :math:`w > 0` and :math:`-1` for
  :math:`w \le 0`, so a tie at 0 goes to :math:`-s` (the convention of stelab's activation ``sign``: a threshold
  belongs to the step below it). Data scale (rule ``mean``, the XNOR-Net/BWN scale): :math:`s = \mathrm{mean}|w|`,
  which is the least-squares optimal scale for the fixed signs.
* ``ternary`` (stored in 2 bits; TWN, Ternary Weight Networks, 2016): threshold
  :math:`\Delta = 0.7\,\mathrm{mean}|w|` and :math:`k = \mathrm{sign}(w)\,1\{|w| > \Delta\}` (a tie
  :math:`|w| = \Delta` goes to 0, the step below in magnitude).
  Data scale (rule ``mean``): :math:`s = \mathrm{mean}\{|w| : |w| > \Delta\}` (1 if no weight exceeds
  :math:`\Delta`, i.e. an all-zero tensor, whose codes are then all 0). The constants 0.7 and "mean of what is kept"
  are TWN's (as commonly stated); the threshold is always taken from the data, whatever the scale rule.
* ``uniform`` (b bits, :math:`2 \le b \le 16`, symmetric): :math:`k = \mathrm{clamp}(\mathrm{rnd}(w/s), -Q_P, Q_P)`
  with :math:`Q_P = 2^{b-1} - 1` and :math:`\mathrm{rnd}(u) = \mathrm{sign}(u)\lceil |u| - \tfrac12 \rceil`: round
  to nearest, a tie :math:`|u| = j + \tfrac12` going toward zero (the step below in magnitude, like ternary).
  The code range is *restricted*: :math:`-2^{b-1}` is not used, so :math:`Q(-w) = -Q(w)` exactly, zero is a level,
  and one clip level :math:`\mathrm{top} = Q_P s` serves both signs (what a symmetric STE such as hardtanh needs).
  The cost is one of the :math:`2^b` codes; at :math:`b = 2` the levels are the ternary ones with threshold
  :math:`s/2`. Data scales: rule ``max``, :math:`s = \max|w| / Q_P` (no weight is clipped); rule ``lsq``'s
  initial step :math:`s_0 = 2\,\mathrm{mean}|w| / \sqrt{Q_P}` (:mod:`stelab.quant.lsq`).

* ``midrise`` (b bits, :math:`2 \le b \le 8`, symmetric, no zero level: the grid of DoReFa-Net's k-bit weights,
  :math:`2\,\mathrm{round}((2^k - 1) r)/(2^k - 1) - 1`, i.e. :math:`\{-1, -\tfrac13, \tfrac13, 1\}` at 2 bits,
  as a public implementation writes it (zzzxxxttt/pytorch_DoReFaNet, ``utils/quant_dorefa.py``; stelab uses the
  grid, not its tanh normalisation), here with integer codes): :math:`k` is the odd integer nearest
  :math:`u = w/s`, :math:`k = \mathrm{clamp}(2\lceil u/2 \rceil - 1, -Q_P, Q_P)` with :math:`Q_P = 2^b - 1`, so
  the :math:`2^b` levels :math:`s\,\{-Q_P, \dots, -1, 1, \dots, Q_P\}` are equally spaced :math:`2s` apart
  and all :math:`2^b` codes are used (``uniform`` leaves one unused and, at 2 bits, is ternary). A tie, :math:`u` an
  even integer, goes to the step below (at :math:`u = 0` to :math:`-s`: binary's convention; midrise at 1 bit
  would be binary), so :math:`Q(-w) = -Q(w)` except at the ties. Data scales: rule ``max``,
  :math:`s = \max|w| / Q_P`; rule ``lsq``'s initial step :math:`\mathrm{mean}|w|/\sqrt{Q_P}`, so that the
  level spacing :math:`2s` is LSQ's formula :math:`2\,\mathrm{mean}|w|/\sqrt{Q_P}` (stelab's choice: it starts
  near the least-squares step on a trained ResNet-20, and :math:`s` at LSQ's formula twice too coarse). Stored in
  :math:`b` bits (``storage_bits``: the code :math:`(k + Q_P)/2`); a QDQ export keeps the odd codes, in the signed
  type that holds :math:`\pm Q_P` (int4 at 2 bits).

Codes are computed in float32 for float16/bfloat16 weights (in the weight's dtype otherwise), with the scale
rounded to the weight's dtype: ``w / s`` in bfloat16 would itself round (8 significant bits), and 10 % of 8-bit
codes of trained bfloat16 weights then differed from the exact rounding of the same ``w`` and ``s``; ``Q(w) = s k``
is rounded to the weight's dtype once, at the end. A data scale is floored at :data:`MIN_SCALE` (or the dtype's
smallest normal number, if larger), so an all-zero channel gives zero codes (uniform, ternary) instead of a division
by zero; binary needs no floor (it does not divide): an all-zero channel has scale 0 and output 0.
Non-finite weights give NaN outputs in every quantizer (a diverged run stays visibly diverged): binary's and
uniform's statistics propagate NaN/inf by themselves, ternary's threshold :math:`\Delta` is added as
:math:`0 \cdot \Delta` to the codes for the same effect (0 when :math:`\Delta` is finite).
The backward pass is an STE (:mod:`stelab.weights.ops`); :math:`Q' = 0` almost everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import check_bits, check_choice, unknown_name
from ..quant.lsq import grad_scale
from ..quant.scales import (  # noqa: F401  (compute_dtype, channel_view, abs_max: stelab.weights.quantizers.*)
    abs_max,
    abs_mean,
    channel_view,
    compute_dtype,
    init_step,
    uniform_codes,
)
from ..ste.registry import parse_spec

GRANULARITIES = ("tensor", "channel")
#: Every scale rule a weight quantizer may accept: ``mean``/``max`` are statistics of the weights recomputed every
#: forward, ``fixed`` a number given in the config, ``lsq`` a learned step (Esser et al. 2020).
SCALE_RULES = ("mean", "max", "fixed", "lsq")
MIN_SCALE = 2.0**-100  # the smallest resolution stelab.errors.check_alpha accepts
TWN_DELTA = 0.7  # TWN's threshold factor: Delta = 0.7 * mean|w|


def ternary_threshold(w: Tensor, granularity: str, delta: float = TWN_DELTA) -> Tensor:
    """TWN's threshold :math:`\\Delta = \\delta\\,\\mathrm{mean}|w|` (per tensor or channel; :math:`\\delta` = 0.7,
    ``ternary(delta=...)`` for another)."""
    return abs_mean(w, granularity) * delta


def floored(s: Tensor, dtype: torch.dtype) -> Tensor:
    """A data scale floored at :data:`MIN_SCALE` (or ``dtype``'s smallest normal number: MIN_SCALE is 0 in float16)."""
    return s.clamp_min(max(MIN_SCALE, torch.finfo(dtype).tiny))


CodesFn = Callable[[Tensor, Tensor, int, str], Tensor]
ScaleFn = Callable[[Tensor, int, str, str], Tensor]


@dataclass(frozen=True)
class WeightQuantizer:
    """One registered weight quantizer, as data: its bit-widths, scale rules (the first is the default) and the math.

    ``codes_fn(c, s, bits, granularity)`` gives the integer codes of ``c`` (the weights in :func:`compute_dtype`) for
    the scale ``s`` (same dtype, broadcastable); ``scale_fn(w, bits, granularity, rule)`` the scale a data rule gives
    (floored by the function itself where it divides: :func:`floored`); ``code_values(bits)`` the codes in use, lowest
    first (they give the levels, :math:`Q_P` and the storage width); ``codes_follow_step``: the codes move with a
    learned step (uniform: LSQ's :math:`\\partial k/\\partial s` term), else they depend on the signs or a threshold
    only; ``tag(bits)`` names runs (``w1``, ``w2t``, ``w4``).
    """

    name: str
    min_bits: int
    max_bits: int
    rules: tuple[str, ...]
    doc: str
    codes_fn: CodesFn
    scale_fn: ScaleFn
    code_values: Callable[[int], tuple[int, ...]]
    default_bits: int
    codes_follow_step: bool = False
    tag: Callable[[int], str] = staticmethod(lambda bits: f"w{bits}")  # type: ignore[assignment]
    #: the parameters its functions take as keywords (``ternary(delta=0.5)``), their values in this instance
    params: Mapping[str, float] = dataclasses.field(default_factory=dict)
    #: how many codes apart two neighbouring levels are (midrise's odd codes: 2); the learned step's gradient scale
    #: is LSQ's for the level spacing (:meth:`step_grad_scale`)
    spacing: int = 1

    @property
    def default_rule(self) -> str:
        return self.rules[0]

    def __reduce__(self):
        # copies and pickles (deepcopy of a model, torch.save) go by name: the functions may be lambdas
        return get, (self.name,)

    def check_bits(self, bits: int) -> int:
        check_bits(bits)
        if not self.min_bits <= bits <= self.max_bits:
            span = str(self.min_bits) if self.min_bits == self.max_bits else f"{self.min_bits}..{self.max_bits}"
            raise ValueError(f"weight quantizer {self.name!r} takes bits {span}, got {bits}")
        return bits

    def check_rule(self, rule: str) -> str:
        check_choice("scale rule", rule, SCALE_RULES)
        if rule not in self.rules:
            raise ValueError(f"weight quantizer {self.name!r} does not take scale rule {rule!r}; valid choices for "
                             f"it: {', '.join(self.rules)}")
        return rule

    def q_max(self, bits: int) -> int:
        """:math:`Q_P`, the largest code (so the top level is ``q_max * s``): 1, 1, :math:`2^{b-1}-1`."""
        return max(self.code_values(bits))

    def step_grad_scale(self, n: int, bits: int) -> float:
        """The factor of a learned step's gradient, for ``n`` weights sharing the step: LSQ's
        :math:`1/\\sqrt{N Q_P}` when neighbouring codes are 1 apart. With codes :math:`m` apart (``spacing``), LSQ is
        applied to the level spacing :math:`d = m s`, whose largest code is :math:`Q_P/m`: an SGD step on :math:`d`
        with the factor :math:`1/\\sqrt{N Q_P/m}` is one on :math:`s` with :math:`1/(m^2\\sqrt{N Q_P/m})` (the
        gradient with respect to :math:`d` is :math:`1/m` that with respect to :math:`s`, and :math:`s` moves
        :math:`1/m` as far as :math:`d`). Without it a midrise step (half the spacing, codes up to 3 at 2 bits) moved
        about 7 times as fast, relative to its size, as a uniform one and turned negative in 53 steps of a ResNet-20
        run at rate 0.01."""
        m = self.spacing
        return grad_scale(n, self.q_max(bits) / m) / m**2

    def codes(self, w: Tensor, scale: Tensor | float, bits: int, granularity: str) -> Tensor:
        """The integer codes :math:`k(w)` for a scale broadcastable to ``w``, in :func:`compute_dtype` of ``w``'s
        dtype (float32 for 16-bit weights: exact for every code; the scale is first rounded to ``w``'s dtype)."""
        w = w.detach()
        c = w.to(compute_dtype(w.dtype))
        s = torch.as_tensor(scale, dtype=w.dtype, device=w.device).detach().to(c.dtype)
        return self.codes_fn(c, s, bits, granularity, **self.params)

    def data_scale(self, w: Tensor, bits: int, granularity: str, rule: str) -> Tensor:
        """The scale a data rule gives (``mean``, ``max``; ``lsq``: the initial step)."""
        self.check_rule(rule)
        if rule == "fixed":
            raise ValueError("the 'fixed' scale rule takes its scale from the config, not from the weights")
        return self.scale_fn(w, bits, granularity, rule, **self.params)

    def levels(self, bits: int, scale: float = 1.0) -> list[float]:
        """The output levels, lowest first: ``scale`` times each code."""
        self.check_bits(bits)
        return [scale * k for k in self.code_values(bits)]

    def __call__(self, w: Tensor, scale: Tensor | float, bits: int, granularity: str = "tensor") -> Tensor:
        """:math:`Q(w) = s\\,k(w)` for a given scale (no gradient; see :func:`stelab.weights.quantize_weight`)."""
        self.check_bits(bits)
        check_choice("granularity", granularity, GRANULARITIES)
        s = torch.as_tensor(scale, dtype=w.dtype, device=w.device)
        codes = self.codes(w, s, bits, granularity)
        return (s.to(codes.dtype) * codes).to(w.dtype)


def _ternary_scale(w: Tensor, granularity: str, delta: float) -> Tensor:
    """TWN's scale: the mean of :math:`|w|` over the weights above the threshold (1 where none is)."""
    a = w.detach().abs()
    kept = (a > ternary_threshold(w, granularity, delta)).to(w.dtype)
    if granularity == "tensor" or w.dim() == 0:
        total, count = (a * kept).sum(), kept.sum()
    else:
        flat_a, flat_k = (a * kept).reshape(a.shape[0], -1), kept.reshape(a.shape[0], -1)
        total, count = channel_view(flat_a.sum(1), w), channel_view(flat_k.sum(1), w)
    # + 0 * threshold: a non-finite threshold (NaN/inf weights) gives a NaN scale, not the fallback 1
    threshold = ternary_threshold(w, granularity, delta)
    return torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total)) + 0.0 * threshold


def _binary_codes(c: Tensor, s: Tensor, bits: int, granularity: str, **params: float) -> Tensor:
    return torch.where(c > 0, 1.0, -1.0).to(c.dtype)


def _binary_scale(w: Tensor, bits: int, granularity: str, rule: str, **params: float) -> Tensor:
    # mean|w| is the least-squares scale of fixed signs; a learned (lsq) binary scale starts there. No division by s,
    # so the mean rule needs no floor: an all-zero channel keeps scale 0 and outputs 0, as documented.
    s = abs_mean(w, granularity)
    return s if rule == "mean" else floored(s, w.dtype)


def _ternary_codes(c: Tensor, s: Tensor, bits: int, granularity: str, delta: float = TWN_DELTA) -> Tensor:
    delta = ternary_threshold(c, granularity, delta)
    # + 0 * delta: NaN codes for a channel whose threshold is not finite (NaN/inf weights), 0 otherwise
    return torch.sign(c) * (c.abs() > delta).to(c.dtype) + 0.0 * delta + 0.0  # + 0.0: no -0


def _ternary_scale_rule(w: Tensor, bits: int, granularity: str, rule: str, delta: float = TWN_DELTA) -> Tensor:
    return floored(_ternary_scale(w, granularity, delta), w.dtype)  # a learned ternary scale starts at TWN's mean


def _uniform_codes(c: Tensor, s: Tensor, bits: int, granularity: str, **params: float) -> Tensor:
    q = 2 ** (bits - 1) - 1
    return uniform_codes(c / s, q, q)


def _uniform_scale(w: Tensor, bits: int, granularity: str, rule: str, **params: float) -> Tensor:
    q = 2 ** (bits - 1) - 1
    s = init_step(w, q, granularity) if rule == "lsq" else abs_max(w, granularity) / q
    return floored(s, w.dtype)


def _midrise_codes(c: Tensor, s: Tensor, bits: int, granularity: str, **params: float) -> Tensor:
    q = 2**bits - 1
    return torch.clamp(2 * torch.ceil(c / s / 2) - 1, -q, q)  # the nearest odd integer, an even u going down


def _midrise_scale(w: Tensor, bits: int, granularity: str, rule: str, **params: float) -> Tensor:
    q = 2**bits - 1
    # lsq: the level spacing 2 s is LSQ's formula 2 mean|w| / sqrt(Q_P); s itself from it would start twice too
    # coarse (docs/weights.md measures both)
    s = init_step(w, q, granularity) / 2 if rule == "lsq" else abs_max(w, granularity) / q
    return floored(s, w.dtype)


_QUANTIZERS: dict[str, WeightQuantizer] = {}


def register(name: str, *, codes: CodesFn, scale: ScaleFn, code_values: Callable[[int], tuple[int, ...]],
             bits: tuple[int, int], rules: tuple[str, ...], doc: str, default_bits: int | None = None,
             codes_follow_step: bool = False, tag: Callable[[int], str] | None = None,
             params: Mapping[str, float] | None = None, spacing: int = 1, overwrite: bool = False) -> WeightQuantizer:
    """Register a weight quantizer under ``name`` (see :class:`WeightQuantizer` for the functions); it is then a valid
    ``WeightQuantConfig.quantizer`` and ``--weight-quantizer`` in every command, and appears in ``stelab info`` and
    the docs gallery. ``bits`` is the (min, max) bit-width range; ``rules`` the scale rules it takes (the first is the
    default, each one of :data:`SCALE_RULES`); ``params`` the keyword parameters ``codes`` and ``scale`` take, with
    their defaults: ``name(key=value, ...)`` then selects other values, as for STEs (``ternary(delta=0.5)``);
    ``spacing`` how many codes apart neighbouring levels are (2 for odd codes). A name already taken is an error
    unless ``overwrite``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a weight quantizer's name must be an identifier, got {name!r}")
    if name in _QUANTIZERS and not overwrite:
        raise ValueError(f"weight quantizer {name!r} is already registered; pass overwrite=True to replace it")
    lo, hi = bits
    check_bits(lo), check_bits(hi)
    for rule in rules:
        check_choice("scale rule", rule, SCALE_RULES)
    if isinstance(spacing, bool) or not isinstance(spacing, int) or spacing < 1:
        raise ValueError(f"spacing (codes between neighbouring levels) must be a positive int, got {spacing!r}")
    q = WeightQuantizer(name, lo, hi, tuple(rules), doc, codes, scale, code_values,
                        lo if default_bits is None else default_bits, codes_follow_step,
                        tag or (lambda b: f"w{b}"), dict(params or {}), spacing)
    q.check_bits(q.default_bits)
    _QUANTIZERS[name] = q
    return q


def unregister(name: str) -> None:
    """Remove a registered weight quantizer (built-ins included; for tests and overrides)."""
    get(name)
    del _QUANTIZERS[name]


register("binary", codes=_binary_codes, scale=_binary_scale, code_values=lambda b: (-1, 1), bits=(1, 1),
         rules=("mean", "fixed", "lsq"), tag=lambda b: "w1",
         doc="Q(w) = s * (+1 if w > 0 else -1); s = mean|w| (rule mean)")
register("ternary", codes=_ternary_codes, scale=_ternary_scale_rule, code_values=lambda b: (-1, 0, 1), bits=(2, 2),
         rules=("mean", "fixed", "lsq"), tag=lambda b: "w2t", params={"delta": TWN_DELTA},
         doc="Q(w) = s * sign(w) * 1{|w| > 0.7 mean|w|}; s = mean of the kept |w| (rule mean)")
register("uniform", codes=_uniform_codes, scale=_uniform_scale,
         code_values=lambda b: tuple(range(-(2 ** (b - 1) - 1), 2 ** (b - 1))), bits=(2, 16),
         rules=("max", "fixed", "lsq"), default_bits=4, codes_follow_step=True,
         doc="Q(w) = s * clamp(rnd(w/s), -Q_P, Q_P), Q_P = 2^(b-1)-1, ties toward 0; s = max|w|/Q_P (rule max)")
register("midrise", codes=_midrise_codes, scale=_midrise_scale,
         code_values=lambda b: tuple(range(-(2**b - 1), 2**b, 2)), bits=(2, 8),
         rules=("max", "fixed", "lsq"), default_bits=2, codes_follow_step=True, tag=lambda b: f"w{b}m", spacing=2,
         doc="Q(w) = s * (the odd integer nearest w/s, within +-Q_P), Q_P = 2^b-1: 2^b levels, no zero "
             "(2 bits: s * {-3, -1, 1, 3}); s = max|w|/Q_P (rule max)")


def fused_kind(q: WeightQuantizer) -> str | None:
    """``"uniform"`` or ``"midrise"`` when ``q`` computes the built-in codes of that name (which the CPU kernel
    :mod:`stelab.kernels.cpu` fuses with LSQ's step gradient), else None (a user's or re-registered quantizer)."""
    return {_uniform_codes: "uniform", _midrise_codes: "midrise"}.get(q.codes_fn)


def names() -> list[str]:
    """Registered weight quantizer names, sorted."""
    return sorted(_QUANTIZERS)


def get(name: str | WeightQuantizer) -> WeightQuantizer:
    """The weight quantizer ``name``, or ``name(key=value, ...)`` with other values of its parameters (an instance is
    returned as it is); unknown names and parameters list the valid ones. Named by its spec, all values shown, unless
    they are the defaults (``ternary``, ``ternary(delta=0.5)``)."""
    if isinstance(name, WeightQuantizer):
        return name
    if not isinstance(name, str):
        raise unknown_name("weight quantizer", name, _QUANTIZERS)
    base, given = parse_spec(name, "weight quantizer")
    if base not in _QUANTIZERS:
        raise unknown_name("weight quantizer", base, _QUANTIZERS)
    q = _QUANTIZERS[base]
    unknown = sorted(set(given) - set(q.params))
    if unknown:
        raise ValueError(f"weight quantizer {base!r} has no parameter(s) {unknown}; its parameters: "
                         f"{', '.join(q.params) or 'none'}")
    merged = {**q.params, **given}
    if merged == dict(q.params):
        return q
    label = f"{base}({', '.join(f'{k}={v!r}' for k, v in sorted(merged.items()))})"
    return dataclasses.replace(q, name=label, params=merged)


def levels(name: str, bits: int, scale: float = 1.0) -> list[float]:
    """The output levels of a quantizer, lowest first: ``[-s, s]``, ``[-s, 0, s]``, ``s * (-Q_P..Q_P)``,
    ``s * (-Q_P, -Q_P + 2, ..., Q_P)`` (midrise)."""
    return get(name).levels(bits, scale)


def accepting(bits: int) -> list[str]:
    """The registered quantizers that take ``bits`` (``stelab train --weight-bits 1`` picks the only one)."""
    return [n for n in names() if get(n).min_bits <= bits <= get(n).max_bits]


def storage_bits(name: str, bits: int) -> int:
    """Bits per weight when stored: ``bits`` (ternary's 3 levels take 2 bits; ``ceil(log2(levels))`` for all)."""
    return math.ceil(math.log2(len(levels(name, bits))))
