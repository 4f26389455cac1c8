r"""A trained model lowered to a small graph of inference ops: what every exporter and the integer reference read.

:func:`lower` traces the model with :mod:`torch.fx` (``QuantReLU``, ``QuantConv2d`` and ``QuantLinear`` are leaves)
and turns every node into an :class:`Op` holding plain numbers (float32 numpy arrays, Python floats), so no later
stage touches a module again. Supported, in eval mode:

* layers: ``Conv2d``/``QuantConv2d``, ``Linear``/``QuantLinear``, ``BatchNorm1d``/``BatchNorm2d`` (running
  statistics, affine or not), ``QuantReLU`` (forwards ``staircase``, ``round``, ``sign``), ``ReLU``, ``MaxPool2d``,
  ``AdaptiveAvgPool2d(1)``, ``Flatten``, ``Identity``/``Dropout`` (no-ops in eval);
* functions: ``+`` of two tensors, slicing with steps (``x[:, :, ::2, ::2]``), ``F.pad`` with zeros, ``flatten``,
  ``F.relu``.

A quantized weight is kept three ways, all exact: ``weight`` (the float32 values :math:`Q(w) = s\,k` the PyTorch
forward multiplies with), ``codes`` (the integers :math:`k`) and ``scale`` (:math:`s`, one per tensor or per
output channel); :func:`lower` checks ``scale * codes == weight`` bit for bit. An activation keeps ``alpha`` as the
float32 number the PyTorch forward divides by. Anything else raises :class:`ExportError` naming the module (or
function) and listing what is supported.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..activations import quantizers
from ..activations.modules import QuantReLU
from ..weights.modules import QuantConv2d, QuantLinear
from ..weights.ops import resolve_scale

SUPPORTED_MODULES = ("Conv2d", "QuantConv2d", "Linear", "QuantLinear", "BatchNorm1d", "BatchNorm2d", "QuantReLU",
                     "ReLU", "MaxPool2d", "AdaptiveAvgPool2d(1)", "Flatten", "Identity", "Dropout")
SUPPORTED_FUNCTIONS = ("x + y", "x[..., ::s]", "F.pad(x, pads) with zeros", "flatten", "F.relu")


class ExportError(ValueError):
    """A model (or option) the exporter cannot handle; the message names the module and what is supported."""


@dataclass(frozen=True)
class WeightSpec:
    """A layer's weights: ``weight`` float32 values; for quantized layers also ``codes`` (int64), ``scale``
    (float32, shape ``()`` or ``(C,)``), ``quantizer``, ``bits``, ``q_max`` (largest code magnitude)."""

    weight: np.ndarray
    bias: np.ndarray | None
    codes: np.ndarray | None = None
    scale: np.ndarray | None = None
    quantizer: str | None = None
    bits: int | None = None
    q_max: int | None = None

    @property
    def quantized(self) -> bool:
        return self.codes is not None


@dataclass(frozen=True)
class ActSpec:
    """A quantized activation: ``forward``, ``bits``, ``levels`` :math:`L` (1 for sign) and ``alpha`` (float32).
    The export writes the kernels' ``formula`` the forward quantizer evaluates (staircase, round or sign), so a
    registered forward is exported like the built-in of its formula."""

    forward: str
    bits: int
    alpha: float

    @property
    def formula(self) -> str:
        return quantizers.get(self.forward).formula

    @property
    def levels(self) -> int:
        return 1 if self.formula == "sign" else 2**self.bits - 1


@dataclass
class Op:
    """One inference op: ``kind`` (see :data:`KINDS`), the module or node ``name``, the names of its ``inputs``, and
    ``attrs`` (a :class:`WeightSpec` under ``"w"`` for conv/linear, an :class:`ActSpec` under ``"act"``, ...)."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


KINDS = ("input", "conv", "linear", "bn", "act", "relu", "maxpool", "gap", "flatten", "add", "slice", "pad", "output")


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (QuantReLU, QuantConv2d, QuantLinear)) or super().is_leaf_module(m, qualname)


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().copy()


