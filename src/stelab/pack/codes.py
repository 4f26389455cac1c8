r"""The exact n-bit codes of a quantized activation's output, and their bit packing: the tensor functions of
:mod:`stelab.pack`.

A quantized output holds only the levels :math:`v_k = \mathrm{rnd}_d(k \cdot a)` (:math:`k = 0..L`, computed in the
compute type ``c`` of :mod:`stelab.kernels.reference` and rounded once to the output's dtype ``d``; ``sign``:
:math:`\pm a`). Storing :math:`k` in :math:`b = \lceil \log_2 (L + 1) \rceil` bits and recomputing :math:`v_k` with the
same arithmetic gives back the same bits.

**Codes from values** (:func:`codes_of`). With :math:`p` the significand bits of the narrowest float type the values
went through (24 for float32, 8 for bfloat16), a stored level :math:`v = k a (1 + \delta)`, :math:`|\delta| \le
2^{-p} + 2^{-24}` (a float32 level cast once more to bfloat16 under autocast), so :math:`v \cdot \mathrm{rnd}(1/a) +
\tfrac12` lies within :math:`L (2^{-p} + 4 \cdot 2^{-24})` of :math:`k + \tfrac12` and truncates to :math:`k` whenever
that bound is below :math:`\tfrac12`: always in float32/float64 (levels are normal numbers: ``alpha`` is in
:math:`[2^{-100}, 2^{100}]`), and in bfloat16 for :math:`L \le 127` (up to 7 bits). Otherwise (bfloat16 at 8 bits,
where neighbouring levels can round to one value; float16, which has subnormals and overflows) the code is found
exactly by ``bucketize`` against the midpoints of the distinct stored levels: it returns the first :math:`k` whose
stored level equals the value. Either way :math:`v_{\mathrm{code}(v)} = v` bit for bit; NaN (a NaN input, which
makes the loss NaN) has no code and is not preserved.

**Bit packing** (:func:`pack_codes`). Groups of :math:`g = 8 / \gcd(8, b)` codes fill :math:`g b / 8` bytes exactly
(four 2-bit codes per byte, eight 3-bit codes in three bytes): code :math:`i` of a group occupies bits
:math:`[i b, (i + 1) b)` of a little-endian word. Vectorised torch ops: three elementwise passes to pack
(one integer multiply does the shifts, :func:`pack_codes`), :math:`g` strided writes to unpack.
"""

from __future__ import annotations

import sys
from math import gcd

import torch
from torch import Tensor

from ..kernels.reference import SIGN

#: Significand bits (with the implicit one) of the float types a quantized output can have.
PRECISION = {torch.float64: 53, torch.float32: 24, torch.bfloat16: 8, torch.float16: 11}


def code_bits(levels: int, mode: int) -> int:
    """Bits of one code: 1 for sign (two levels), else those of ``levels`` (``L = 2^b - 1``)."""
    return 1 if mode == SIGN else max(1, int(levels).bit_length())


