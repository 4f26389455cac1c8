r"""The "true gradient" reference for a loss that is piecewise constant in the weights, and its independent check.

1. **Smoothed autograd.** Replace every staircase by its Gaussian smoothing :math:`q_s` (:mod:`.smoothing`) and
   differentiate the loss by autograd; :math:`s \to 0` gives the gradient of the data-averaged quantized loss
   (on one batch the quantized loss is flat almost everywhere, so the reference is meaningful as an average over
   batches; :mod:`.fidelity` does that averaging).
2. **Zeroth order.** The Gaussian smoothing of the real quantized loss in parameter space,
   :math:`L_\sigma(\theta) = \mathbb{E}_u L(\theta + \sigma u)`, :math:`u \sim N(0, I)`, has the exact gradient
   (Stein's identity, antithetic form)

   .. math::  \nabla L_\sigma(\theta)
      = \mathbb{E}_u\Big[\frac{L(\theta + \sigma u) - L(\theta - \sigma u)}{2\sigma}\,u\Big],

   estimated by a mean over random directions with its standard error; it only evaluates the real quantized network.
   The projection on a fixed direction :math:`d` needs far fewer directions than the full vector
   (:func:`zeroth_order_check` projects on the reference's and each STE's mean gradient direction: a positive value
   says the real quantized loss decreases along minus that direction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..activations.modules import QuantReLU
from .smoothing import require_quantized, smoothed

LossFn = Callable[[Tensor, Tensor], Tensor]


def default_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    return nn.functional.cross_entropy(outputs, targets)


def parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters grouped by the module that owns them (a "layer"); resolutions of quantizers excluded,
    since their gradient follows an alpha rule, not the STE."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, QuantReLU):
            continue
        own = [(f"{mod_name}.{n}" if mod_name else n, p) for n, p in module.named_parameters(recurse=False)
               if p.requires_grad]
        if own:
            groups[mod_name or "(root)"] = own
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters outside its quantizers")
    return groups


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Diagnostics must not change training: restore buffers (BN running stats) and the global RNG state after."""
    saved = {k: v.detach().clone() for k, v in model.named_buffers()}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    if k in saved:
                        v.copy_(saved[k])


