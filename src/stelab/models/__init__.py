"""The networks of Yin et al. (2019): LeNet-5 (MNIST), VGG-11 and ResNet-20 (CIFAR-10), with pluggable activations.

``build(name, quant=None, num_classes=10)``: with ``quant=None`` every activation is a float ``nn.ReLU``; with a
:class:`stelab.QuantConfig` every one is ``QuantReLU(config=quant)``. Float and quantized twins have the same
state dict keys, so a trained float model initialises its quantized twin with ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import QuantConfig
from ..errors import unknown_name
from .lenet5 import LeNet5, lenet5_caffe
from .resnet import BasicBlock, CifarResNet, resnet20
from .vgg import VGG, vgg11

_BUILDERS: dict[str, Callable[..., nn.Module]] = {"lenet5": LeNet5, "lenet5-caffe": lenet5_caffe, "vgg11": vgg11,
                                                  "resnet20": resnet20}
#: The data set each model is made for (its input shape).
DEFAULT_DATASET = {"lenet5": "mnist", "lenet5-caffe": "mnist", "vgg11": "cifar10", "resnet20": "cifar10"}
#: Epochs of the paper's protocol for each model (Yin et al. 2019: 50 for LeNet-5 on MNIST, 200 on CIFAR-10).
PAPER_EPOCHS = {"lenet5": 50, "lenet5-caffe": 50, "vgg11": 200, "resnet20": 200}


def names() -> list[str]:
    return list(_BUILDERS)


def check_dataset(name: str, dataset: str) -> None:
    """Raise ``ValueError`` unless model ``name`` is built for ``dataset``'s images.

    Each model is the paper's network for one input shape (LeNet-5: 1x28x28 MNIST; VGG-11, ResNet-20: 3x32x32
    CIFAR-10). They are not adapted to the other data set: VGG-11's five pools cannot take 28x28 images, and a
    LeNet-5 on CIFAR-10 is no model of the paper, so a mismatch is an error before anything is built or written.
    """
    if name not in _BUILDERS:
        raise unknown_name("model", name, _BUILDERS)
    expected = DEFAULT_DATASET[name]
    if dataset != expected:
        fits = " or ".join(m for m, d in DEFAULT_DATASET.items() if d == dataset) or "none"
        raise ValueError(f"model {name} is built for {expected} images, not {dataset}; use --dataset {expected}, "
                         f"or a model built for {dataset}: {fits}")


def build(name: str, quant: QuantConfig | None = None, num_classes: int = 10, *, channels_last: bool = False,
          **kwargs) -> nn.Module:
    """Model ``name`` (see :func:`names`) with float (``quant=None``) or quantized activations.

    ``channels_last`` converts the weights to NHWC memory format (feed it NHWC inputs too, e.g. from
    ``DeviceLoader(channels_last=True)``). Extra keyword arguments go to the model (``in_channels``, ...).
    """
    if name not in _BUILDERS:
        raise unknown_name("model", name, _BUILDERS)
    if quant is not None and not isinstance(quant, QuantConfig):
        raise TypeError(f"quant must be a stelab.QuantConfig or None, got {type(quant).__name__}")
    model = _BUILDERS[name](quant=quant, num_classes=num_classes, **kwargs)
    return model.to(memory_format=torch.channels_last) if channels_last else model


__all__ = [
    "DEFAULT_DATASET", "PAPER_EPOCHS", "VGG", "BasicBlock", "CifarResNet", "LeNet5", "build", "check_dataset",
    "lenet5_caffe", "names", "resnet20", "vgg11",
]
