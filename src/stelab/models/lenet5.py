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
10 classes; the quantized model adds none. :func:`lenet5_caffe` is the 20-50-500 variant (model ``lenet5-caffe``).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..activations.config import QuantConfig
from .layers import activation, conv_bn_act, init_weights


class LeNet5(nn.Module):
    """LeNet-5; ``conv_widths``, ``fc_widths`` and ``first_padding`` select the variant (defaults: the classic
    6-16-120-84 network in the module docstring; :func:`lenet5_caffe` is the 20-50-500 one)."""

    def __init__(self, quant: QuantConfig | None = None, num_classes: int = 10, in_channels: int = 1,
                 image_size: int = 28, *, conv_widths: tuple[int, int] = (6, 16),
                 fc_widths: tuple[int, ...] = (120, 84), first_padding: int = 2) -> None:
        super().__init__()
        side = ((image_size + 2 * first_padding - 4) // 2 - 4) // 2  # conv -> pool -> conv(valid) -> pool
        if side < 1:
            raise ValueError(f"LeNet-5 needs images of at least {16 - 2 * first_padding}x{16 - 2 * first_padding} "
                             f"pixels, got image_size={image_size}")
        c1, c2 = conv_widths
        self.features = nn.Sequential(
            conv_bn_act(in_channels, c1, quant, kernel_size=5, padding=first_padding),
            nn.MaxPool2d(2),
            conv_bn_act(c1, c2, quant, kernel_size=5, padding=0),
            nn.MaxPool2d(2),
        )
        layers: list[nn.Module] = [nn.Flatten()]
        width = c2 * side * side
        for out in fc_widths:  # the classic net's indices: Linear 1, BN 2, act 3, Linear 4, ... (state dict keys)
            layers += [nn.Linear(width, out, bias=False), nn.BatchNorm1d(out, affine=False), activation(quant)]
            width = out
        self.classifier = nn.Sequential(*layers, nn.Linear(width, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def lenet5_caffe(quant: QuantConfig | None = None, num_classes: int = 10, **kwargs) -> LeNet5:
    """The widths of Caffe's LeNet example (20-50-500): conv 5x5 1->20 (no padding), pool, conv 5x5 20->50, pool,
    linear 800->500, linear 500->classes; 430.5k parameters against the classic net's 61.5k. Yin et al. (2019) do not
    give their LeNet-5's widths; this is the other widely used LeNet. The batch norm (``affine=False``) before
    every activation, and an activation after each convolution (Caffe's net has a ReLU after the first linear layer
    only), follow our LeNet-5 convention, so every hidden layer is quantized the same way in both variants."""
    return LeNet5(quant, num_classes, conv_widths=(20, 50), fc_widths=(500,), first_padding=0, **kwargs)
