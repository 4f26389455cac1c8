r"""Quantized weights in a training run: which layers, the optimizer wrapper, and evaluation of the deployed model.

* Layers: every ``nn.Linear``/``nn.Conv2d`` gets ``config.weights``, except the first and the last in module order
  (the first conv and the classifier of LeNet-5, VGG-11 and ResNet-20) unless ``config.weight_first_last``.
* Optimizer: SGD as for activation-only runs, wrapped by :class:`stelab.weights.optim.BCGD` or
  :class:`~stelab.weights.optim.BinaryRelax` (``config.optimizer``). BinaryRelax's schedule comes from fractions of the
  run (:func:`binaryrelax_schedule`), so a shortened run keeps its shape.
* Evaluation: in BinaryRelax's relaxed phase the forward uses the pseudo-quantized weights
  :math:`(w_f + \lambda Q(w_f))/(1 + \lambda)`; the test accuracy is measured with :math:`Q(w_f)`, the weights
  that are deployed (:func:`deployed_weights`), so it is the quantized model's accuracy in every phase.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from ..weights import quantize_weights, weight_layer_names, weight_quantized_modules
from ..weights.optim import BCGD, BinaryRelax
from .config import TrainConfig


def float_layers(model: nn.Module, config: TrainConfig) -> list[str]:
    """The Linear/Conv2d layers whose weights stay float: the first and the last, unless ``weight_first_last``."""
    names = weight_layer_names(model)
    if config.weight_first_last or not names:
        return []
    return list(dict.fromkeys([names[0], names[-1]]))


def quantize_run_weights(model: nn.Module, config: TrainConfig) -> nn.Module:
    """``model`` (in place) with ``config.weights`` on its Linear/Conv2d layers but :func:`float_layers`; unchanged
    when the weights are float."""
    if config.weights is None:
        return model
    return quantize_weights(model, config.weights, exclude=float_layers(model, config), inplace=True)


def binaryrelax_schedule(config: TrainConfig, total_steps: int) -> tuple[int, float]:
    """``(hard_after, rate)``: the step where the hard phase starts, :math:`T_h = \\max(1, \\mathrm{round}(h T))`,
    and the per-step growth :math:`G^{1/T_h}` that takes :math:`\\lambda` from ``relax_lam`` to
    ``relax_lam * relax_growth`` over the relaxed phase (:mod:`stelab.train.config`)."""
    hard_after = max(1, round(config.relax_hard_at * total_steps))
    return hard_after, math.exp(math.log(config.relax_growth) / hard_after)


def wrap_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, config: TrainConfig, total_steps: int):
    """``optimizer`` itself for ``sgd``, else the BCGD/BinaryRelax wrapper around it for ``model``'s quantized
    layers (LR schedulers keep the inner optimizer)."""
    if config.optimizer == "bcgd":
        return BCGD(optimizer, model, rho=config.bcgd_rho)
    if config.optimizer == "binaryrelax":
        hard_after, rate = binaryrelax_schedule(config, total_steps)
        return BinaryRelax(optimizer, model, lam=config.relax_lam, rate=rate, hard_after=hard_after)
    return optimizer


@contextlib.contextmanager
def deployed_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every quantized layer computes with :math:`Q(w_f)` (BinaryRelax's relaxation suspended)."""
    layers = [m for _, m in weight_quantized_modules(model)]
    saved = [m.relax for m in layers]
    try:
        for m in layers:
            m.relax = None
        yield model
    finally:
        for m, relax in zip(layers, saved):
            m.relax = relax
