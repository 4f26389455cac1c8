r"""The ONNX nodes of one quantized activation and one layer's weights, in each export format.

Activations (:math:`t = x/\alpha`, :math:`L` the top code; every graph computes ``Div`` first, exactly as PyTorch):

=========  ==============================================================  =========================================
format     staircase :math:`\alpha\,\mathrm{clamp}(\lceil t\rceil, 0, L)`    equality with PyTorch
=========  ==============================================================  =========================================
float      ``Div -> Ceil -> Clip(0, L) -> Mul(alpha)``                      exact (the same float32 operations)
qdq        ``Div -> Add(1/2) -> [Clip(., L)] -> QuantizeLinear(1, uintN)``  except the set of :mod:`stelab.export.ties`
           ``-> DequantizeLinear(alpha)``
qonnx      ``Quant(x, alpha, 0, bits; unsigned, rounding_mode=CEIL)``       exact
=========  ==============================================================  =========================================

``round`` is the same without the ``Add`` (float: ``Sub(1/2)`` before the ``Ceil``; qonnx: ``HALF_DOWN``, stelab's
ties-down rounding of non-negative numbers). ``sign`` is ``Where(x > 0, alpha, -alpha)`` (float),
``Relu(Sign(x)) -> Q -> DQ(2 alpha) -> Add(-alpha)`` (qdq: code :math:`b = 1\{x > 0\}`, exact) and
``-BipolarQuant(-x, alpha)`` (qonnx: BipolarQuant sends 0 up, stelab's sign sends it down).

Activation codes are uint8 (uint16 above 8 bits) with a ``Clip`` to :math:`L` (none at 8 bits, where the saturation
of ``QuantizeLinear`` is the clip): uint2/uint4 activations are valid ONNX, but onnxruntime 1.32's default graph
optimizer moves a ``MaxPool`` that follows a ``DequantizeLinear`` onto the codes and has no uint2/uint4 ``MaxPool``
kernel, so the session would not load; activations are not stored in the file, so 8-bit codes cost nothing there.
Why the ``QuantizeLinear`` has scale 1 after a ``Div`` rather than scale ``alpha`` after ``Add(alpha/2)``:
``fl(fl(x + alpha/2)/alpha)`` rounds twice and then also differs within 2 ulps of thresholds of both parities
(measured with onnxruntime 1.32), while ``fl(fl(x/alpha) + 1/2)`` is exact except where
:mod:`~stelab.export.ties` says.

Weights: float keeps :math:`Q(w)` as float32; qdq stores the integer codes :math:`k` (narrowest signed type,
:mod:`~stelab.export.storage`) and ``DequantizeLinear(k, s, axis=0)`` restores :math:`s\,k` bit for bit; qonnx keeps
:math:`Q(w)` with a ``Quant(s, signed, narrow, ROUND)`` node (``BipolarQuant`` for binary) that leaves it unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from ..weights import quantizers as weight_quantizers
from .builder import QONNX_DOMAIN, Builder
from .graph import ActSpec, WeightSpec
from .storage import IntType, as_array, choose

FORMATS = ("qdq", "qonnx", "float")


def activation(b: Builder, x: str, a: ActSpec, fmt: str, hint: str, int_bits: int | None,
               types: dict[str, str]) -> str:
    """The output name of activation ``a`` applied to ``x``."""
    if fmt == "float":
        return _float_act(b, x, a, hint)
    if fmt == "qonnx":
        return _qonnx_act(b, x, a, hint)
    t = choose(0, a.levels, False, b.opset, max(8, int_bits or 8))  # 8-bit activation codes: see the docstring
    types[hint] = t.name
    alpha = b.const(a.alpha, f"{hint}.alpha")
    if a.formula == "sign":
        code = b.op("Relu", [b.op("Sign", [x], f"{hint}.sign")], f"{hint}.b")
        y = _qdq(b, code, b.const(2 * np.float32(a.alpha), f"{hint}.2alpha"), t, 1, hint)
        return b.op("Add", [y, b.const(-a.alpha, f"{hint}.neg_alpha")], f"{hint}.out")
    u = b.op("Div", [x, alpha], f"{hint}.t")
    if a.formula == "staircase":
        u = b.op("Add", [u, b.const(0.5, f"{hint}.half")], f"{hint}.t_half")
    return _qdq(b, u, alpha, t, a.levels, hint)


def _qdq(b: Builder, u: str, scale: str, t: IntType, levels: int, hint: str) -> str:
    if levels < t.high:
        u = b.op("Clip", [u, "", b.const(float(levels), f"{hint}.top")], f"{hint}.clip")
    zero = b.const(as_array(np.zeros(()), t), f"{hint}.zero")
    q = b.op("QuantizeLinear", [u, b.const(1.0, f"{hint}.one"), zero], f"{hint}.codes")
    return b.op("DequantizeLinear", [q, scale, zero], f"{hint}.out")


def _float_act(b: Builder, x: str, a: ActSpec, hint: str) -> str:
    alpha = b.const(a.alpha, f"{hint}.alpha")
    if a.formula == "sign":
        positive = b.op("Greater", [x, b.const(0.0, f"{hint}.zero")], f"{hint}.positive")
        return b.op("Where", [positive, alpha, b.const(-a.alpha, f"{hint}.neg_alpha")], f"{hint}.out")
    t = b.op("Div", [x, alpha], f"{hint}.t")
    if a.formula == "round":
        t = b.op("Sub", [t, b.const(0.5, f"{hint}.half")], f"{hint}.t_half")
    k = b.op("Ceil", [t], f"{hint}.ceil")
    k = b.op("Clip", [k, b.const(0.0, f"{hint}.low"), b.const(float(a.levels), f"{hint}.top")], f"{hint}.codes")
    return b.op("Mul", [k, alpha], f"{hint}.out")


def _qonnx_act(b: Builder, x: str, a: ActSpec, hint: str) -> str:
    alpha = b.const(a.alpha, f"{hint}.alpha")
    if a.formula == "sign":
        neg = b.op("Neg", [x], f"{hint}.neg")
        q = b.op("BipolarQuant", [neg, alpha], f"{hint}.bipolar", domain=QONNX_DOMAIN)
        return b.op("Neg", [q], f"{hint}.out")
    mode = "CEIL" if a.formula == "staircase" else "HALF_DOWN"
    return b.op("Quant", [x, alpha, b.const(0.0, f"{hint}.zero"), b.const(float(a.bits), f"{hint}.bits")],
                f"{hint}.out", domain=QONNX_DOMAIN, signed=0, narrow=0, rounding_mode=mode)


def weight(b: Builder, w: WeightSpec, fmt: str, hint: str, int_bits: int | None, types: dict[str, str]) -> str:
    """The name of the (float) weight tensor a Conv/Gemm reads."""
    if not w.quantized or fmt == "float":
        return b.const(w.weight, f"{hint}.weight")
    scale = w.scale
    if fmt == "qonnx":
        shaped = scale.reshape(-1, *([1] * (w.weight.ndim - 1))) if scale.ndim else scale
        s = b.const(shaped.astype(np.float32), f"{hint}.scale")
        values = b.const(w.weight, f"{hint}.weight")
        # the values are s * k already, so a QONNX quantizer at scale s gives k back: a two-code (+-1) quantizer is
        # bipolar, any other a narrow signed integer range wide enough for -Q_P..Q_P (ternary's -1, 0, 1 in 2 bits;
        # midrise's odd codes -3..3 in 3)
        if tuple(weight_quantizers.get(w.quantizer).code_values(w.bits)) == (-1, 1):
            return b.op("BipolarQuant", [values, s], f"{hint}.wq", domain=QONNX_DOMAIN)
        bits = math.ceil(math.log2(2 * w.q_max + 1))
        return b.op("Quant", [values, s, b.const(0.0, f"{hint}.zero"), b.const(float(bits), f"{hint}.bits")],
                    f"{hint}.wq", domain=QONNX_DOMAIN, signed=1, narrow=1, rounding_mode="ROUND")
    t = choose(-w.q_max, w.q_max, True, b.opset, int_bits)
    types[hint] = t.name
    codes = b.const(as_array(w.codes, t), f"{hint}.codes")
    attrs = {"axis": 0} if scale.ndim else {}
    return b.op("DequantizeLinear", [codes, b.const(scale.astype(np.float32), f"{hint}.scale")], f"{hint}.wq",
                **attrs)
