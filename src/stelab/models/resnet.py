"""ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2) with option-A (parameter-free) shortcuts.

``conv3x3(3->16) -> BN -> act``, then three stages of three basic blocks with 16, 32 and 64 channels (the first
block of stages 2 and 3 has stride 2), global average pool, ``Linear(64, num_classes)``. A basic block is

    out = act( BN2(conv3x3(act(BN1(conv3x3(x))))) + shortcut(x) )

where the option-A shortcut is the identity, or, when the block halves the resolution and doubles the channels,
``x[:, :, ::2, ::2]`` zero-padded with ``planes // 4`` channels on each side. The BNs directly before an activation
(the stem's and BN1) have ``affine=False`` so the quantizer sees standardised inputs; BN2 is followed by the
residual sum rather than an activation and keeps its affine scale and shift, which lets each block learn the scale
of what it adds to the residual stream. 269,018 parameters for 10 classes, 672 of them BN2's.

Where the activations are quantized (``placement``):

* ``"relu"`` (default): every ReLU is quantized, as in Yin et al.'s networks, so the residual stream itself
  carries quantized values (the stem's and every block's output).
* ``"conv_input"``: the input of every 3x3 conv after the stem is quantized and the ReLUs that make the residual
  stream stay float: a block is ``out = relu(BN2(conv3x3(q(BN1(conv3x3(q_in(x)))))) + shortcut(x))`` with
  ``q_in``, ``q`` quantized and ``x`` (float, non-negative) also taken by the shortcut. This is where published
  low-bit CIFAR-10 ResNet-20 results quantize (APoT's public code quantizes each conv's input inside the conv
  and keeps the residual stream float, verified in yhhhli/APoT_Quantization ``CIFAR10/models``). Every conv but
  the stem still computes on quantized inputs; the stem's input (the image) and the classifier's (the pooled
  stream) stay float, as in that code. ``q_in`` sees the stream's unstandardised values, for which Lloyd's
  half-Gaussian resolution is no guide: it needs a learned resolution, whose start is fitted to data
  (``init_from_data``, :func:`stelab.activations.init_alphas_from_data`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..activations.config import QuantConfig
from .layers import activation, check_placement_fits, conv_bn_act, init_weights


def _input_quantizer(quant: QuantConfig | None) -> nn.Module:
    """``q_in`` of the conv_input placement: a learned-resolution quantizer started from data; nothing when float
    (its input is a ReLU's output, so a float ReLU there would be the identity)."""
    if quant is None:
        return nn.Identity()
    q = activation(quant)
    q.init_from_data = True  # read by stelab.activations.init_alphas_from_data
    return q


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, quant: QuantConfig | None,
                 placement: str = "relu") -> None:
        super().__init__()
        check_placement_fits(placement, quant)
        self.quant_in = _input_quantizer(quant) if placement == "conv_input" else nn.Identity()
        self.branch1 = conv_bn_act(in_planes, planes, quant, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = activation(quant if placement == "relu" else None)
        self.subsample = stride != 1 or in_planes != planes
        if self.subsample and (stride != 2 or planes != 2 * in_planes):
            raise ValueError("option-A shortcuts only halve the resolution while doubling the channels")
        self.pad = (planes - in_planes) // 2

    def shortcut(self, x: Tensor) -> Tensor:
        if not self.subsample:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn2(self.conv2(self.branch1(self.quant_in(x)))) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int = 3, quant: QuantConfig | None = None, num_classes: int = 10,
                 in_channels: int = 3, widths: tuple[int, int, int] = (16, 32, 64), placement: str = "relu") -> None:
        super().__init__()
        check_placement_fits(placement, quant)
        self.stem = conv_bn_act(in_channels, widths[0], quant if placement == "relu" else None)
        stages = []
        in_planes = widths[0]
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, quant, placement))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


def resnet20(quant: QuantConfig | None = None, num_classes: int = 10, in_channels: int = 3,
             placement: str = "relu") -> CifarResNet:
    return CifarResNet(3, quant, num_classes, in_channels, placement=placement)
