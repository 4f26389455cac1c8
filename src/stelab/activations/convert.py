"""Convert any ``nn.Module``'s activations: swap ReLU/ReLU6/Hardtanh modules for :class:`QuantReLU`, and list what
is quantized (the twin of :mod:`stelab.weights.convert`; :func:`stelab.network.quantize_model` does both)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from ..io import markdown_table
from ..quant.patterns import apply_overrides, as_list, check_overrides, check_patterns, matches
from .config import QuantConfig
from .modules import QuantReLU

#: Module types that :func:`quantize_activations` replaces.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


def _check_arguments(model: nn.Module, exclude: list[str] | None, overrides) -> None:
    """Every ``exclude``/``overrides`` pattern must match an activation, every override be a QuantConfig or its
    fields (:mod:`stelab.quant.patterns`)."""
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