def _weights(name: str, m: nn.Module) -> WeightSpec:
    bias = None if m.bias is None else _f32(m.bias)
    if not isinstance(m, (QuantConv2d, QuantLinear)):
        return WeightSpec(_f32(m.weight), bias)
    if m.relax is not None:
        raise ExportError(f"layer {name} still computes BinaryRelax's relaxed weights (lambda={m.relax:g}); export "
                          "the model after training, when its layers use the hard Q(w) (set layer.relax = None)")
    cfg, w = m.weight_config, m.weight.detach().float()
    with torch.no_grad():
        scale = resolve_scale(w, cfg, None if m.weight_scale is None else m.weight_scale.detach().float(), name)
        codes = m.weight_quantizer.codes(w, scale, cfg.effective_bits, cfg.granularity)
        values = m.quantized_weight().detach().float()
    s = scale.detach().float().reshape(-1) if scale.dim() else scale.detach().float().reshape(())
    if cfg.granularity == "channel" and s.numel() == 1 and w.shape[0] > 1:
        s = s.expand(w.shape[0]).clone()
    view = s.reshape(-1, *([1] * (w.dim() - 1))) if s.dim() else s
    if not torch.equal(view * codes, values):
        raise ExportError(f"layer {name}: its weights are not scale * integer codes bit for bit; only stelab's "
                          "weight quantizers (binary, midrise, ternary, uniform) can be exported")
    return WeightSpec(_f32(values), bias, codes.detach().cpu().numpy().astype(np.int64), _f32(s), cfg.quantizer,
                      cfg.effective_bits, m.weight_quantizer.q_max(cfg.effective_bits))


