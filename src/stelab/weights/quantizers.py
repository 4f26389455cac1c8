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
  initial step :math:`s_0 = 2\,\mathrm{mean}|w| / \sqrt{Q_P}` (:mod:`stelab.weights.lsq`).

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

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import check_bits, check_choice, unknown_name

GRANULARITIES = ("tensor", "channel")
#: Every scale rule a weight quantizer may accept: ``mean``/``max`` are statistics of the weights recomputed every
#: forward, ``fixed`` a number given in the config, ``lsq`` a learned step (Esser et al. 2020).
SCALE_RULES = ("mean", "max", "fixed", "lsq")
MIN_SCALE = 2.0**-100  # the smallest resolution stelab.errors.check_alpha accepts
TWN_DELTA = 0.7  # TWN's threshold factor: Delta = 0.7 * mean|w|


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype codes and step gradients are computed in: float32 for the 16-bit float types, else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def channel_view(t: Tensor, like: Tensor) -> Tensor:
    """A per-channel vector (shape ``(C,)``) reshaped to broadcast against ``like`` along dim 0."""
    return t.reshape(-1, *([1] * (like.dim() - 1))) if like.dim() > 0 else t.reshape(())


def _per(w: Tensor, granularity: str, reduce: Callable[[Tensor], Tensor]) -> Tensor:
    """``reduce`` of ``|w|`` over the whole tensor (0-d) or over each output channel (broadcastable to ``w``)."""
    a = w.detach().abs()
    if granularity == "tensor" or w.dim() == 0:
        return reduce(a.reshape(1, -1)).reshape(())
    return channel_view(reduce(a.reshape(a.shape[0], -1)), w)


def abs_mean(w: Tensor, granularity: str) -> Tensor:
    """:math:`\\mathrm{mean}|w|` per tensor or per output channel."""
    return _per(w, granularity, lambda a: a.mean(dim=1))


def abs_max(w: Tensor, granularity: str) -> Tensor:
    """:math:`\\max|w|` per tensor or per output channel."""
    return _per(w, granularity, lambda a: a.amax(dim=1))


def init_step(v: Tensor, q_p: int, granularity: str = "tensor") -> Tensor:
    """LSQ's initial step :math:`2\\,\\mathrm{mean}|v| / \\sqrt{Q_P}` (per tensor, or per output channel)."""
    return abs_mean(v, granularity) * (2.0 / math.sqrt(q_p))


def ternary_threshold(w: Tensor, granularity: str) -> Tensor:
    """TWN's threshold :math:`\\Delta = 0.7\\,\\mathrm{mean}|w|` (per tensor or channel)."""
    return abs_mean(w, granularity) * TWN_DELTA


def round_half_to_zero(u: Tensor) -> Tensor:
    """:math:`\\mathrm{sign}(u)\\lceil |u| - 1/2 \\rceil`: nearest integer, ties toward zero (odd)."""
    return torch.sign(u) * torch.ceil(u.abs() - 0.5) + 0.0  # + 0.0 turns -0 (sign -1 times 0) into +0


def uniform_codes(u: Tensor, q_n: int, q_p: int) -> Tensor:
    """:math:`\\mathrm{clamp}(\\mathrm{rnd}(u), -Q_N, Q_P)` for ``u = v / s`` (the LSQ/uniform code)."""
    return torch.clamp(round_half_to_zero(u), -q_n, q_p)


