"""stelab: activation-quantized networks trained with straight-through estimators, and a lab for why STEs work.

Layers, from the bottom: :mod:`stelab.quantizers` (pure forward staircases) and :mod:`stelab.ste` (the STE
registry) -> :mod:`stelab.ops` (the autograd op, :func:`quantize`) -> :mod:`stelab.modules` (:class:`QuantReLU`)
-> :mod:`stelab.convert` (:func:`quantize_activations`, :func:`summary`).
"""

from . import quantizers, ste
from .config import JsonConfig, QuantConfig
from .convert import activation_names, quantize_activations, quantized_modules, summary
from .lloyd import lloyd_alpha
from .modules import QuantReLU
from .ops import ALPHA_RULES, quantize
from .quantizers import staircase

__version__ = "0.1.0"

__all__ = [
    "ALPHA_RULES",
    "JsonConfig",
    "QuantConfig",
    "QuantReLU",
    "activation_names",
    "lloyd_alpha",
    "quantize",
    "quantize_activations",
    "quantized_modules",
    "quantizers",
    "staircase",
    "ste",
    "summary",
]