def _layout(bits: int) -> tuple[int, int]:
    """``(codes per group, bytes per group)`` for ``bits``-bit codes."""
    if sys.byteorder != "little":  # pragma: no cover - the byte views of the packing assume it (x86, ARM, CUDA)
        raise RuntimeError("stelab.pack's bit packing assumes a little-endian machine")
    g = 8 // gcd(8, bits)
    return g, g * bits // 8


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that ``n`` codes of ``bits`` bits take packed (the last group padded)."""
    g, nbytes = _layout(bits)
    return -(-n // g) * nbytes


_WORD = {2: torch.int16, 4: torch.int32, 8: torch.int64}  # g codes, one per byte, viewed as one integer


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    r"""``codes`` (uint8, one dimension, contiguous, each below ``2**bits``) packed into :func:`packed_nbytes` bytes.

    For :math:`b \in \{1, 2, 4\}` a group of :math:`g = 8/b` codes, one per byte, is read as one little-endian
    integer :math:`v = \sum_i c_i 2^{8i}`; multiplying by :math:`K = \sum_j 2^{T - (8-b) j}`, :math:`T = (8-b)(g-1)`,
    puts a copy of code :math:`i` at bit :math:`T + 8i - (8-b)j`, code :math:`i` itself (:math:`j = i`) at
    :math:`T + b i`. Two copies are :math:`|8\Delta i - (8-b)\Delta j| \ge b` bits apart for these widths (for
    3, 5, 6, 7 they are not), so their fields never overlap, the sum has no carries, and ``(v * K) >> T`` holds
    the packed group in its low byte (the product wraps modulo the word size, which keeps the bits below it):
    three elementwise ops. Other widths OR the :math:`g` shifted codes of a group into a 32- or 64-bit word.
    """
    if bits == 8:
        return codes
    g, nbytes = _layout(bits)
    pad = (-codes.numel()) % g
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    if bits in (1, 2, 4):
        shift = (8 - bits) * (g - 1)
        magic = sum(1 << (shift - (8 - bits) * j) for j in range(g))
        return (((codes.view(_WORD[g]) * magic) >> shift) & 255).to(torch.uint8)
    columns = codes.view(-1, g)
    words = torch.empty(columns.shape[0], dtype=torch.int32 if nbytes <= 4 else torch.int64, device=codes.device)
    words.copy_(columns[:, 0])  # a fresh dense word array (a 1-element column keeps its stride through .to)
    for i in range(1, g):
        words |= columns[:, i].to(words.dtype) << (bits * i)
    return words.view(torch.uint8).view(-1, words.element_size())[:, :nbytes].flatten()  # the low bytes


def unpack_codes(data: Tensor, bits: int, n: int) -> Tensor:
    """The ``n`` uint8 codes that :func:`pack_codes` packed into ``data``: code :math:`i` of a group is
    ``(word >> b i) & (2^b - 1)``, one strided write per code of the group."""
    if bits == 8:
        return data
    g, nbytes = _layout(bits)
    groups = data.numel() // nbytes
    if nbytes == 1:
        words = data
    else:  # widen each group's bytes to a 4- or 8-byte little-endian integer
        width = 4 if nbytes <= 4 else 8
        buf = torch.zeros(groups, width, dtype=torch.uint8, device=data.device)
        buf[:, :nbytes] = data.view(groups, nbytes)
        words = buf.view(torch.int32 if width == 4 else torch.int64).flatten()
    out = torch.empty(groups, g, dtype=torch.uint8, device=data.device)
    mask = (1 << bits) - 1
    for i in range(g):
        out[:, i] = (words >> (bits * i)) & mask
    return out.flatten()[:n]


def level_values(codes: Tensor, alpha: Tensor, mode: int, dtype: torch.dtype) -> Tensor:
    """The levels :math:`v_k` of ``codes`` in ``dtype``, in the forward's arithmetic: ``k * a`` in the compute type
    of ``dtype`` (``a = alpha``, a 0-d tensor of that type), rounded once to ``dtype``; sign: ``+-a``."""
    if mode == SIGN:
        values = torch.where(codes.bool(), alpha, -alpha)
    else:
        values = torch.mul(codes, alpha)  # uint8 * 0-d float: computed in the 0-d tensor's float type
    return values if values.dtype == dtype else values.to(dtype)


def round_is_exact(levels: int, dtypes: tuple[torch.dtype, ...]) -> bool:
    """Whether ``trunc(v / a + 1/2)`` recovers every code from levels stored through ``dtypes`` (module docstring)."""
    if torch.float16 in dtypes:
        return False
    p = min(PRECISION[d] for d in dtypes)
    return levels * (2.0 ** -p + 4 * 2.0 ** -24) < 0.5


def codes_of(flat: Tensor, alpha: Tensor, levels: int, mode: int, dtypes: tuple[torch.dtype, ...]) -> Tensor:
    """The uint8 codes of the levels ``flat`` (one dimension), stored through ``dtypes`` (the quantized output's dtype,
    then that of a cast of it, if any); ``alpha`` is the 0-d resolution in the output's compute type."""
    if mode == SIGN:
        return (flat > 0).to(torch.uint8)
    if round_is_exact(levels, dtypes):
        c = alpha.dtype
        inverse = torch.reciprocal(alpha).to(flat.device)
        half = torch.tensor(0.5, dtype=c, device=flat.device)
        # One fused multiply-add in the compute type; the conversion to uint8 truncates: k + 1/2 + eps -> k.
        return torch.addcmul(half, flat.to(c), inverse).to(torch.uint8)
    table = level_values(torch.arange(levels + 1, dtype=torch.uint8, device=alpha.device), alpha, mode, dtypes[0])
    for d in dtypes[1:]:
        table = table.to(d)
    wide = torch.float32 if PRECISION[flat.dtype] < 24 else torch.float64  # midpoints exact in this type
    table = table.to(wide)
    mids = ((table[:-1] + table[1:]) / 2).to(flat.device)
    return torch.bucketize(flat.to(wide), mids, out_int32=True).to(torch.uint8)
