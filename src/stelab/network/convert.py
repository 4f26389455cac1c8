"""The whole network, both sides at once: :func:`quantize_model` swaps activations
(:func:`stelab.activations.quantize_activations`) and Linear/Conv2d layers (:func:`stelab.weights.quantize_weights`),
:func:`summary` lists both."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..activations.config import QuantConfig
from ..activations.convert import activation_summary, quantize_activations
from ..weights.config import WeightQuantConfig
from ..weights.convert import quantize_weights, weight_summary

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
