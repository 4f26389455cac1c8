"""stelab: activation-quantized networks trained with straight-through estimators, and a lab for why STEs work.

Layers, from the bottom: :mod:`stelab.quantizers` (pure forward staircases) and :mod:`stelab.ste` (the STE
registry) -> :mod:`stelab.ops` (the autograd op, :func:`quantize`) -> :mod:`stelab.modules` (:class:`QuantReLU`)
-> :mod:`stelab.convert` (:func:`quantize_activations`, :func:`quantize_model`, :func:`summary`). Weights:
:mod:`stelab.weights` (``WeightQuantConfig``, ``QuantLinear``/``QuantConv2d``, :func:`quantize_weights`) and
:mod:`stelab.optim` (BCGD, BinaryRelax).
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it. Loaded on first use (PEP 562), so that `import stelab` and
# `stelab --version` load neither torch nor scipy, and a script pays only for what it uses.
_EXPORTS = {
    "ALPHA_RULES": ".config", "quantize": ".ops",
    "JsonConfig": ".config", "QuantConfig": ".config",
    "PackSaved": ".pack", "pack_saved": ".pack",
    "QuantReLU": ".modules",
    "QuantConv2d": ".weights", "QuantLinear": ".weights", "WeightQuantConfig": ".weights",
    "model_size_bits": ".weights", "quantize_weights": ".weights", "weight_summary": ".weights",
    "activation_names": ".convert", "activation_summary": ".convert", "quantize_activations": ".convert",
    "quantize_model": ".convert", "quantized_modules": ".convert", "summary": ".convert",
    "lloyd_alpha": ".lloyd",
    "staircase": ".quantizers",
    "quantizers": None, "ste": None,  # the modules themselves
}

__all__ = [
    "ALPHA_RULES",
    "PackSaved",
    "JsonConfig",
    "QuantConfig",
    "QuantConv2d",
    "QuantLinear",
    "QuantReLU",
    "WeightQuantConfig",
    "activation_names",
    "activation_summary",
    "lloyd_alpha",
    "model_size_bits",
    "pack_saved",
    "quantize",
    "quantize_activations",
    "quantize_model",
    "quantize_weights",
    "quantized_modules",
    "quantizers",
    "staircase",
    "ste",
    "summary",
    "weight_summary",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stelab' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name] or f".{name}", __name__)
    value = module if _EXPORTS[name] is None else getattr(module, name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
