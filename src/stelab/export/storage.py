"""Integer types for codes in a QDQ export: the narrowest one the opset (and onnxruntime, tested) supports.

========  ==========  ===============  ======================================================
width     unsigned    signed           ONNX opset that adds QuantizeLinear/DequantizeLinear for it
========  ==========  ===============  ======================================================
2         uint2       int2             25 (onnxruntime >= 1.23 runs both)
4         uint4       int4             21
8         uint8       int8             13 (per-channel DequantizeLinear, which weights need)
16        uint16      int16            21
========  ==========  ===============  ======================================================

Activation codes are unsigned (``0..L``, ``L = 2**bits - 1``; ``0..1`` for sign), weight codes signed
(``-Q_P..Q_P``; binary and ternary fit in int2). 2- and 4-bit tensors are stored packed (4 and 2 codes a byte).
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto

from .graph import ExportError

MIN_OPSET = 13
DEFAULT_OPSET = 25
WIDTHS = (2, 4, 8, 16)


@dataclass(frozen=True)
class IntType:
    width: int
    signed: bool
    onnx_type: int
    dtype: type
    opset: int

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.width}"

    @property
    def low(self) -> int:
        return -(2 ** (self.width - 1)) if self.signed else 0

    @property
    def high(self) -> int:
        return 2 ** (self.width - 1) - 1 if self.signed else 2**self.width - 1


TYPES = (
    IntType(2, False, TensorProto.UINT2, ml_dtypes.uint2, 25),
    IntType(4, False, TensorProto.UINT4, ml_dtypes.uint4, 21),
    IntType(8, False, TensorProto.UINT8, np.uint8, 13),
    IntType(16, False, TensorProto.UINT16, np.uint16, 21),
    IntType(2, True, TensorProto.INT2, ml_dtypes.int2, 25),
    IntType(4, True, TensorProto.INT4, ml_dtypes.int4, 21),
    IntType(8, True, TensorProto.INT8, np.int8, 13),
    IntType(16, True, TensorProto.INT16, np.int16, 21),
)


def check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(f"opset must be an int >= {MIN_OPSET} (per-channel DequantizeLinear), got {opset!r}")
    return opset


def check_int_bits(int_bits: int | None) -> int | None:
    if int_bits is not None and int_bits not in WIDTHS:
        raise ExportError(f"int_bits must be one of {', '.join(map(str, WIDTHS))} or None (the narrowest), got "
                          f"{int_bits!r}")
    return int_bits


def choose(low: int, high: int, signed: bool, opset: int, int_bits: int | None = None) -> IntType:
    """The narrowest type holding ``low..high`` that ``opset`` has, at least ``int_bits`` wide when given.

    With ``int_bits`` given, a type of that width which fits but needs a newer opset is an error saying which opset;
    without it, the narrowest type the opset has is used (an 8-bit container for 2-bit codes at opset 13).
    """
    fits = [t for t in TYPES if t.signed == signed and t.low <= low and high <= t.high
            and (int_bits is None or t.width >= int_bits)]
    if not fits:
        raise ExportError(f"codes {low}..{high} fit no {'signed' if signed else 'unsigned'} integer type of "
                          f"{int_bits or 2}..16 bits")
    if int_bits is not None and fits[0].opset > opset:
        raise ExportError(f"{fits[0].name} codes (int_bits={int_bits}) need opset {fits[0].opset} or later, got "
                          f"opset {opset}; export with --opset {fits[0].opset}, or ask for wider codes (--int-bits 8)")
    usable = [t for t in fits if t.opset <= opset]
    if not usable:
        raise ExportError(f"codes {low}..{high} need {fits[0].name}, which needs opset {fits[0].opset} or later; got "
                          f"opset {opset}: export with --opset {fits[0].opset}")
    return usable[0]


def as_array(codes: np.ndarray, t: IntType) -> np.ndarray:
    """``codes`` (integers in range, checked) as a numpy array of ``t``'s dtype (ml_dtypes for 2/4 bits)."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < t.low or codes.max() > t.high):
        raise ExportError(f"codes {codes.min()}..{codes.max()} do not fit {t.name}")
    return codes.astype(np.int64).astype(t.dtype)
