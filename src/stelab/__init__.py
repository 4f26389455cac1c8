"""stelab: activation-quantized networks trained with straight-through estimators, and a lab for why STEs work.

Layers, from the bottom (folders): :mod:`stelab.ste` (the estimators) and :mod:`stelab.kernels` (the fused op) ->
:mod:`stelab.quant` (what both sides share: LSQ, scales, layer patterns) and :mod:`stelab.pack` (saved tensors in
bits) -> the twins :mod:`stelab.activations` (forward quantizers, ``QuantConfig``, :func:`quantize`,
:class:`QuantReLU`, :func:`quantize_activations`) and :mod:`stelab.weights` (weight quantizers,
``WeightQuantConfig``, ``QuantLinear``/``QuantConv2d``, :func:`quantize_weights`, BCGD and BinaryRelax) ->
:mod:`stelab.network` (:func:`quantize_model`, :func:`summary`).
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# Public name -> the module that defines it. Loaded on first use (PEP 562), so that `import stelab` and
# `stelab --version` load neither torch nor scipy, and a script pays only for what it uses.
_EXPORTS = {
    "ALPHA_RULES": ".activations.config", "quantize": ".activations.ops",
    "JsonConfig": ".io", "QuantConfig": ".activations.config",
    "PackSaved": ".pack", "pack_saved": ".pack",
    "QuantReLU": ".activations.modules",
    "QuantConv2d": ".weights", "QuantLinear": ".weights", "WeightQuantConfig": ".weights",
    "model_size_bits": ".weights", "quantize_weights": ".weights", "weight_summary": ".weights",
    "activation_names": ".activations.convert", "activation_summary": ".activations.convert",
    "quantize_activations": ".activations.convert", "quantized_modules": ".activations.convert",
    "quantize_model": ".network.convert", "summary": ".network.convert",
    "lloyd_alpha": ".activations.lloyd",
    "staircase": ".activations.quantizers",
    "quantizers": ".activations", "ste": None,  # the modules themselves
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
    value = module if _EXPORTS[name] is None else getattr(module, name)  # stelab.quantizers: the activations' module
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Modules that moved when the folders became the layers, by their old names: objects pickled before (a QuantReLU in a
# torch.save of a whole model, an STE) name their module, and loading them imports it. Old names resolve to the new
# modules (the same module objects, so classes compare equal); nothing else uses these names.
_MOVED = {"stelab.ste_plugins": "stelab.ste.plugins", "stelab.ste_probe": "stelab.ste.probe",
          "stelab.piecewise": "stelab.ste.piecewise", "stelab.builtin_stes": "stelab.ste.builtin",
          "stelab.smoothing": "stelab.ste.smoothing", "stelab.ste_schedule": "stelab.activations.schedule",
          "stelab.quantizers": "stelab.activations.quantizers", "stelab.lloyd": "stelab.activations.lloyd",
          "stelab.ops": "stelab.activations.ops", "stelab.modules": "stelab.activations.modules",
          "stelab.config": "stelab.activations.config", "stelab.convert": "stelab.activations.convert",
          "stelab.patterns": "stelab.quant.patterns", "stelab.optim": "stelab.weights.optim",
          "stelab.weights.lsq": "stelab.quant.lsq"}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in _MOVED else None

    def create_module(self, spec):
        return importlib.import_module(_MOVED[spec.name])

    def exec_module(self, module):
        pass


sys.meta_path.append(_MovedFinder())
