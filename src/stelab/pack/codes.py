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
:math:`[i b, (i + 1) b)` of a little-endian word.

**Two implementations, one result.** On the CPU with the C++ kernel (:mod:`stelab.kernels.cpu`),
:func:`pack_levels` finds the codes and packs them in one pass over the values, and :func:`restore_levels` writes
``table[code]`` in one pass, the table holding the :math:`2^b` levels in the output's type computed by
:func:`level_values` (so the restore is the forward's arithmetic by construction). Elsewhere (no compiler, CUDA,
float16, bfloat16 at 8 bits) the same codes come from vectorised torch ops: :func:`codes_of`, then three
elementwise passes to pack (one integer multiply does the shifts, :func:`pack_codes`); unpacking 1-, 2- and 4-bit
codes is one ``index_select`` of a 256-entry table of byte-to-codes words, other widths take :math:`g` strided
writes. Tests check that both give the same bytes.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from math import gcd

import torch
from torch import Tensor

from ..kernels import cpu
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


@lru_cache(maxsize=16)
def _byte_table(bits: int, device: torch.device) -> Tensor:
    """For 1-, 2- and 4-bit codes: entry ``v`` is the word whose ``g`` bytes are the codes packed in byte ``v``."""
    g = 8 // bits
    rows = [[(v >> (bits * i)) & ((1 << bits) - 1) for i in range(g)] for v in range(256)]
    return torch.tensor(rows, dtype=torch.uint8).view(_WORD[g]).flatten().to(device)


def unpack_codes(data: Tensor, bits: int, n: int) -> Tensor:
    """The ``n`` uint8 codes that :func:`pack_codes` packed into ``data``: code :math:`i` of a group is
    ``(word >> b i) & (2^b - 1)``; for 1, 2 and 4 bits one table lookup per byte, else one strided write per code
    of the group."""
    if bits == 8:
        return data
    if bits in (1, 2, 4):
        return torch.index_select(_byte_table(bits, data.device), 0, data.int()).view(torch.uint8)[:n]
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


def _kernel(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in cpu.PACK_DTYPES and cpu.available()


def pack_levels(flat: Tensor, alpha: Tensor, levels: int, mode: int, dtypes: tuple[torch.dtype, ...],
                bits: int) -> Tensor:
    """The packed ``bits``-bit codes of the levels ``flat`` (one dimension, contiguous): :func:`codes_of` then
    :func:`pack_codes`, in one pass where the C++ kernel applies (module docstring)."""
    if _kernel(flat) and (mode == SIGN or round_is_exact(levels, dtypes)):
        out = torch.empty(packed_nbytes(flat.numel(), bits), dtype=torch.uint8)
        cpu.pack_codes(flat, out, float(torch.reciprocal(alpha)), bits, mode == SIGN)
        return out
    return pack_codes(codes_of(flat, alpha, levels, mode, dtypes), bits)


def restore_levels(data: Tensor, n: int, alpha: Tensor, mode: int, dtypes: tuple[torch.dtype, ...],
                   bits: int) -> Tensor:
    """The ``n`` levels packed by :func:`pack_levels`, in the last of ``dtypes``, bit for bit."""
    alpha = alpha.to(data.device)
    if data.device.type == "cpu" and cpu.available():
        table = level_values(torch.arange(1 << bits, dtype=torch.uint8), alpha, mode, dtypes[0])
        for d in dtypes[1:]:
            table = table.to(d)
        out = torch.empty(n, dtype=table.dtype)
        cpu.unpack_codes(data, out, table.contiguous(), bits)
        return out
    values = level_values(unpack_codes(data, bits, n), alpha, mode, dtypes[0])
    for d in dtypes[1:]:
        values = values.to(d)
    return values


def pack_state(flat: Tensor, bits: int) -> Tensor:
    """A uint8 STE state (one dimension, contiguous, values below ``2**bits``) packed in ``bits`` bits."""
    if _kernel(flat):
        out = torch.empty(packed_nbytes(flat.numel(), bits), dtype=torch.uint8)
        cpu.pack_codes(flat, out, 1.0, bits, False)
        return out
    return pack_codes(flat, bits)


def restore_state(data: Tensor, bits: int, n: int) -> Tensor:
    """The ``n`` state bytes packed by :func:`pack_state`."""
    if data.device.type == "cpu" and cpu.available():
        out = torch.empty(n, dtype=torch.uint8)
        cpu.unpack_codes(data, out, torch.arange(1 << bits, dtype=torch.uint8), bits)
        return out
    return unpack_codes(data, bits, n)
