"""Convert any ``nn.Module``: swap its activations for :class:`QuantReLU` (and, with :func:`quantize_model`, its
Linear/Conv2d layers for :class:`stelab.weights.QuantLinear`/``QuantConv2d``), and list what is quantized."""

from __future__ import annotations

import copy
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
    ``nn.Hardtanh`` becomes a binary ``sign`` quantizer with the hardtanh STE at ``alpha = max_val`` unless an
    override says otherwise, since a ReLU staircase would change its range (a learned one uses the ``ae`` rule).
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
            if module.min_val != -module.max_val:
                raise ValueError(f"{name}: Hardtanh({module.min_val}, {module.max_val}) is not symmetric, so no "
                                 "sign quantizer matches its range; exclude it or give an override")
            config = config.replace(bits=1, forward="sign", ste="hardtanh", alpha=float(module.max_val),
                                    alpha_rule="ae" if config.learn_alpha else config.alpha_rule)
        swaps.append((name, QuantReLU(config=apply_overrides(name, config, overrides))))
    if include is not None and not swaps:
        raise ValueError(f"include={include!r} matched no activation module; candidates: {activation_names(model)}")
    for name, replacement in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        setattr(parent, child, replacement)
    return target


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
