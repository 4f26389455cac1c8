"""``to_onnx``: a stelab model as an ONNX file in one of three formats (``qdq``, ``qonnx``, ``float``).

The model is lowered (:func:`stelab.export.graph.lower`) and each op written with standard ONNX operators; the
quantized activations and weights as :mod:`stelab.export.quant_nodes` describes. The input is the normalised float32
image batch the PyTorch model takes (``[batch, C, H, W]``, batch size free), the output the logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import check_choice
from . import quant_nodes
from .builder import Builder
from .graph import ExportError, Op, lower
from .storage import DEFAULT_OPSET, check_int_bits, check_opset

TIE_NOTE = ("qdq: the staircase is exported as QuantizeLinear(x/alpha + 1/2), equal to ceil(x/alpha) except where "
            "t = fl32(x/alpha) is an odd integer 1..L-2, lies in (0, 2^-25], or is 1 - 2^-24; round differs at "
            "t = j + 1/2 for odd j in 1..L-2 (stelab.export.ties)")


@dataclass
class ExportResult:
    """What :func:`to_onnx` wrote: the ``model`` (an ``onnx.ModelProto``), its ``path`` and size in ``bytes``, the
    ``format`` and ``opset``, and the integer type of each quantized tensor (``types``: layer -> type name)."""

    model: onnx.ModelProto
    path: Path | None
    format: str
    opset: int
    bytes: int
    types: dict[str, str] = field(default_factory=dict)
    act_outputs: dict[str, str] = field(default_factory=dict)


def _conv(b: Builder, op: Op, x: str, w: str) -> str:
    a = op.attrs
    inputs = [x, w] + ([b.const(a["w"].bias, f"{op.name}.bias")] if a["w"].bias is not None else [])
    ph, pw = a["padding"]
    return b.op("Conv", inputs, op.name, kernel_shape=list(a["w"].weight.shape[2:]), strides=list(a["stride"]),
                pads=[ph, pw, ph, pw], dilations=list(a["dilation"]), group=a["groups"])


def _bn(b: Builder, op: Op, x: str) -> str:
    a = op.attrs
    names = [b.const(a[k], f"{op.name}.{k}") for k in ("gamma", "beta", "mean", "var")]
    return b.op("BatchNormalization", [x, *names], op.name, epsilon=a["eps"])


def _pad(b: Builder, op: Op, x: str, rank: int) -> str:
    pads = op.attrs["pads"]  # F.pad order: (last_begin, last_end, second_last_begin, ...)
    begin, end = [0] * rank, [0] * rank
    for i in range(len(pads) // 2):
        begin[rank - 1 - i], end[rank - 1 - i] = pads[2 * i], pads[2 * i + 1]
    return b.op("Pad", [x, b.int64s(begin + end, f"{op.name}.pads")], op.name, mode="constant")


def _emit(b: Builder, op: Op, env: dict[str, str], fmt: str, int_bits: int | None, types: dict[str, str],
          rank: dict[str, int]) -> str:
    """Long because it is one flat dispatch over the op kinds of :mod:`stelab.export.graph`, each a few lines."""
    x = env[op.inputs[0]] if op.inputs else ""
    r = rank.get(op.inputs[0], 4) if op.inputs else 4
    kind = op.kind
    if kind == "conv":
        return _conv(b, op, x, quant_nodes.weight(b, op.attrs["w"], fmt, op.attrs["module"], int_bits, types))
    if kind == "linear":
        w = op.attrs["w"]
        inputs = [x, quant_nodes.weight(b, w, fmt, op.attrs["module"], int_bits, types)]
        if w.bias is not None:
            inputs.append(b.const(w.bias, f"{op.name}.bias"))
        return b.op("Gemm", inputs, op.name, transB=1)
    if kind == "bn":
        return _bn(b, op, x)
    if kind == "act":
        return quant_nodes.activation(b, x, op.attrs["act"], fmt, op.attrs["module"], int_bits, types)
    if kind == "relu":
        return b.op("Relu", [x], op.name)
    if kind == "maxpool":
        a = op.attrs
        ph, pw = a["padding"]
        return b.op("MaxPool", [x], op.name, kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                    pads=[ph, pw, ph, pw])
    if kind == "gap":
        return b.op("GlobalAveragePool", [x], op.name)
    if kind == "flatten":
        return b.op("Flatten", [x], op.name, axis=1)
    if kind == "add":
        return b.op("Add", [x, env[op.inputs[1]]], op.name)
    if kind == "slice":
        a = op.attrs
        ins = [b.int64s(a[k], f"{op.name}.{k}") for k in ("starts", "ends", "axes", "steps")]
        return b.op("Slice", [x, *ins], op.name)
    if kind == "pad":
        return _pad(b, op, x, r)
    raise ExportError(f"internal: no ONNX form for op kind {kind!r}")  # pragma: no cover


def _ranks(ops: list[Op], input_rank: int) -> dict[str, int]:
    rank: dict[str, int] = {}
    for op in ops:
        if op.kind == "input":
            rank[op.name] = input_rank
        elif op.inputs:
            rank[op.name] = 2 if op.kind in ("flatten", "linear") else rank.get(op.inputs[0], 4)
    return rank


def build(model: nn.Module, example_input: torch.Tensor, format: str = "qdq", opset: int = DEFAULT_OPSET,
          int_bits: int | None = None) -> ExportResult:
    """The ONNX model of ``model`` (eval mode) for inputs shaped like ``example_input``, not written to disk."""
    check_choice("export format", format, quant_nodes.FORMATS)
    check_opset(opset)
    check_int_bits(int_bits)
    ops = lower(model)
    with torch.no_grad():
        num_outputs = int(model(example_input[:1]).shape[-1])
    b, env, types, acts = Builder(opset), {}, {}, {}
    rank = _ranks(ops, example_input.dim())
    for op in ops:
        if op.kind == "input":
            env[op.name] = "input"
        elif op.kind == "output":
            out = b.op("Identity", [env[op.inputs[0]]], "logits")
        else:
            env[op.name] = _emit(b, op, env, format, int_bits, types, rank)
            if op.kind == "act":
                acts[op.attrs["module"]] = env[op.name]
    from .. import __version__

    meta = {"stelab_version": __version__, "stelab_format": format,
            "stelab_int_types": ", ".join(f"{k}={v}" for k, v in types.items())}
    if format == "qdq":
        meta["stelab_ties"] = TIE_NOTE
    doc = f"stelab {__version__} export ({format}) of {type(model).__name__}"
    m = b.model("input", tuple(example_input.shape), out, num_outputs, doc, meta)
    if format == "qonnx":
        onnx.checker.check_model(m)
    else:
        onnx.checker.check_model(m, full_check=True)
    return ExportResult(m, None, format, opset, m.ByteSize(), types, acts)


def to_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, format: str = "qdq",
            opset: int = DEFAULT_OPSET, int_bits: int | None = None) -> ExportResult:
    """Write ``model`` to ``path`` as ONNX; ``format`` is ``qdq`` (standard ONNX, runs in onnxruntime), ``qonnx``
    (the QONNX ``Quant`` op, exact; for the qonnx/FINN tools) or ``float`` (standard float ops, exact, 32-bit weights).

    ``opset`` (default 25, which has 2-bit types) decides which integer types qdq may use; ``int_bits`` (2, 4, 8, 16
    or None for the narrowest) asks for at least that width, and an opset too old for it is an error naming the
    opset needed. Raises :class:`~stelab.export.graph.ExportError` for a module it cannot export.
    """
    result = build(model, example_input, format, opset, int_bits)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(result.model.SerializeToString())
    tmp.replace(path)
    result.path, result.bytes = path, path.stat().st_size
    return result


def with_act_outputs(result: ExportResult) -> onnx.ModelProto:
    """A copy of a float or qdq export whose every quantized activation is also a graph output (for verification;
    the shapes come from ONNX shape inference)."""
    m = onnx.shape_inference.infer_shapes(result.model)
    infos = {v.name: v for v in m.graph.value_info}
    extra = [infos[name] for name in result.act_outputs.values()]
    m.graph.output.extend(extra)
    return m


def float32(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """An input batch as a contiguous float32 numpy array (what onnxruntime takes)."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.ascontiguousarray(array, dtype=np.float32)
