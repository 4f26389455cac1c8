"""Weight quantization: forward quantizers (binary, midrise, ternary, uniform), an STE backward chosen from
:mod:`stelab.ste`, LSQ learned scales, ``QuantLinear``/``QuantConv2d`` and :func:`quantize_weights`.

Layers, from the bottom: :mod:`~stelab.weights.quantizers` (pure forward maps, the registry) ->
:mod:`~stelab.quant.lsq` (LSQ and the autograd op) and :mod:`~stelab.weights.config` (``WeightQuantConfig``) ->
:mod:`~stelab.weights.ops` (:func:`quantize_weight`) -> :mod:`~stelab.weights.modules` ->
:mod:`~stelab.weights.convert`.
The math is in each module's docstring and in ``docs/weights.md``; optimizers that use the quantizers (BCGD,
BinaryRelax) are in :mod:`stelab.weights.optim`.
"""

from ..quant.lsq import lsq_quantize
from . import quantizers
from .config import DEFAULT_WEIGHT_STE, WeightQuantConfig, check_weight_ste, weight_ste_names
from .convert import (
    model_size_bits,
    quantize_weights,
    weight_layer_names,
    weight_quantized_modules,
    weight_summary,
)
from .modules import QuantConv2d, QuantLinear
from .ops import quantize_weight, relaxed_weight

__all__ = [
    "DEFAULT_WEIGHT_STE",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantConfig",
    "check_weight_ste",
    "lsq_quantize",
    "model_size_bits",
    "quantize_weight",
    "quantize_weights",
    "quantizers",
    "relaxed_weight",
    "weight_layer_names",
    "weight_quantized_modules",
    "weight_ste_names",
    "weight_summary",
]
