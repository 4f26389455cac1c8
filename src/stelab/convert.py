"""Convert any ``nn.Module``: swap its activations for :class:`QuantReLU` (and, with :func:`quantize_model`, its
Linear/Conv2d layers for :class:`stelab.weights.QuantLinear`/``QuantConv2d``), and list what is quantized."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from .config import QuantConfig
from .io import markdown_table
from .modules import QuantReLU
from .patterns import apply_overrides, as_list, check_overrides, check_patterns, matches
from .weights.config import WeightQuantConfig
from .weights.convert import quantize_weights, weight_summary

#: Module types that :func:`quantize_activations` replaces.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


def _check_arguments(model: nn.Module, exclude: list[str] | None, overrides) -> None:
    """Every ``exclude``/``overrides`` pattern must match an activation, every override be a QuantConfig or its
    fields (:mod:`stelab.patterns`)."""
    check_patterns(activation_names(model), (("exclude", exclude), ("overrides", list(overrides or {}))),
                   "activation module")
    check_overrides(overrides, QuantConfig)


def quantize_activations(
    model: nn.Module,
    config: QuantConfig | None = None,
    *,
    include: Iterable[str] | str | None = None,
    exclude: Iterable[str] | str | None = None,
    overrides: Mapping[str, Mapping[str, Any] | QuantConfig] | None = None,
    inplace: bool = False,
    **fields: Any,
) -> nn.Module:
    """Return ``model`` (a deep copy unless ``inplace``) with its ReLU/ReLU6/Hardtanh modules quantized.

    Every swapped module gets ``config`` (default ``QuantConfig()``) with ``fields`` replaced
    (:meth:`QuantConfig.merged`; e.g. ``quantize_activations(model, bits=2, ste="relu")``; an unknown field raises
    ``ValueError`` listing the valid ones).
    ``include``/``exclude`` are glob patterns on the module's qualified name (``"features.*"``, ``"*.act2"``); with
    ``include`` given only matching modules are swapped, and ``exclude`` always wins. ``overrides`` maps a pattern to
    the config fields that differ for the modules it matches (``{"layer3.*": {"bits": 4}}``); later patterns win.
    A pattern that matches no activation module, or an override key that is no :class:`QuantConfig` field, raises
    ``ValueError`` listing the module names or the fields.
    ``nn.Hardtanh(-a, a)`` becomes a binary ``sign`` quantizer with the hardtanh STE at ``alpha = a`` (with a
    warning unless ``forward="sign"`` was asked for; a learned one uses the ``ae`` rule), since a ReLU staircase
    would change its range; an asymmetric one is an error whose suggested override fits it (for ``Hardtanh(0, h)``,
    a clipped ReLU, the staircase with its top at ``h``). An override for the module decides instead.
    Activation modules of other types (GELU, SiLU, ...) stay float, and a
    warning names them; so does a model with no convertible module at all (e.g. ``F.relu`` in ``forward``).
    Weights and state dict keys are kept: a
    fixed-resolution QuantReLU has no persistent state, so float and quantized state dicts load into each other.
    """
    base = QuantConfig.merged(config, **fields)
    # Lists, so that a generator of patterns is not used up by the checks.
    include, exclude = as_list(include), as_list(exclude)
    _check_arguments(model, exclude, overrides)
    target = model if inplace else copy.deepcopy(model)
    swaps = []
    for name, module in target.named_modules():
        if not name or not isinstance(module, ACTIVATION_TYPES) or isinstance(module, QuantReLU):
            continue
        if (include is not None and not matches(name, include)) or matches(name, exclude):
            continue
        config = base
        if isinstance(module, nn.Hardtanh) and not isinstance(module, nn.ReLU6):
            config = _hardtanh_config(name, module, base, overrides)
        swaps.append((name, QuantReLU(config=apply_overrides(name, config, overrides))))
    if include is not None and not swaps:
        raise ValueError(f"include={include!r} matched no activation module; candidates: {activation_names(model)}")
    _warn_left_float(target, swaps)
    for name, replacement in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        setattr(parent, child, replacement)
    return target


# Activation modules that quantize_activations does not convert (their range is not a ReLU's): named in a warning.
OTHER_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.GELU, nn.SiLU, nn.Mish, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Hardswish, nn.Hardsigmoid)


def _hardtanh_config(name: str, module: nn.Hardtanh, base: QuantConfig, overrides) -> QuantConfig:
    """How a ``Hardtanh(lo, hi)`` is quantized: an override for it decides; else ``Hardtanh(-a, a)`` is the binary
    ``sign`` at ``alpha = a`` with the hardtanh STE (with a warning when ``base`` asked for a staircase, which
    cannot take its negative values); any other range is an error suggesting an override that fits it
    (``Hardtanh(0, hi)``: the staircase with its top at ``hi``, ``alpha = hi / (2^b - 1)``)."""
    lo, hi = float(module.min_val), float(module.max_val)
    if overrides and any(matches(name, [pattern]) for pattern in overrides):
        return base  # the user's override for this module applies on top
    if lo == -hi:
        if base.forward != "sign":
            warnings.warn(f"{name}: Hardtanh({lo:g}, {hi:g}) quantized as 1-bit sign (alpha {hi:g}, hardtanh STE), "
                          f"not as the {base.bits}-bit {base.forward} asked for, which cannot take negative values; "
                          f"to choose yourself give overrides={{{name!r}: {{...}}}} or exclude it", stacklevel=3)
            return base.replace(bits=1, forward="sign", ste="hardtanh", alpha=hi,
                                alpha_rule="ae" if base.learn_alpha else base.alpha_rule)
        return base if base.alpha is not None else base.replace(alpha=hi)
    # Hardtanh(0, hi) is a clipped ReLU: the staircase with its top at hi fits it, and the override says so
    fit = ({"forward": "staircase", "bits": base.bits, "alpha": hi / (2**base.bits - 1)} if lo == 0.0 and hi > 0 else
           {"forward": "sign", "ste": "hardtanh", "bits": 1, "alpha": max(abs(lo), abs(hi))})
    raise ValueError(f"{name}: Hardtanh({lo:g}, {hi:g}) is not symmetric, so no sign quantizer matches its range; "
                     f"exclude it (exclude={[name]!r}) or give an override for it, e.g. "
                     f"overrides={{{name!r}: {fit!r}}}")


def _warn_left_float(model: nn.Module, swaps: list) -> None:
    """Say which activations stay float: modules of other types (GELU, ...), or none at all (functional F.relu)."""
    others = [f"{n} ({type(m).__name__})" for n, m in model.named_modules() if isinstance(m, OTHER_ACTIVATIONS)]
    if others:
        warnings.warn(f"quantize_activations: left float (not a ReLU/ReLU6/Hardtanh module): {', '.join(others)}",
                      stacklevel=3)
    elif not swaps:
        warnings.warn(f"quantize_activations: {type(model).__name__} has no ReLU/ReLU6/Hardtanh module, so nothing "
                      "was quantized; activations called as functions in forward (F.relu, torch.relu) cannot be "
                      "swapped: use nn.ReLU modules (or stelab.QuantReLU) in the model", stacklevel=3)


def activation_names(model: nn.Module) -> list[str]:
    """Qualified names of the modules :func:`quantize_activations` could swap."""
    return [n for n, m in model.named_modules() if n and isinstance(m, ACTIVATION_TYPES)]


def quantized_modules(model: nn.Module) -> list[tuple[str, QuantReLU]]:
    """Every :class:`QuantReLU` in ``model`` with its qualified name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantReLU)]


