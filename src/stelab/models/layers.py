"""Building blocks shared by the models: the pluggable activation, conv-BN-activation, and initialisation."""

from __future__ import annotations

import torch
from torch import nn

from ..activations import quantizers
from ..activations.config import QuantConfig
from ..activations.modules import QuantReLU
from ..errors import check_choice

#: Where a model's activations may be quantized: at every ReLU (every model), or at the inputs of the convs with a
#: float residual stream (models that take ``placement``, e.g. ResNet-20; :mod:`stelab.models.resnet`).
PLACEMENTS = ("relu", "conv_input")


def check_placement_fits(placement: str, quant: QuantConfig | None) -> None:
    """Raise ``ValueError`` unless ``placement`` is a valid one and fits ``quant``: ``conv_input`` quantizes ReLU
    outputs of any scale, so it needs a learned resolution (Lloyd's fixed one is made for N(0, 1) inputs) and an
    unsigned forward."""
    check_choice("activation placement", placement, PLACEMENTS)
    if placement != "conv_input" or quant is None:
        return
    if not quant.learn_alpha:
        raise ValueError("activation placement 'conv_input' quantizes the residual stream's unstandardised values, "
                         "for which Lloyd's fixed resolution (made for N(0, 1) inputs) does not fit: add "
                         "--learn-alpha (learn_alpha=True), whose start is fitted to data, or use the placement relu")
    if quantizers.get(quant.forward).signed:
        raise ValueError(f"activation placement 'conv_input' quantizes ReLU outputs (>= 0): forward {quant.forward!r} "
                         "is signed; use an unsigned one such as staircase or round")


def activation(quant: QuantConfig | None) -> nn.Module:
    """A float ``nn.ReLU`` when ``quant`` is None, else ``QuantReLU(config=quant)``; a fresh module per call so
    forward hooks and per-layer statistics can tell the layers apart."""
    return nn.ReLU() if quant is None else QuantReLU(config=quant)


def conv_bn_act(in_channels: int, out_channels: int, quant: QuantConfig | None, *, kernel_size: int = 3,
                stride: int = 1, padding: int | None = None) -> nn.Sequential:
    """``conv (no bias) -> BN(affine=False) -> activation``.

    The BN has no affine parameters so its output is standardised, roughly N(0, 1), which is what the fixed Lloyd
    resolution of the staircase is designed for; a conv bias would be cancelled by the BN's mean subtraction.
    """
    padding = kernel_size // 2 if padding is None else padding
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels, affine=False),
        activation(quant),
    )


def make_batchnorms_affine(model: nn.Module) -> list[str]:
    r"""Give every batch norm without affine parameters a learnable scale and shift, started at
    :math:`\gamma = 1, \beta = 0` so the network computes the same function; returns their names (in place).

    stelab's networks standardise each activation's input (``affine=False``) for the fixed Lloyd resolution. With a
    learned resolution a per-channel scale and shift lets each channel place its values on the layer's levels, as in
    the networks of the published low-bit results; this adds them when fine-tuning such a network (``stelab train
    --bn-affine``). The new parameters are ``<name>.weight`` and ``<name>.bias``, as a BN built affine would have."""
    changed = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.affine:
            like = m.running_mean if m.running_mean is not None else torch.empty(0)
            m.weight = nn.Parameter(torch.ones(m.num_features, device=like.device, dtype=like.dtype))
            m.bias = nn.Parameter(torch.zeros(m.num_features, device=like.device, dtype=like.dtype))
            m.affine = True
            changed.append(name)
    return changed


def init_weights(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation of every conv and linear weight (fan-in, ReLU gain), zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
