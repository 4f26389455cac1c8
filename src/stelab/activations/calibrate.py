r"""A learned resolution's start fitted to data, for quantizers whose inputs are not standardised.

Lloyd's resolution, the default start, is made for a ReLU of N(0, 1) inputs (what stelab's networks feed their
quantizers: the output of a batch norm without affine parameters). A quantizer elsewhere (the residual stream of a
ResNet in the ``conv_input`` placement) sees values of any scale; its start is then LSQ's initial step
(Esser et al. 2019, arXiv 1902.08153, as used for activations) on one batch:

.. math:: \alpha_0 = \frac{2\,\langle |x| \rangle}{\sqrt{Q_P}}, \qquad Q_P = 2^b - 1,

the mean taken over the batch's inputs to that quantizer. The batch goes through the model in eval mode (running
statistics unchanged, no gradient), so nothing but the fitted resolutions changes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .modules import QuantReLU


def wants_data_start(module: nn.Module) -> bool:
    """A learned-resolution :class:`QuantReLU` marked ``init_from_data`` whose resolution was not loaded from a
    state dict (a trained one, e.g. the start of a progressive run or a resumed checkpoint, keeps its own)."""
    return (isinstance(module, QuantReLU) and module.config.learn_alpha and getattr(module, "init_from_data", False)
            and not getattr(module, "alpha_loaded", False) and not module.quantizer.signed)


@torch.no_grad()
def init_alphas_from_data(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Set the resolution of every quantizer :func:`wants_data_start` to LSQ's initial step on the inputs it sees
    when ``model`` runs the batch ``x``; returns ``{module name: alpha}`` in the order the forward reaches them
    (empty, and no forward, when none wants a start from data).

    They are fitted in that order, one forward each, so every one is fitted to the inputs it sees with the
    resolutions before it already fitted: after the call, each alpha is exactly LSQ's step on its own inputs. Call
    it on the same batch in every process of a distributed run so that they agree.
    """
    targets = {name: m for name, m in model.named_modules() if wants_data_start(m)}
    fitted: dict[str, float] = {}
    training = model.training
    model.eval()
    try:
        while len(fitted) < len(targets):
            name, mean_abs = _first_unfitted(model, x, targets, fitted)
            if not math.isfinite(mean_abs) or mean_abs <= 0:
                raise ValueError(f"{name}: its inputs on the calibration batch have mean |x| = {mean_abs:g}, so "
                                 "no resolution can be fitted to them; give the layer an explicit alpha instead")
            fitted[name] = 2 * mean_abs / math.sqrt(2**targets[name].bits - 1)
            targets[name].alpha.fill_(fitted[name])
    finally:
        model.train(training)
    return fitted


def _first_unfitted(model: nn.Module, x: Tensor, targets: dict[str, QuantReLU],
                    fitted: dict[str, float]) -> tuple[str, float]:
    """The first quantizer of ``targets`` not in ``fitted`` that a forward of ``x`` reaches, and its mean |input|."""
    seen: dict[str, float] = {}

    def hook(name: str):
        def record(_module: nn.Module, args: tuple) -> None:
            if name not in fitted and not seen:
                seen[name] = float(args[0].float().abs().mean())
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in targets.items()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError(f"the calibration forward never reached {sorted(set(targets) - set(fitted))}")
    return next(iter(seen.items()))
