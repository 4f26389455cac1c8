r"""Run an export (onnxruntime, the qonnx executor, the integer reference) beside PyTorch and compare.

Each runner returns :class:`Outputs`: logits and, per quantized activation, its integer codes (from PyTorch:
:func:`stelab.activations.quantizers.level_index` of the activation's input, the module's own formula; from ONNX:
the exported activation output divided by :math:`\alpha` and rounded, exact since it is :math:`\mathrm{fl}(k\alpha)`).

:func:`compare` counts differing codes per layer and samples whose codes all agree; on those the logits must agree
within a bound computed from the last layer, not chosen: a float32 dot product of length :math:`n` is within
:math:`\gamma_n \sum_i |w_i a_i|` of the exact one (:math:`\gamma_n = nu/(1 - nu)`, :math:`u = 2^{-24}`; Higham,
*Accuracy and Stability of Numerical Algorithms*, 3.1), so two float32 implementations of a last layer with fan-in
:math:`n` over pooled inputs (:math:`P` terms averaged) agree within
:math:`2\gamma_{n + P}\,(|W|\,|a| + |b|)`, and an exact one (the integer reference) within half of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..activations import quantizers
from ..activations.modules import QuantReLU
from .graph import Op, act_ops, lower
from .ties import documented_ties, quotient

U32 = 2.0**-24


@dataclass
class Outputs:
    logits: np.ndarray
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    pre: dict[str, np.ndarray] = field(default_factory=dict)  # PyTorch only: each activation's input
    last_input: np.ndarray | None = None  # PyTorch only: the last layer's input


def torch_outputs(model: nn.Module, x: torch.Tensor, last: str | None = None) -> Outputs:
    """PyTorch's logits, codes and activation inputs (``last``: the module whose input the bound needs)."""
    out, hooks = Outputs(np.empty(0)), []

    def grab(name: str, m: nn.Module):
        def hook(_mod, args):
            a = args[0].detach()
            if isinstance(m, QuantReLU):
                # the forward's own alpha: rounded to float32 for float32 inputs, as given for float64 ones
                dtype = torch.float64 if a.dtype == torch.float64 else torch.float32
                alpha = torch.tensor(m.current_alpha(), dtype=dtype)
                k = quantizers.level_index(a, m.config.forward, m.config.bits, alpha)
                out.codes[name] = k.to(torch.int16).numpy()
                out.pre[name] = a.float().numpy()
            else:
                out.last_input = a.float().numpy()
        return hook

    for name, m in model.named_modules():
        if isinstance(m, QuantReLU) or name == last:
            hooks.append(m.register_forward_pre_hook(grab(name, m)))
    try:
        with torch.no_grad():
            out.logits = model(x).float().numpy()
    finally:
        for h in hooks:
            h.remove()
    return out