def _module_op(name: str, m: nn.Module, inputs: tuple[str, ...]) -> Op:
    """Long because it is one flat dispatch over the supported module types, each a few lines."""
    t = type(m)
    if t is QuantReLU:
        c = m.config
        return Op("act", name, inputs, {"act": ActSpec(c.forward, c.bits, float(np.float32(m.current_alpha())))})
    if isinstance(m, QuantReLU):
        raise ExportError(f"module {name} ({t.__name__}) subclasses QuantReLU with its own forward, whose arithmetic "
                          "the exporter cannot know; use QuantReLU itself (forwards staircase, round, sign)")
    if t in (nn.Conv2d, QuantConv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ExportError(f"layer {name}: only zero padding given as numbers can be exported, got "
                              f"padding={m.padding!r}, padding_mode={m.padding_mode!r}")
        return Op("conv", name, inputs, {"w": _weights(name, m), "stride": tuple(m.stride),
                                         "padding": tuple(m.padding), "dilation": tuple(m.dilation),
                                         "groups": m.groups})
    if t in (nn.Linear, QuantLinear):
        return Op("linear", name, inputs, {"w": _weights(name, m)})
    if t in (nn.BatchNorm1d, nn.BatchNorm2d):
        if m.running_mean is None:
            raise ExportError(f"layer {name}: a batch norm without running statistics (track_running_stats=False) "
                              "normalises with each batch's own statistics and cannot be exported")
        c = m.num_features
        gamma = _f32(m.weight) if m.affine else np.ones(c, np.float32)
        beta = _f32(m.bias) if m.affine else np.zeros(c, np.float32)
        return Op("bn", name, inputs, {"mean": _f32(m.running_mean), "var": _f32(m.running_var),
                                       "gamma": gamma, "beta": beta, "eps": float(m.eps)})
    if t is nn.ReLU:
        return Op("relu", name, inputs)
    if t is nn.MaxPool2d and not m.ceil_mode and _pair(m.dilation) == (1, 1):
        return Op("maxpool", name, inputs, {"kernel": _pair(m.kernel_size), "stride": _pair(m.stride or m.kernel_size),
                                            "padding": _pair(m.padding)})
    if t is nn.AdaptiveAvgPool2d and _pair(m.output_size) == (1, 1):
        return Op("gap", name, inputs)
    if t is nn.Flatten and m.start_dim == 1 and m.end_dim == -1:
        return Op("flatten", name, inputs)
    if t in (nn.Identity, nn.Dropout):
        return Op("identity", name, inputs)
    raise ExportError(f"cannot export module {name} ({t.__name__}: {m}); supported modules: "
                      f"{', '.join(SUPPORTED_MODULES)}; functions: {', '.join(SUPPORTED_FUNCTIONS)}")


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _slice_op(node: fx.Node, inputs: tuple[str, ...]) -> Op:
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    axes, starts, ends, steps = [], [], [], []
    for axis, s in enumerate(index):
        if not isinstance(s, slice) or any(not (v is None or isinstance(v, int)) for v in (s.start, s.stop, s.step)):
            raise ExportError(f"node {node.name}: only slices with constant start:stop:step can be exported, got "
                              f"{node.args[1]!r}")
        if s != slice(None):
            axes.append(axis)
            starts.append(s.start or 0)
            ends.append(2**62 if s.stop is None else s.stop)
            steps.append(s.step or 1)
    return Op("slice", node.name, inputs[:1], {"axes": axes, "starts": starts, "ends": ends, "steps": steps})


def _function_op(node: fx.Node, inputs: tuple[str, ...]) -> Op:
    target = node.target
    if target in (operator.add, torch.add) and len(inputs) == 2 and not node.kwargs:
        return Op("add", node.name, inputs)
    if target is operator.getitem:
        return _slice_op(node, inputs)
    if target is F.pad:
        pads = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
        if mode != "constant" or value not in (None, 0, 0.0):
            raise ExportError(f"node {node.name}: only F.pad with zeros can be exported, got mode={mode!r}")
        return Op("pad", node.name, inputs[:1], {"pads": tuple(int(p) for p in pads)})
    if target is torch.flatten and tuple(node.args[1:]) in ((1,), (1, -1)):
        return Op("flatten", node.name, inputs[:1])
    if target is F.relu:
        return Op("relu", node.name, inputs[:1])
    fname = getattr(target, "__name__", str(target))
    raise ExportError(f"cannot export the call {fname}(...) at node {node.name}; supported functions: "
                      f"{', '.join(SUPPORTED_FUNCTIONS)}; modules: {', '.join(SUPPORTED_MODULES)}")


def lower(model: nn.Module) -> list[Op]:
    """``model`` (eval mode is enforced on a copy-free basis: it must already be in eval mode) as a list of
    :class:`Op` in execution order, starting with one ``input`` and ending with one ``output``."""
    if model.training:
        raise ExportError("the model is in training mode (batch norms would use batch statistics); call "
                          "model.eval() before exporting")
    try:
        graph = _Tracer().trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, ... for data-dependent Python control flow
        raise ExportError(f"cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}); the "
                          "exporter needs a forward that is a fixed graph of the supported modules: "
                          f"{', '.join(SUPPORTED_MODULES)}") from None
    modules = dict(model.named_modules())
    ops: list[Op] = []
    alias: dict[str, str] = {}
    for node in graph.nodes:
        inputs = tuple(alias.get(a.name, a.name) for a in node.all_input_nodes)
        if node.op == "placeholder":
            if ops:
                raise ExportError("the model takes more than one input; the exporter handles one image tensor")
            ops.append(Op("input", node.name, ()))
        elif node.op == "call_module":
            op = _module_op(str(node.target), modules[str(node.target)], inputs)
            op.name = node.name if op.kind != "identity" else op.name
            op.attrs["module"] = str(node.target)
            if op.kind == "identity":
                alias[node.name] = inputs[0]
            else:
                ops.append(op)
        elif node.op == "call_function":
            ops.append(_function_op(node, inputs))
        elif node.op == "call_method" and node.target == "flatten" and tuple(node.args[1:]) in ((1,), (1, -1)):
            ops.append(Op("flatten", node.name, inputs[:1]))
        elif node.op == "output":
            ops.append(Op("output", "output", inputs[:1]))
        else:
            raise ExportError(f"cannot export node {node.name} ({node.op} {node.target}); supported modules: "
                              f"{', '.join(SUPPORTED_MODULES)}; functions: {', '.join(SUPPORTED_FUNCTIONS)}")
    return ops


def act_ops(ops: list[Op]) -> list[Op]:
    """The quantized activations of a lowered model, in order."""
    return [op for op in ops if op.kind == "act"]
