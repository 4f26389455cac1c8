"""stelab: activation-quantized networks trained with straight-through estimators, and a lab for why STEs work.

Layers, from the bottom: :mod:`stelab.quantizers` (pure forward staircases) and :mod:`stelab.ste` (the STE
registry) -> :mod:`stelab.ops` (the autograd op, :func:`quantize`) -> :mod:`stelab.modules` (:class:`QuantReLU`)
-> :mod:`stelab.convert` (:func:`quantize_activations`, :func:`quantize_model`, :func:`summary`). Weights:
:mod:`stelab.weights` (``WeightQuantConfig``, ``QuantLinear``/``QuantConv2d``, :func:`quantize_weights`) and
:mod:`stelab.optim` (BCGD, BinaryRelax).
"""

from . import quantizers, ste
from .config import JsonConfig, QuantConfig
from .convert import (
    activation_names,
    activation_summary,
    quantize_activations,
    quantize_model,
    quantized_modules,
    summary,
)
from .lloyd import lloyd_alpha
from .modules import QuantReLU
from .ops import ALPHA_RULES, quantize
from .pack import PackSaved, pack_saved
from .quantizers import staircase
from .weights import QuantConv2d, QuantLinear, WeightQuantConfig, model_size_bits, quantize_weights, weight_summary

__version__ = "0.1.0"

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