def _codes_from_acts(ops: list[Op], acts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    alphas = {op.attrs["module"]: op.attrs["act"].alpha for op in act_ops(ops)}
    return {k: np.rint(v.astype(np.float64) / np.float32(alphas[k])).astype(np.int16) for k, v in acts.items()}


def ort_runner(result, ops: list[Op], batch: int = 500, optimize: bool = True):
    """A function ``x -> Outputs`` running a float or qdq export in onnxruntime (CPU; default graph optimizations,
    or none with ``optimize=False``: no Conv+BatchNormalization fusion), with the activations as extra outputs."""
    import onnxruntime as ort

    from .onnx_export import with_act_outputs

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(with_act_outputs(result).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = ["logits", *result.act_outputs.values()]

    def run(x: np.ndarray) -> Outputs:
        parts = [session.run(names, {"input": np.ascontiguousarray(x[i:i + batch], np.float32)})
                 for i in range(0, len(x), batch)]
        acts = {k: np.concatenate([p[1 + j] for p in parts]) for j, k in enumerate(result.act_outputs)}
        return Outputs(np.concatenate([p[0] for p in parts]), _codes_from_acts(ops, acts))

    return run


def qonnx_runner(result, ops: list[Op], batch: int = 50):
    """A function ``x -> Outputs`` running a qonnx export with the qonnx package's executor
    (``qonnx.core.onnx_exec.execute_onnx``, node by node; custom ops by qonnx's own numpy code)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    wrappers: dict[int, ModelWrapper] = {}

    def wrapper(n: int) -> ModelWrapper:
        if n not in wrappers:
            model = result.model.__class__()
            model.CopyFrom(result.model)
            for value in (model.graph.input[0], model.graph.output[0]):
                value.type.tensor_type.shape.dim[0].dim_value = n
            wrappers[n] = ModelWrapper(model).transform(InferShapes())
        return wrappers[n]

    def run(x: np.ndarray) -> Outputs:
        logits, acts = [], {k: [] for k in result.act_outputs}
        for i in range(0, len(x), batch):
            chunk = np.ascontiguousarray(x[i:i + batch], np.float32)
            ctx = execute_onnx(wrapper(len(chunk)), {"input": chunk}, return_full_exec_context=True)
            logits.append(ctx["logits"])
            for k, name in result.act_outputs.items():
                acts[k].append(ctx[name])
        codes = _codes_from_acts(ops, {k: np.concatenate(v) for k, v in acts.items()})
        return Outputs(np.concatenate(logits), codes)

    return run


def integer_runner(ops: list[Op], batch: int = 100):
    """A function ``x -> Outputs`` running the integer reference; ``run.arith`` says how each op ran."""
    from .integer import IntegerModel

    model = IntegerModel(ops)

    def run(x: np.ndarray) -> Outputs:
        r = model.predict(np.asarray(x), batch)
        run.arith = r.arith
        return Outputs(r.logits, {k: v.astype(np.int16) for k, v in r.codes.items()})

    run.arith = {}
    return run


def torch64_runner(model: nn.Module, ops: list[Op]):
    """PyTorch itself in float64 (a deep copy): the baseline for how much float32 rounding alone moves codes."""
    import copy

    double = copy.deepcopy(model).double()
    last = last_layer(ops)[0].attrs["module"]

    def run(x: np.ndarray) -> Outputs:
        return torch_outputs(double, torch.from_numpy(np.asarray(x, np.float64)), last)

    run.arith = {"all": "float64 PyTorch"}
    return run


def runner(fmt: str, model: nn.Module, ops: list[Op], example: torch.Tensor, opset: int | None = None):
    """The runner of ``fmt`` (qdq, qonnx, float, integer; ``qdq-noopt``: qdq in onnxruntime without graph
    optimizations; ``torch-float64``: PyTorch in float64) and, for the ONNX ones, the export it runs."""
    from .onnx_export import build
    from .storage import DEFAULT_OPSET

    if fmt == "integer":
        return integer_runner(ops), None
    if fmt == "torch-float64":
        return torch64_runner(model, ops), None
    result = build(model, example[:2], fmt.removesuffix("-noopt"), opset or DEFAULT_OPSET)
    if fmt == "qonnx":
        return qonnx_runner(result, ops), result
    return ort_runner(result, ops, optimize=not fmt.endswith("-noopt")), result


def last_layer(ops: list[Op]) -> tuple[Op, int]:
    """The op producing the logits and the number of values averaged into each of its inputs (1 if none)."""
    by_name = {op.name: op for op in ops}
    op = by_name[ops[-1].inputs[0]]
    pooled, cur = 1, by_name.get(op.inputs[0])
    while cur is not None and cur.kind in ("flatten", "gap"):
        if cur.kind == "gap":
            pooled = -1  # resolved from the shape by the caller
        cur = by_name.get(cur.inputs[0]) if cur.inputs else None
    return op, pooled


def logit_bound(ops: list[Op], ref: Outputs, pooled: int, factor: float) -> np.ndarray:
    """``factor * gamma_{n+P} (|W| |a| + |b|)`` per sample and logit (see the module docstring)."""
    op, _ = last_layer(ops)
    w = op.attrs["w"]
    a = np.abs(ref.last_input.reshape(len(ref.last_input), -1).astype(np.float64))
    n = a.shape[1] + pooled
    gamma = n * U32 / (1 - n * U32)
    total = a @ np.abs(w.weight.astype(np.float64)).T
    if w.bias is not None:
        total = total + np.abs(w.bias.astype(np.float64))
    return factor * gamma * total + 2 * U32 * np.abs(ref.logits)


def compare(ref: Outputs, other: Outputs, ops: list[Op], factor: float = 2.0, qdq: bool = False,
            pooled: int = 1) -> dict:
    """Predictions, codes and logits of ``other`` against PyTorch's ``ref``; see the module docstring.

    A code that differs in a sample whose earlier layers all agreed is a *first* difference (the later ones follow
    from it). With ``qdq`` the first differences are split into those on the documented tie set
    (:mod:`stelab.export.ties`) of PyTorch's own pre-activation and the others, whose largest distance to a
    threshold is reported (in units of alpha): there the two pre-activations straddle a threshold within float
    rounding of each other.
    """
    acts = {op.attrs["module"]: op.attrs["act"] for op in act_ops(ops)}
    n = len(ref.logits)
    agree = np.ones(n, bool)
    layers, ties, near = {}, 0, 0.0
    first_count = 0
    for name, codes in ref.codes.items():  # in execution order (the hooks fire in it)
        diff = codes != other.codes[name]
        layers[name] = int(diff.sum())
        # differences in samples that agreed so far: the first divergence, not a consequence of an earlier one
        first = diff & agree.reshape(n, *([1] * (diff.ndim - 1)))
        agree &= ~diff.reshape(n, -1).any(1)
        if first.any():
            a = acts[name]
            t = quotient(ref.pre[name][first], a.alpha).astype(np.float32)
            tie = documented_ties(t, a.formula, a.levels) if qdq and a.formula != "sign" else np.zeros(len(t), bool)
            first_count += int(first.sum())
            ties += int(tie.sum())
            shift = 0.5 if a.formula == "round" else 0.0
            rest = t[~tie].astype(np.float64) - shift
            near = max(near, float(np.abs(rest - np.round(rest)).max()) if rest.size else 0.0)
    bound = logit_bound(ops, ref, pooled, factor)
    err = np.abs(ref.logits.astype(np.float64) - other.logits.astype(np.float64))
    ok = agree
    return {
        "samples": n,
        "predictions_equal": int((ref.logits.argmax(1) == other.logits.argmax(1)).sum()),
        "samples_all_codes_equal": int(agree.sum()),
        "codes_compared": int(sum(c.size for c in ref.codes.values())),
        "codes_differing": int(sum(layers.values())),
        "codes_differing_per_layer": layers,
        "codes_differing_first": first_count,
        "codes_differing_on_documented_ties": ties,
        "codes_differing_max_distance_to_threshold_alpha": near,
        "logit_max_abs_error": float(err[ok].max()) if ok.any() else None,
        "logit_max_error_over_bound": float((err[ok] / bound[ok]).max()) if ok.any() else None,
        "logits_within_bound": bool((err[ok] <= bound[ok]).all()),
    }


def pooled_terms(ops: list[Op], model: nn.Module, x: torch.Tensor) -> int:
    """P of the bound: how many values a global average pool before the last layer averages (1 without one)."""
    if last_layer(ops)[1] != -1:
        return 1
    gap = next(op for op in ops if op.kind == "gap")
    shapes: dict[str, tuple] = {}
    module = model.get_submodule(gap.attrs["module"])
    def hook(_m, args) -> None:  # a pre-hook's return value would replace the inputs
        shapes["s"] = tuple(args[0].shape)

    h = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        h.remove()
    return int(shapes["s"][2] * shapes["s"][3])


def merge(a: dict | None, b: dict) -> dict:
    """Two :func:`compare` results over disjoint samples as one."""
    if a is None:
        return b
    out = dict(a)
    for k in ("samples", "predictions_equal", "samples_all_codes_equal", "codes_compared", "codes_differing",
              "codes_differing_first", "codes_differing_on_documented_ties"):
        out[k] = a[k] + b[k]
    out["codes_differing_per_layer"] = {k: v + b["codes_differing_per_layer"][k]
                                        for k, v in a["codes_differing_per_layer"].items()}
    for k in ("codes_differing_max_distance_to_threshold_alpha", "logit_max_abs_error", "logit_max_error_over_bound"):
        values = [v for v in (a[k], b[k]) if v is not None]
        out[k] = max(values) if values else None
    out["logits_within_bound"] = a["logits_within_bound"] and b["logits_within_bound"]
    return out


def verify(model: nn.Module, x: torch.Tensor, formats=("qdq", "qonnx", "float", "integer"), opset: int | None = None,
           chunk: int = 1000, labels: np.ndarray | None = None) -> dict:
    """Run ``model`` exported in each of ``formats`` (and the integer reference) on ``x``, ``chunk`` samples at a
    time, and compare with PyTorch: a dict per runner (:func:`compare`'s keys, ``bytes`` and ``int_types`` of the
    export, ``accuracy`` when ``labels`` are given, ``arithmetic`` for the integer reference)."""
    ops = lower(model)
    last, _ = last_layer(ops)
    pooled = pooled_terms(ops, model, x)
    runners = {fmt: runner(fmt, model, ops, x, opset) for fmt in formats}
    report: dict = {fmt: None for fmt in formats}
    correct = dict.fromkeys(formats, 0)
    for i in range(0, len(x), chunk):
        ref = torch_outputs(model, x[i:i + chunk], last.attrs["module"])
        xs = x[i:i + chunk].detach().float().numpy()
        for fmt, (run, _) in runners.items():
            outs = run(xs)
            factor = 1.0 if fmt in ("integer", "torch-float64") else 2.0
            report[fmt] = merge(report[fmt], compare(ref, outs, ops, factor, fmt.startswith("qdq"), pooled))
            if labels is not None:
                correct[fmt] += int((outs.logits.argmax(1) == labels[i:i + chunk]).sum())
    for fmt, (run, result) in runners.items():
        if result is not None:
            report[fmt]["bytes"], report[fmt]["int_types"] = result.bytes, dict(result.types)
        else:
            report[fmt]["arithmetic"] = dict(run.arith)
        if labels is not None:
            report[fmt]["accuracy"] = correct[fmt] / len(x)
    return report
