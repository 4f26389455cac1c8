"""Convert any ``nn.Module``: swap its ``nn.Linear``/``nn.Conv2d`` for :class:`QuantLinear`/:class:`QuantConv2d`,
and report what is quantized and the model's size."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from ..io import markdown_table
from ..quant.patterns import apply_overrides, as_list, check_overrides, check_patterns, matches
from .config import WeightQuantConfig
from .modules import WEIGHT_QUANT_TYPES, QuantConv2d, QuantLinear
from .quantizers import storage_bits

#: Float module types that :func:`quantize_weights` replaces, and their quantized counterparts.
FLOAT_TYPES: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: QuantLinear, nn.Conv2d: QuantConv2d}


def weight_layer_names(model: nn.Module) -> list[str]:
    """Qualified names of the layers :func:`quantize_weights` could swap (exactly ``nn.Linear``/``nn.Conv2d``)."""
    return [n for n, m in model.named_modules() if n and type(m) in FLOAT_TYPES]


Overrides = Mapping[str, "Mapping[str, Any] | WeightQuantConfig"]


def _check_patterns(model: nn.Module, include: list[str] | None, exclude: list[str] | None,
                    overrides: Overrides | None = None) -> None:
    """Every pattern must match a candidate layer, every override be a WeightQuantConfig or its fields."""
    check_patterns(weight_layer_names(model), (("include", include), ("exclude", exclude),
                                               ("overrides", list(overrides or {}))), "Linear/Conv2d layer")
    check_overrides(overrides, WeightQuantConfig)


def quantize_weights(model: nn.Module, config: WeightQuantConfig | None = None, *,
                     include: Iterable[str] | str | None = None, exclude: Iterable[str] | str | None = None,
                     overrides: Overrides | None = None, inplace: bool = False, **fields: Any) -> nn.Module:
    """Return ``model`` (a deep copy unless ``inplace``) with its ``nn.Linear``/``nn.Conv2d`` layers computing with
    quantized weights.

    Every swapped layer gets ``config`` (default ``WeightQuantConfig()``) with ``fields`` replaced
    (e.g. ``quantize_weights(model, quantizer="binary", ste="hardtanh")``; an unknown field raises listing the
    valid ones). ``include``/``exclude`` are glob patterns on qualified module names (``"features.*"``); with
    ``include`` only matching layers are swapped, and ``exclude`` always wins (e.g. keep the first and last layers
    float: ``exclude=["conv1", "fc"]``). ``overrides`` maps a pattern to the :class:`WeightQuantConfig` fields that
    differ for the layers it matches (``{"fc": {"bits": 8}}``), or to a whole config; later patterns win. A pattern
    that matches no Linear/Conv2d layer, or an override key that is no field, raises ``ValueError`` listing the
    candidates or the fields. Subclasses of Linear/Conv2d (and layers already quantized) are left alone.
    State dict keys are kept (plus ``weight_scale`` per layer with a learned scale, which loads leniently).
    """
    base = WeightQuantConfig.merged(config, **fields)
    include, exclude = as_list(include), as_list(exclude)
    _check_patterns(model, include, exclude, overrides)
    target = model if inplace else copy.deepcopy(model)
    swaps = []
    for name, module in target.named_modules():
        if not name or type(module) not in FLOAT_TYPES:
            continue
        if (include is not None and not matches(name, include)) or matches(name, exclude):
            continue
        config = apply_overrides(name, base, overrides)
        swaps.append((name, FLOAT_TYPES[type(module)].from_float(module, config)))  # type: ignore[attr-defined]
    _warn_left_float(target, swaps)
    for name, replacement in swaps:
        replacement.layer_name = f"layer {name}"  # type: ignore[attr-defined]
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        setattr(parent, child, replacement)
    return target


#: Weight layers of other types, named in a warning when they stay float.
OTHER_WEIGHT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                                                   nn.ConvTranspose3d, nn.Bilinear, nn.Embedding)


def _warn_left_float(model: nn.Module, swaps: list) -> None:
    others = [f"{n} ({type(m).__name__})" for n, m in model.named_modules() if type(m) in OTHER_WEIGHT_TYPES]
    if others:
        warnings.warn(f"quantize_weights: left float (only nn.Linear and nn.Conv2d are quantized): "
                      f"{', '.join(others)}", stacklevel=3)
    elif not swaps:
        warnings.warn(f"quantize_weights: {type(model).__name__} has no nn.Linear or nn.Conv2d layer to quantize "
                      "(or every one was excluded); nothing was quantized", stacklevel=3)


def weight_quantized_modules(model: nn.Module) -> list[tuple[str, QuantLinear | QuantConv2d]]:
    """Every :class:`QuantLinear`/:class:`QuantConv2d` in ``model`` with its qualified name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_QUANT_TYPES)]  # type: ignore[misc]


def _scale_count(m: QuantLinear | QuantConv2d) -> int:
    return m.weight.shape[0] if m.weight_config.granularity == "channel" else 1


def model_size_bits(model: nn.Module) -> int:
    """Bits to store ``model``'s parameters: each quantized weight at its storage width (1 for binary, 2 for ternary,
    ``b`` for uniform), plus one 32-bit scale per tensor or output channel; every other parameter (biases, float
    layers, BatchNorm affine, learned steps counted as the scales) at 32 bits. Buffers are not counted."""
    quantized = {id(m.weight): m for _, m in weight_quantized_modules(model)}
    steps = {id(m.weight_scale) for m in quantized.values() if m.weight_scale is not None}
    total = 0
    for p in model.parameters():
        if id(p) in steps:
            continue  # counted below, once, as the layer's scales
        m = quantized.get(id(p))
        if m is None:
            total += 32 * p.numel()
        else:
            c = m.weight_config
            total += storage_bits(c.quantizer, c.effective_bits) * p.numel() + 32 * _scale_count(m)
    return total


def weight_summary(model: nn.Module) -> str:
    """A Markdown table of every layer with quantized weights (name, quantizer, bits, granularity, scale rule, STE,
    weights), then the model size: quantized (:func:`model_size_bits`) against all-float 32-bit."""
    rows = []
    for name, m in weight_quantized_modules(model):
        c = m.weight_config
        rows.append([name, c.quantizer, c.effective_bits, c.granularity, c.rule, m.weight_ste.label, m.weight.numel()])
    steps = {id(m.weight_scale) for _, m in weight_quantized_modules(model) if m.weight_scale is not None}
    floats = 32 * sum(p.numel() for p in model.parameters() if id(p) not in steps)  # the float model has no steps
    size = model_size_bits(model)
    table = (markdown_table(["name", "quantizer", "bits", "granularity", "scale", "STE", "weights"], rows) if rows
             else "no quantized weights\n")
    if not size:
        return f"{table}\nmodel size: no parameters\n"
    return (f"{table}\nmodel size: {size} bits ({size / 8 / 2**20:.3f} MiB) quantized vs {floats} bits "
            f"({floats / 8 / 2**20:.3f} MiB) float, {floats / size:.2f}x smaller\n")