#: The keys of a ``weights``/``activations`` mapping of :func:`quantize_model` that are not config fields.
CONVERSION_KEYS = ("include", "exclude", "overrides")


def _split_spec(kind: str, spec: Any, config_type: type) -> tuple[Any, dict[str, Any]]:
    """``spec`` (a config, a mapping of its fields and the conversion keys, or None) -> (config, conversion kwargs)."""
    if spec is None or isinstance(spec, config_type):
        return spec, {}
    if not isinstance(spec, Mapping):
        raise TypeError(f"{kind} must be a {config_type.__name__}, a mapping of its fields (and of "
                        f"{', '.join(CONVERSION_KEYS)}), or None; got {type(spec).__name__}")
    fields = {k: v for k, v in spec.items() if k not in CONVERSION_KEYS}
    valid = [*config_type.__dataclass_fields__, *CONVERSION_KEYS]
    unknown = sorted(set(fields) - set(config_type.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{kind}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}")
    return config_type.merged(**fields), {k: spec[k] for k in CONVERSION_KEYS if k in spec}


def quantize_model(model: nn.Module, *, weights: WeightQuantConfig | Mapping[str, Any] | None = None,
                   activations: QuantConfig | Mapping[str, Any] | None = None, inplace: bool = False) -> nn.Module:
    """Return ``model`` (a deep copy unless ``inplace``) with quantized activations and/or weights.

    ``activations``: how :func:`quantize_activations` swaps the ReLU/ReLU6/Hardtanh modules; ``weights``: how
    :func:`stelab.weights.quantize_weights` swaps the ``nn.Linear``/``nn.Conv2d`` layers. Each is a config
    (:class:`QuantConfig` / :class:`~stelab.weights.WeightQuantConfig`), a mapping of that config's fields plus the
    conversion keys ``include``, ``exclude`` (glob patterns on module names) and ``overrides`` (pattern -> fields),
    or ``None`` (left float). E.g. W2A2 with the first and last layers' weights float::

        quantize_model(model, activations={"bits": 2, "ste": "clipped_relu"},
                       weights={"bits": 2, "exclude": ["stem.0", "fc"], "overrides": {"layer3.*": {"bits": 4}}})

    Unknown keys raise ``ValueError`` listing the valid ones; bad patterns raise as in the two converters. The two
    conversions touch disjoint module types, so their order does not matter. State dict keys are the float model's
    (plus ``weight_scale`` for LSQ weight steps and ``alpha`` for learned resolutions, both loading leniently).

    Why not ``stelab.quantize(model, ...)``: :func:`stelab.quantize` is the functional op on a tensor
    (``quantize(x, bits=2, ...)``, traced by ``torch.compile``); one name dispatching on whether its first argument
    is a tensor or a module would make both harder to read, type and trace.
    """
    act_config, act_kwargs = _split_spec("activations", activations, QuantConfig)
    weight_config, weight_kwargs = _split_spec("weights", weights, WeightQuantConfig)
    if act_config is None and weight_config is None:
        warnings.warn("quantize_model: neither activations nor weights given, so nothing is quantized; e.g. "
                      "quantize_model(model, activations={'bits': 2}, weights={'bits': 2})", stacklevel=2)
    target = model if inplace else copy.deepcopy(model)
    if act_config is not None:
        quantize_activations(target, act_config, inplace=True, **act_kwargs)
    if weight_config is not None:
        quantize_weights(target, weight_config, inplace=True, **weight_kwargs)
    return target


def summary(model: nn.Module) -> str:
    """What is quantized in ``model``, in Markdown: a table of the quantized activations (name, bits, forward, alpha,
    STE, fixed or learned), a table of the layers with quantized weights (name, quantizer, bits, granularity, scale
    rule, STE, weights) and the model size in bits against the float model's
    (:func:`stelab.weights.weight_summary` and :func:`~stelab.weights.model_size_bits`: quantized weights at their
    storage width plus their scales, every other parameter at 32 bits)."""
    return f"{activation_summary(model)}\n{weight_summary(model)}"


def activation_summary(model: nn.Module) -> str:
    """A Markdown table of every quantized activation: name, bits, forward, alpha, STE, learned or fixed."""
    rows = []
    for name, m in quantized_modules(model):
        c = m.config
        mode = f"learned ({c.alpha_rule})" if c.learn_alpha else "fixed"
        rows.append([name, c.bits, c.forward, f"{m.current_alpha():.4f}", m.ste.label, mode])
    if not rows:
        return "no quantized activations\n"
    return markdown_table(["name", "bits", "forward", "alpha", "STE", "alpha mode"], rows)