@dataclass(frozen=True)
class WeightQuantizer:
    """One registered weight quantizer: its bit-widths, scale rules (the first is the default) and the math."""

    name: str
    min_bits: int
    max_bits: int
    rules: tuple[str, ...]
    doc: str

    @property
    def default_bits(self) -> int:
        return 4 if self.name == "uniform" else self.min_bits

    @property
    def default_rule(self) -> str:
        return self.rules[0]

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
        return 2 ** (bits - 1) - 1 if self.name == "uniform" else 1

    def codes(self, w: Tensor, scale: Tensor | float, bits: int, granularity: str) -> Tensor:
        """The integer codes :math:`k(w)` for a scale broadcastable to ``w``, in :func:`compute_dtype` of ``w``'s
        dtype (float32 for 16-bit weights: exact for every code; the scale is first rounded to ``w``'s dtype)."""
        w = w.detach()
        c = w.to(compute_dtype(w.dtype))
        if self.name == "binary":
            return torch.where(c > 0, 1.0, -1.0).to(c.dtype)
        if self.name == "ternary":
            delta = ternary_threshold(c, granularity)
            # + 0 * delta: NaN codes for a channel whose threshold is not finite (NaN/inf weights), 0 otherwise
            return torch.sign(c) * (c.abs() > delta).to(c.dtype) + 0.0 * delta + 0.0  # + 0.0: no -0
        q = self.q_max(bits)
        s = torch.as_tensor(scale, dtype=w.dtype, device=w.device).detach().to(c.dtype)
        return uniform_codes(c / s, q, q)

    def data_scale(self, w: Tensor, bits: int, granularity: str, rule: str) -> Tensor:
        """The scale a data rule gives (``mean``, ``max``; ``lsq``: the initial step: LSQ's for uniform, the ``mean``
        rule's for binary and ternary), floored at ``MIN_SCALE`` (or the dtype's smallest normal number)."""
        self.check_rule(rule)
        if rule == "fixed":
            raise ValueError("the 'fixed' scale rule takes its scale from the config, not from the weights")
        # A learned binary/ternary scale starts where the data rule puts it (least squares for binary, TWN's mean for
        # ternary); only uniform codes move with the step, and LSQ's initialization is for them.
        if rule == "lsq" and self.name == "uniform":
            s = init_step(w, self.q_max(bits), granularity)
        elif self.name == "ternary":
            s = _ternary_scale(w, granularity)
        elif self.name == "binary":
            s = abs_mean(w, granularity)
        else:
            s = abs_max(w, granularity) / self.q_max(bits)
        if self.name == "binary" and rule == "mean":
            return s  # no division by s: an all-zero channel keeps scale 0 and outputs 0, as documented
        # MIN_SCALE is 0 in float16; its smallest normal number is the floor there.
        return s.clamp_min(max(MIN_SCALE, torch.finfo(w.dtype).tiny))

    def __call__(self, w: Tensor, scale: Tensor | float, bits: int, granularity: str = "tensor") -> Tensor:
        """:math:`Q(w) = s\\,k(w)` for a given scale (no gradient; see :func:`stelab.weights.quantize_weight`)."""
        self.check_bits(bits)
        check_choice("granularity", granularity, GRANULARITIES)
        s = torch.as_tensor(scale, dtype=w.dtype, device=w.device)
        codes = self.codes(w, s, bits, granularity)
        return (s.to(codes.dtype) * codes).to(w.dtype)


def _ternary_scale(w: Tensor, granularity: str) -> Tensor:
    """TWN's scale: the mean of :math:`|w|` over the weights above the threshold (1 where none is)."""
    a = w.detach().abs()
    kept = (a > ternary_threshold(w, granularity)).to(w.dtype)
    if granularity == "tensor" or w.dim() == 0:
        total, count = (a * kept).sum(), kept.sum()
    else:
        flat_a, flat_k = (a * kept).reshape(a.shape[0], -1), kept.reshape(a.shape[0], -1)
        total, count = channel_view(flat_a.sum(1), w), channel_view(flat_k.sum(1), w)
    # + 0 * threshold: a non-finite threshold (NaN/inf weights) gives a NaN scale, not the fallback 1
    threshold = ternary_threshold(w, granularity)
    return torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total)) + 0.0 * threshold


_QUANTIZERS: dict[str, WeightQuantizer] = {
    "binary": WeightQuantizer("binary", 1, 1, ("mean", "fixed", "lsq"),
                              "Q(w) = s * (+1 if w > 0 else -1); s = mean|w| (rule mean)"),
    "ternary": WeightQuantizer("ternary", 2, 2, ("mean", "fixed", "lsq"),
                               "Q(w) = s * sign(w) * 1{|w| > 0.7 mean|w|}; s = mean of the kept |w| (rule mean)"),
    "uniform": WeightQuantizer("uniform", 2, 16, ("max", "fixed", "lsq"),
                               "Q(w) = s * clamp(rnd(w/s), -Q_P, Q_P), Q_P = 2^(b-1)-1, ties toward 0; "
                               "s = max|w|/Q_P (rule max)"),
}


def names() -> list[str]:
    """Registered weight quantizer names, sorted."""
    return sorted(_QUANTIZERS)


def get(name: str | WeightQuantizer) -> WeightQuantizer:
    """The weight quantizer called ``name`` (an instance is returned as it is); unknown names list the valid ones."""
    if isinstance(name, WeightQuantizer):
        return name
    if not isinstance(name, str) or name not in _QUANTIZERS:
        raise unknown_name("weight quantizer", name, _QUANTIZERS)
    return _QUANTIZERS[name]


def levels(name: str, bits: int, scale: float = 1.0) -> list[float]:
    """The output levels of a quantizer, lowest first: ``[-s, s]``, ``[-s, 0, s]``, ``s * (-Q_P..Q_P)``."""
    q = get(name)
    q.check_bits(bits)
    if q.name == "binary":
        return [-scale, scale]
    top = q.q_max(bits)
    return [scale * k for k in range(-top, top + 1)]


def storage_bits(name: str, bits: int) -> int:
    """Bits per weight when stored: ``bits`` (ternary's 3 levels take 2 bits; ``ceil(log2(levels))`` for all)."""
    return math.ceil(math.log2(len(levels(name, bits))))
