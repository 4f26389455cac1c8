"""LeNet-5 (LeCun et al. 1998) with a batch-norm layer before every activation, as Yin et al. (2019) use it.

Layers for a 1x28x28 input (``image_size=28``); every ``act`` is float ReLU or a quantized activation:

====================================================  ============
layer                                                 output
====================================================  ============
conv 5x5, 1->6, pad 2, no bias; BN(6); act            6 x 28 x 28
max pool 2x2                                          6 x 14 x 14
conv 5x5, 6->16, no bias; BN(16); act                 16 x 10 x 10
max pool 2x2                                          16 x 5 x 5
flatten; linear 400->120, no bias; BN1d(120); act     120
linear 120->84, no bias; BN1d(84); act                84
linear 84->num_classes (with bias)                    num_classes
====================================================  ============

All four BNs have ``affine=False`` (standardised activation inputs for the fixed Lloyd resolution). Pooling comes
after the activation, so a max pool of staircase outputs is still on the staircase. 61,480 trainable parameters for
10 classes; the quantized model adds none.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..config import QuantConfig
from .layers import activation, conv_bn_act, init_weights


class LeNet5(nn.Module):
    def __init__(self, quant: QuantConfig | None = None, num_classes: int = 10, in_channels: int = 1,
                 image_size: int = 28) -> None:
        super().__init__()
        side = (image_size // 2 - 4) // 2  # after conv(pad 2) -> pool -> conv(valid) -> pool
        if side < 1:
            raise ValueError(f"LeNet-5 needs images of at least 12x12 pixels, got image_size={image_size}")
        self.features = nn.Sequential(
            conv_bn_act(in_channels, 6, quant, kernel_size=5, padding=2),
            nn.MaxPool2d(2),
            conv_bn_act(6, 16, quant, kernel_size=5, padding=0),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120, bias=False), nn.BatchNorm1d(120, affine=False), activation(quant),
            nn.Linear(120, 84, bias=False), nn.BatchNorm1d(84, affine=False), activation(quant),
            nn.Linear(84, num_classes),
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
