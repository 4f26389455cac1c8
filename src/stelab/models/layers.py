"""Building blocks shared by the models: the pluggable activation, conv-BN-activation, and initialisation."""

from __future__ import annotations

from torch import nn

from ..activations.config import QuantConfig
from ..activations.modules import QuantReLU

#: Where a model's activations may be quantized: at every ReLU (every model), or at the inputs of the convs with a
#: float residual stream (models that take ``placement``, e.g. ResNet-20; :mod:`stelab.models.resnet`).
PLACEMENTS = ("relu", "conv_input")


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


def init_weights(model: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation of every conv and linear weight (fan-in, ReLU gain), zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
