r"""An integer-only reference of an exported network, in numpy: what an accelerator would run.

Every tensor between layers is held in one of three forms:

* **codes** :math:`c` (integers; the value is :math:`\alpha c`), what a quantized activation produces;
* an **accumulator** :math:`a` (integers; the value is :math:`m\,a + o` with a per-channel multiplier :math:`m` and
  offset :math:`o`, plus :math:`\alpha_r c_r` when a residual of codes :math:`c_r` was added), what a layer with
  integer weights produces from codes: :math:`a = \sum k\,c` (int32; :math:`m = \alpha s`, :math:`o` = bias);
* a **real** tensor (float64), only where the network itself is float: the image input, layers whose weights are
  float (activation-only models; the first and last layers unless trained with ``--weight-first-last``).

A batch norm on an accumulator changes only :math:`m, o` (:math:`m \gamma/\sigma`,
:math:`(o - \mu)\gamma/\sigma + \beta`). A quantized activation after it is a set of thresholds: its code is
:math:`\#\{j : m a + o (+ \alpha_r c_r) > \theta_j\}` with :math:`\theta_j = j\alpha` (staircase),
:math:`(j + \tfrac12)\alpha` (round) or 0 (sign), i.e. for :math:`m > 0` the count of
:math:`a > T_j = \lfloor(\theta_j - o - \alpha_r c_r)/m\rfloor` (for an integer :math:`a`,
:math:`a > \tau \iff a > \lfloor\tau\rfloor`; :math:`m < 0` flips the comparison). :math:`T` is an int32 table per
channel (and per residual code), computed once from the float parameters in float64; from there on everything is
integer compares and integer sums. Max pooling of codes is a max of integers, global average pooling a sum of codes
(the :math:`1/HW` goes into :math:`m`), a zero pad is code 0. The last layer's :math:`m a + o` is the one float
rescale of an integer network.

**Arithmetic.** The sums :math:`\sum k c` are evaluated with float64 BLAS, exactly: every product and partial sum is
an integer of magnitude at most :math:`\max|c| \sum |k|`, which is checked below :math:`2^{31}` (so also an int32
accumulator cannot overflow) and is far below :math:`2^{53}`. ``exact_int=True`` recomputes them in int64 numpy
instead (slow; the tests check both agree). The reference computes the real network: PyTorch's float32 sums differ
from it by rounding, so a PyTorch code can differ where its pre-activation lies within float32 error of a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .graph import ActSpec, ExportError, Op, WeightSpec, lower

INT32_MAX = 2**31 - 1


@dataclass
class Codes:
    c: np.ndarray  # int64
    alpha: float
    high: int  # max |c|


@dataclass
class Acc:
    a: np.ndarray  # int64
    mult: np.ndarray  # broadcastable to a, float64
    offset: np.ndarray
    high: int
    res: Codes | None = None


@dataclass
class IntegerResult:
    """``logits`` (float64), ``codes`` (activation module -> int64 codes) and ``arith`` (op -> how it ran)."""

    logits: np.ndarray
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    arith: dict[str, str] = field(default_factory=dict)


def real(v) -> np.ndarray:
    if isinstance(v, Codes):
        return v.c * float(v.alpha)
    if isinstance(v, Acc):
        out = v.mult * v.a + v.offset
        return out if v.res is None else out + real(v.res)
    return v


def _channel(vec: np.ndarray, rank: int) -> np.ndarray:
    return np.asarray(vec, np.float64).reshape(1, -1, *([1] * (rank - 2)))


def conv_windows(x: np.ndarray, kernel: tuple[int, int], stride, padding, dilation, pad_value=0) -> np.ndarray:
    """``[N, C, H', W', kh, kw]`` windows of ``x`` zero- (or ``pad_value``-) padded."""
    ph, pw = padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    (kh, kw), (dh, dw) = kernel, dilation
    win = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::stride[0], ::stride[1], ::dh, ::dw]


def _conv(x: np.ndarray, w: np.ndarray, attrs: dict, dtype) -> np.ndarray:
    groups, out = attrs["groups"], []
    win = conv_windows(x.astype(dtype), w.shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"])
    cin, cout = w.shape[1], w.shape[0] // groups
    for g in range(groups):
        part = win[:, g * cin:(g + 1) * cin]
        out.append(np.tensordot(part, w[g * cout:(g + 1) * cout].astype(dtype), axes=([1, 4, 5], [1, 2, 3])))
    return np.concatenate(out, axis=-1).transpose(0, 3, 1, 2)


def _matmul(x: np.ndarray, w: np.ndarray, op: Op, dtype) -> np.ndarray:
    if op.kind == "conv":
        return _conv(x, w, op.attrs, dtype)
    return x.astype(dtype) @ w.astype(dtype).T


def _weighted(v, op: Op, exact_int: bool, arith: dict[str, str]):
    w: WeightSpec = op.attrs["w"]
    scalar = isinstance(v, Acc) and v.res is None and np.ptp(v.mult) == 0 and not np.any(v.offset)
    if w.quantized and (isinstance(v, Codes) or scalar):
        k = w.codes
        per_out = np.abs(k).reshape(k.shape[0], -1).sum(1)
        high = int(v.high * per_out.max())
        if high > INT32_MAX:
            raise ExportError(f"layer {op.attrs['module']}: its accumulator can reach {high}, beyond int32")
        ints = v.c if isinstance(v, Codes) else v.a
        a = _matmul(ints, k, op, np.int64 if exact_int else np.float64)
        a = a.astype(np.int64)
        unit = float(v.alpha) if isinstance(v, Codes) else float(v.mult.flat[0])
        rank = a.ndim
        mult = _channel(unit * np.broadcast_to(w.scale.astype(np.float64), (k.shape[0],)), rank)
        offset = _channel(np.zeros(k.shape[0]) if w.bias is None else w.bias, rank)
        arith[op.attrs["module"]] = "int32 accumulate"
        return Acc(a, mult, offset, high)
    out = _matmul(real(v), w.weight.astype(np.float64), op, np.float64)
    if w.bias is not None:
        out = out + _channel(w.bias, out.ndim)
    arith[op.attrs["module"]] = "float64 (float input)" if w.quantized else "float64 (float weights)"
    return out


def _bn(v, op: Op, arith: dict[str, str]):
    a = op.attrs
    g = a["gamma"].astype(np.float64) / np.sqrt(a["var"].astype(np.float64) + a["eps"])
    rank = v.a.ndim if isinstance(v, Acc) else np.ndim(real(v))
    gc, mc, bc = _channel(g, rank), _channel(a["mean"], rank), _channel(a["beta"], rank)
    if isinstance(v, Acc) and v.res is None:
        arith[op.attrs["module"]] = "folded into the thresholds"
        return Acc(v.a, v.mult * gc, (v.offset - mc) * gc + bc, v.high)
    arith[op.attrs["module"]] = "float64"
    return (real(v) - mc) * gc + bc


def thresholds(act: ActSpec) -> np.ndarray:
    """The real thresholds :math:`\\theta_j` of an activation (float64)."""
    alpha = float(np.float32(act.alpha))
    if act.formula == "sign":
        return np.zeros(1)
    j = np.arange(act.levels, dtype=np.float64)
    return (j + 0.5) * alpha if act.formula == "round" else j * alpha


def integer_thresholds(tau: np.ndarray, sgn: np.ndarray, high: int) -> np.ndarray:
    """:math:`\\lfloor \\mathrm{sgn}\\,\\tau \\rfloor` saturated to ``[-high-1, high]`` (int32; the accumulator
    never leaves ``[-high, high]``, so a saturated threshold compares the same)."""
    return np.clip(np.floor(sgn * tau), -high - 1, high).astype(np.int32)


def _count(v: Acc, act: ActSpec) -> np.ndarray:
    """The codes of ``act`` on an accumulator, by integer comparisons with per-channel thresholds."""
    theta = thresholds(act)
    sgn = np.sign(v.mult)
    safe = np.where(sgn == 0, 1.0, v.mult)
    res_values = [0] if v.res is None else range(-v.res.high, v.res.high + 1)
    count = np.zeros(v.a.shape, np.int64)
    for r in res_values:
        shift = 0.0 if v.res is None else float(v.res.alpha) * r
        where = True if v.res is None else v.res.c == r
        for t in theta:
            table = integer_thresholds((t - v.offset - shift) / safe, sgn, v.high)  # per channel: [1, C, 1, 1]
            hit = np.where(sgn == 0, v.offset + shift > t, sgn * v.a > table)
            count += where & hit
    return count


def _activation(v, op: Op, arith: dict[str, str]) -> Codes:
    act: ActSpec = op.attrs["act"]
    if isinstance(v, Acc):
        count = _count(v, act)
        arith[op.attrs["module"]] = "int32 thresholds"
    else:
        x = real(v)
        count = sum((x > t).astype(np.int64) for t in thresholds(act))
        arith[op.attrs["module"]] = "float64 thresholds (float input)"
    if act.formula == "sign":
        return Codes(2 * count - 1, act.alpha, 1)
    return Codes(count, act.alpha, act.levels)


def _maxpool(v, op: Op):
    a = op.attrs
    if isinstance(v, Codes):
        low = np.iinfo(np.int64).min
        win = conv_windows(v.c, a["kernel"], a["stride"], a["padding"], (1, 1), pad_value=low)
        return Codes(win.max(axis=(4, 5)), v.alpha, v.high)
    win = conv_windows(real(v), a["kernel"], a["stride"], a["padding"], (1, 1), pad_value=-np.inf)
    return win.max(axis=(4, 5))


def _gap(v):
    if isinstance(v, Codes):
        hw = v.c.shape[2] * v.c.shape[3]
        s = v.c.sum(axis=(2, 3), keepdims=True)
        return Acc(s, np.full((1, 1, 1, 1), float(v.alpha) / hw), np.zeros((1, 1, 1, 1)), v.high * hw)
    return real(v).mean(axis=(2, 3), keepdims=True)


def _flatten(v):
    if isinstance(v, Codes):
        return Codes(v.c.reshape(len(v.c), -1), v.alpha, v.high)
    if isinstance(v, Acc) and v.res is None:
        shape = (1, *v.a.shape[1:])
        flat = (1, -1)
        return Acc(v.a.reshape(len(v.a), -1), np.broadcast_to(v.mult, shape).reshape(flat),
                   np.broadcast_to(v.offset, shape).reshape(flat), v.high)
    x = real(v)
    return x.reshape(len(x), -1)


def _add(u, v):
    if isinstance(v, Acc) and isinstance(u, Codes):
        u, v = v, u
    if isinstance(u, Acc) and u.res is None and isinstance(v, Codes) and v.c.shape == u.a.shape:
        return Acc(u.a, u.mult, u.offset, u.high, v)
    return real(u) + real(v)


def _shape_op(v, op: Op):
    """slice / pad of codes stay codes (a padded code 0 is the value 0); other forms go through their values."""
    c = v.c if isinstance(v, Codes) else real(v)
    if op.kind == "slice":
        a = op.attrs
        index = [slice(None)] * c.ndim
        for axis, s, e, st in zip(a["axes"], a["starts"], a["ends"], a["steps"]):
            index[axis] = slice(s, e, st)
        out = c[tuple(index)]
    else:
        pads, width = op.attrs["pads"], [(0, 0)] * c.ndim
        for i in range(len(pads) // 2):
            width[c.ndim - 1 - i] = (pads[2 * i], pads[2 * i + 1])
        out = np.pad(c, width)
    return Codes(out, v.alpha, v.high) if isinstance(v, Codes) else out


class IntegerModel:
    """The integer reference of a lowered model: ``IntegerModel.from_model(model).run(x)``."""

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops

    @classmethod
    def from_model(cls, model) -> IntegerModel:
        return cls(lower(model))

    def run(self, x: np.ndarray, exact_int: bool = False) -> IntegerResult:
        """Long because it is one flat dispatch over the op kinds, each one line."""
        env: dict[str, object] = {}
        result = IntegerResult(np.empty(0))
        for op in self.ops:
            v = env[op.inputs[0]] if op.inputs else None
            if op.kind == "input":
                out = np.asarray(x, np.float64)
            elif op.kind in ("conv", "linear"):
                out = _weighted(v, op, exact_int, result.arith)
            elif op.kind == "bn":
                out = _bn(v, op, result.arith)
            elif op.kind == "act":
                out = _activation(v, op, result.arith)
                result.codes[op.attrs["module"]] = out.c
            elif op.kind == "relu":
                out = Codes(np.maximum(v.c, 0), v.alpha, v.high) if isinstance(v, Codes) else np.maximum(real(v), 0)
            elif op.kind == "maxpool":
                out = _maxpool(v, op)
            elif op.kind == "gap":
                out = _gap(v)
            elif op.kind == "flatten":
                out = _flatten(v)
            elif op.kind == "add":
                out = _add(v, env[op.inputs[1]])
            elif op.kind in ("slice", "pad"):
                out = _shape_op(v, op)
            elif op.kind == "output":
                result.logits = real(v)
                if isinstance(v, Acc):
                    result.arith["logits"] = "one float rescale m * acc + o"
                continue
            else:  # pragma: no cover
                raise ExportError(f"internal: no integer form for op kind {op.kind!r}")
            env[op.name] = out
        return result

    def predict(self, x: np.ndarray, batch: int = 200) -> IntegerResult:
        """:meth:`run` in batches of ``batch`` samples (memory), results concatenated."""
        parts = [self.run(x[i:i + batch]) for i in range(0, len(x), batch)]
        codes = {k: np.concatenate([p.codes[k] for p in parts]) for k in parts[0].codes}
        return IntegerResult(np.concatenate([p.logits for p in parts]), codes, parts[0].arith)
