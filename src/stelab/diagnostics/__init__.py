"""Gradient-fidelity diagnostics: how far is each STE's coarse gradient from the true gradient of the quantized loss?

* :mod:`.smoothing`: the Gaussian-smoothed staircase :math:`q_s` and contexts that make a model use it;
* :mod:`.reference`: the true-gradient references (smoothed autograd; antithetic zeroth-order with standard errors);
* :mod:`.fidelity`: per-layer and whole-model cosine / inner product of each STE vs the reference, with intervals;
* :mod:`.stats`: saturation fractions, level histograms and code-flip ratios of quantized layers;
* :mod:`.hook`: :class:`DiagnosticsHook` for :func:`stelab.train.train`;
* :mod:`.two_layer_check`: the same machinery on the two-layer model, against :mod:`stelab.theory.two_layer`.

The ``stelab diagnose`` run folder (report, plots) is written by :mod:`stelab.experiments.diagnose`.
"""

from .fidelity import (
    DEFAULT_STES,
    DEFAULT_WIDTHS,
    FidelityResult,
    batch_gradients,
    gradient_fidelity,
    reference_key,
    zeroth_order_comparison,
)
from .hook import DiagnosticsHook
from .reference import (
    ZerothOrderEstimate,
    parameter_groups,
    quantized_loss_of,
    smoothed_gradient,
    zeroth_order_check,
    zeroth_order_directional,
    zeroth_order_gradient,
)
from .smoothing import smoothed, smoothed_quantizer, smoothed_quantizer_derivative, switchable_ste
from .stats import activation_codes, activation_statistics, code_flip_ratio, flip_ratio

__all__ = [
    "DEFAULT_STES",
    "DEFAULT_WIDTHS",
    "DiagnosticsHook",
    "FidelityResult",
    "ZerothOrderEstimate",
    "activation_codes",
    "activation_statistics",
    "batch_gradients",
    "code_flip_ratio",
    "flip_ratio",
    "gradient_fidelity",
    "parameter_groups",
    "quantized_loss_of",
    "reference_key",
    "smoothed",
    "smoothed_gradient",
    "smoothed_quantizer",
    "smoothed_quantizer_derivative",
    "switchable_ste",
    "zeroth_order_check",
    "zeroth_order_comparison",
    "zeroth_order_directional",
    "zeroth_order_gradient",
]