def gradients(loss: Tensor, params: list[nn.Parameter], retain_graph: bool = False) -> list[Tensor]:
    """``d loss / d params`` without touching ``.grad``; unused parameters get zeros."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def smoothed_gradient(model: nn.Module, inputs: Tensor, targets: Tensor, width: float,
                      loss_fn: LossFn = default_loss, seed: int = 0) -> dict[str, Tensor]:
    """Gradient of the loss with each staircase replaced by :math:`q_s`, ``s = width * alpha``, by parameter name."""
    require_quantized(model)
    named = [np for group in parameter_groups(model).values() for np in group]
    with preserved_state(model):
        torch.manual_seed(seed)
        with smoothed(model, width):
            loss = loss_fn(model(inputs), targets)
        grads = gradients(loss, [p for _, p in named])
    return {n: g.detach() for (n, _), g in zip(named, grads)}


@dataclass(frozen=True)
class ZerothOrderEstimate:
    """Mean of i.i.d. antithetic estimates and its standard error (same shape as the estimated quantity)."""

    mean: Tensor
    stderr: Tensor
    n_directions: int


def _antithetic_samples(fn: Callable[[Tensor], float | Tensor], theta: Tensor, sigma: float, n_directions: int,
                        seed: int) -> tuple[Tensor, Tensor]:
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if n_directions < 2:
        raise ValueError(f"n_directions must be at least 2 for a standard error, got {n_directions}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.randn((n_directions, *theta.shape), generator=gen, dtype=theta.dtype).to(theta.device)
    diffs = torch.empty(n_directions, dtype=torch.float64)
    with torch.no_grad():
        for i in range(n_directions):
            diffs[i] = (float(fn(theta + sigma * u[i])) - float(fn(theta - sigma * u[i]))) / (2 * sigma)
    return u, diffs.to(theta.device)


def zeroth_order_gradient(fn: Callable[[Tensor], float | Tensor], theta: Tensor, sigma: float,
                          n_directions: int, seed: int = 0) -> ZerothOrderEstimate:
    r"""Unbiased estimate of :math:`\nabla L_\sigma(\theta)` from ``2 * n_directions`` evaluations of ``fn``."""
    u, diffs = _antithetic_samples(fn, theta, sigma, n_directions, seed)
    samples = diffs.to(theta.dtype).reshape(-1, *([1] * theta.dim())) * u
    return ZerothOrderEstimate(samples.mean(0), samples.std(0) / n_directions**0.5, n_directions)


def zeroth_order_directional(fn: Callable[[Tensor], float | Tensor], theta: Tensor, direction: Tensor, sigma: float,
                             n_directions: int, seed: int = 0) -> ZerothOrderEstimate:
    r"""Unbiased estimate of :math:`\langle \nabla L_\sigma(\theta), d\rangle` (a 0-d mean and standard error)."""
    u, diffs = _antithetic_samples(fn, theta, sigma, n_directions, seed)
    samples = diffs * (u.reshape(n_directions, -1).to(torch.float64) @ direction.reshape(-1).to(torch.float64))
    return ZerothOrderEstimate(samples.mean(), samples.std() / n_directions**0.5, n_directions)


def quantized_loss_of(model: nn.Module, inputs: Tensor, targets: Tensor, names: list[str],
                      loss_fn: LossFn = default_loss, seed: int = 0) -> tuple[Callable[[Tensor], float], Tensor]:
    """``(L, theta0)``: the real quantized loss as a function of the flat vector of parameters ``names`` (the others
    fixed), and the current value of that vector. Every call sees the same dropout masks and leaves buffers alone."""
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise KeyError(f"no parameter(s) {unknown}; valid names: {sorted(params)}")
    shapes = [params[n].shape for n in names]
    theta0 = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss(theta: Tensor) -> float:
        chunks = torch.split(theta, [s.numel() for s in shapes])
        overrides = {n: c.reshape(s).to(params[n].dtype) for n, c, s in zip(names, chunks, shapes)}
        with preserved_state(model), torch.no_grad():
            torch.manual_seed(seed)
            return float(loss_fn(functional_call(model, overrides, (inputs,)), targets))

    return loss, theta0


def zeroth_order_check(model: nn.Module, batches: list[tuple[Tensor, Tensor]], directions: dict[str, Tensor],
                       sigma: float, n_directions: int, loss_fn: LossFn = default_loss, seed: int = 0
                       ) -> dict[str, dict[str, float]]:
    r"""For each flat ``direction`` :math:`d` (over the parameters of :func:`parameter_groups`, in that order), the
    zeroth-order estimate of :math:`\langle \nabla L_\sigma, d/\|d\|\rangle` for the real quantized loss averaged
    over ``batches``, with its standard error. All directions share the same random perturbations."""
    names = [n for group in parameter_groups(model).values() for n, _ in group]
    closures = [quantized_loss_of(model, x, y, names, loss_fn, seed + i)[0] for i, (x, y) in enumerate(batches)]
    theta0 = quantized_loss_of(model, *batches[0], names, loss_fn, seed)[1]

    def loss(theta: Tensor) -> float:
        return sum(f(theta) for f in closures) / len(closures)

    u, diffs = _antithetic_samples(loss, theta0, sigma, n_directions, seed)
    flat_u = u.reshape(n_directions, -1).to(torch.float64)
    out = {}
    for key, d in directions.items():
        d = d.reshape(-1).to(torch.float64)
        if d.numel() != theta0.numel():
            raise ValueError(f"direction {key!r} has {d.numel()} entries; the model has {theta0.numel()} parameters")
        samples = diffs.to(torch.float64) * (flat_u @ (d / d.norm()))
        out[key] = {"estimate": float(samples.mean()), "se": float(samples.std() / n_directions**0.5)}
    return out
