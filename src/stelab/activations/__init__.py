"""Activation quantization, the twin of :mod:`stelab.weights`.

Layers, from the bottom: :mod:`~stelab.activations.quantizers` (pure forward staircases, the registry) and
:mod:`~stelab.activations.lloyd` (the default resolution) -> :mod:`~stelab.activations.config` (``QuantConfig``) ->
:mod:`~stelab.activations.ops` (the autograd op :func:`quantize`, fused or general) ->
:mod:`~stelab.activations.modules` (:class:`QuantReLU`) -> :mod:`~stelab.activations.convert`
(:func:`quantize_activations`), :mod:`~stelab.activations.calibrate` (a learned resolution's start from data)
and :mod:`~stelab.activations.schedule` (STE parameters over a run).
"""

from . import quantizers
from .calibrate import init_alphas_from_data
from .config import ALPHA_RULES, QuantConfig, check_learned
from .convert import activation_names, activation_summary, quantize_activations, quantized_modules
from .lloyd import lloyd_alpha
from .modules import QuantReLU
from .ops import quantize
from .quantizers import staircase

__all__ = [
    "ALPHA_RULES",
    "QuantConfig",
    "QuantReLU",
    "activation_names",
    "activation_summary",
    "check_learned",
    "init_alphas_from_data",
    "lloyd_alpha",
    "quantize",
    "quantize_activations",
    "quantized_modules",
    "quantizers",
    "staircase",
]
