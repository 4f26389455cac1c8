r"""Optimizer wrappers for quantized weights: BCGD and BinaryRelax, around any ``torch.optim`` optimizer.

Both act on the float ("latent") weights :math:`w_f` of :class:`stelab.weights.QuantLinear` /
:class:`~stelab.weights.QuantConv2d` layers, whose quantizer :math:`Q` (forward quantizer and scale rule of the
layer's :class:`~stelab.weights.WeightQuantConfig`) they use; every other parameter is left to the inner optimizer.
Below, :math:`g(\cdot)` is the coarse gradient that back-propagation gives for the weights the forward used,
:math:`\eta` the learning rate, and "step" the inner optimizer's update (for plain SGD, :math:`-\eta g`).

**BCGD** (blended coarse gradient descent; Yin et al. 2018, arXiv:1808.05240). The forward
uses :math:`Q(w_f)` (so :math:`g = g(Q(w_f))`, passed to :math:`w_f` by the layer's STE), and each step is

.. math::  w_f \leftarrow (1 - \rho)\,w_f + \rho\,Q(w_f) - \eta\,g(Q(w_f)),

implemented as: compute :math:`Q(w_f)`, blend in place, then run the inner step on the blended weights (with plain
SGD, no momentum and no weight decay, this is the formula exactly; with momentum or Adam the inner update replaces
:math:`-\eta g`, and a weight decay sees the blended weights). Default :math:`\rho = 10^{-5}`, the value
reported to us for the authors' public demo (not verified here). What is ours: only the abstract and standard
descriptions were read, so the order (blend, then step), the use with any inner optimizer, and blending with the
layer's own quantizer and scale rule are our choices.

**BinaryRelax** (Yin et al. 2018). Phase 1 (relaxed): the quantization constraint :math:`w \in \mathcal Q`
is replaced by the penalty :math:`\frac{\lambda}{2}\,\mathrm{dist}(w, \mathcal Q)^2` (the Moreau envelope of the
constraint's indicator), and the forward uses the *pseudo-quantized* weights

.. math::  w = \arg\min_u \tfrac12\|u - w_f\|^2 + \tfrac{\lambda}{2}\|u - Q(w_f)\|^2
           = \frac{w_f + \lambda\,Q(w_f)}{1 + \lambda}

(the minimizer when the nearest quantized point of :math:`u` is :math:`Q(w_f)`; zero the gradient of the quadratic).
The float weights take the step with the gradient at the pseudo-quantized weights,
:math:`w_f \leftarrow w_f - \eta\,g(w)` (passed to :math:`w_f` unchanged), and after each step
:math:`\lambda \leftarrow \mathrm{rate}\cdot\lambda` (continuation: the weights are pushed toward :math:`\mathcal Q`).
Phase 2 (hard; after ``hard_after`` steps, or on :meth:`BinaryRelax.harden`): the forward uses :math:`Q(w_f)` with
the layer's STE, as plain quantized training, and the deployed weights are :math:`Q(w_f)`. From the paper's abstract
(as available): the Moreau-envelope relaxation, the linear interpolation between float weights and their
quantization, the growing regularization parameter and the final exact-quantization phase. Ours: the geometric
per-step schedule and its defaults (:math:`\lambda_0 = 1`, rate 1.01), :math:`Q` being the layer's quantizer (for
binary with the ``mean`` scale it is the exact projection onto :math:`\{s\,\mathrm{sign}\}`; for ternary and uniform
an approximate one), and no gradient to a learned scale in phase 1.

LR schedulers: pass the inner optimizer (``wrapper.optimizer``) to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .convert import weight_quantized_modules
from .modules import WEIGHT_QUANT_TYPES


def _quant_layers(model: nn.Module | Iterable[nn.Module], optimizer: torch.optim.Optimizer) -> list[nn.Module]:
    """The quantized-weight layers of ``model`` (or the layers given); each must be moved by ``optimizer``."""
    if isinstance(model, nn.Module):
        layers = [m for _, m in weight_quantized_modules(model)]
    else:
        layers = list(model)
        bad = [type(m).__name__ for m in layers if not isinstance(m, WEIGHT_QUANT_TYPES)]
        if bad:
            raise TypeError(f"expected QuantLinear/QuantConv2d layers, got {', '.join(bad)}")
    if not layers:
        raise ValueError("no QuantLinear/QuantConv2d layer found; quantize the model's weights first "
                         "(stelab.weights.quantize_weights)")
    moved = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if any(id(m.weight) not in moved for m in layers):
        raise ValueError("the optimizer does not update the weights of every quantized layer; give it "
                         "model.parameters()")
    return layers


class _Wrapper:
    """Delegates the optimizer interface (``param_groups``, ``zero_grad``, ``state``) to the inner optimizer."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module | Iterable[nn.Module]) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.layers = _quant_layers(model, optimizer)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _own_state(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), **self._own_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class BCGD(_Wrapper):
    """Blended coarse gradient descent around ``optimizer`` (module docstring for the update and what is ours).

    ``BCGD(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, rho=1e-5)``; then the usual
    ``zero_grad()``, ``loss.backward()``, ``step()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module | Iterable[nn.Module],
                 rho: float = 1e-5) -> None:
        super().__init__(optimizer, model)
        if not (math.isfinite(rho) and 0 <= rho <= 1):
            raise ValueError(f"rho must be in [0, 1], got {rho}")
        self.rho = float(rho)

    @torch.no_grad()
    def blend(self) -> None:
        """:math:`w_f \\leftarrow (1 - \\rho) w_f + \\rho Q(w_f)` for every quantized layer."""
        for layer in self.layers:
            target = layer.project()
            layer.weight.mul_(1.0 - self.rho).add_(target, alpha=self.rho)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        self.blend()
        return self.optimizer.step(closure)

    def _own_state(self) -> dict[str, Any]:
        return {"rho": self.rho}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rho = float(state["rho"])


class BinaryRelax(_Wrapper):
    """BinaryRelax around ``optimizer`` (module docstring for the update and what is ours).

    ``lam`` is :math:`\\lambda_0`; after every :meth:`step`, :math:`\\lambda \\leftarrow \\mathrm{rate}\\,\\lambda`;
    after ``hard_after`` steps (``None``: only when :meth:`harden` is called) the layers use :math:`Q(w_f)`.
    Constructing it puts the layers in the relaxed phase (their ``relax`` attribute holds :math:`\\lambda`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module | Iterable[nn.Module], lam: float = 1.0,
                 rate: float = 1.01, hard_after: int | None = None) -> None:
        super().__init__(optimizer, model)
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {lam}")
        if not (math.isfinite(rate) and rate >= 1):
            raise ValueError(f"rate must be a finite number >= 1 (lambda must not shrink), got {rate}")
        if hard_after is not None and (isinstance(hard_after, bool) or not isinstance(hard_after, int)
                                       or hard_after < 0):
            raise ValueError(f"hard_after must be a step count >= 0 or None, got {hard_after!r}")
        self.lam, self.rate, self.hard_after = float(lam), float(rate), hard_after
        self.steps, self.hard = 0, False
        self._apply()

    def _apply(self) -> None:
        if self.hard_after is not None and self.steps >= self.hard_after:
            self.hard = True
        for layer in self.layers:
            layer.relax = None if self.hard else self.lam

    def harden(self) -> None:
        """Enter phase 2: the layers compute with :math:`Q(w_f)` from now on."""
        self.hard = True
        self._apply()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = self.optimizer.step(closure)
        self.steps += 1
        if not self.hard:
            self.lam *= self.rate
        self._apply()
        return loss

    def _own_state(self) -> dict[str, Any]:
        return {"lam": self.lam, "rate": self.rate, "hard_after": self.hard_after, "steps": self.steps,
                "hard": self.hard}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.lam, self.rate, self.hard_after = float(state["lam"]), float(state["rate"]), state["hard_after"]
        self.steps, self.hard = int(state["steps"]), bool(state["hard"])
        self._apply()


__all__ = ["BCGD", "BinaryRelax"]
