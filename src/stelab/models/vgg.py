"""VGG-11 for CIFAR-10 (32x32 inputs): eight ``conv3x3 -> BN -> act`` layers and five max pools, then one linear.

Configuration ``[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M]`` (a number is a conv 3x3, pad 1, with that
many output channels, no bias, followed by ``BN(affine=False)`` and the activation; ``M`` is a 2x2 max pool). The
five pools take 32x32 to 1x1, so the classifier is ``Linear(512, num_classes)``. 9,222,858 parameters for 10 classes.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..activations.config import QuantConfig
from .layers import conv_bn_act, init_weights

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, cfg: tuple = VGG11, quant: QuantConfig | None = None, num_classes: int = 10,
                 in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(conv_bn_act(channels, int(v), quant))
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def vgg11(quant: QuantConfig | None = None, num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(VGG11, quant, num_classes, in_channels)
