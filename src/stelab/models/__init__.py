"""The networks of Yin et al. (2019): LeNet-5 (MNIST), VGG-11 and ResNet-20 (CIFAR-10), with pluggable activations.

``build(name, quant=None, num_classes=10)``: with ``quant=None`` every activation is a float ``nn.ReLU``; with a
:class:`stelab.QuantConfig` every one is ``QuantReLU(config=quant)``. Float and quantized twins have the same
state dict keys, so a trained float model initialises its quantized twin with ``load_state_dict``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from ..activations.config import QuantConfig
from ..errors import unknown_name
from .layers import PLACEMENTS, check_placement_fits
from .lenet5 import LeNet5, lenet5_caffe
from .resnet import BasicBlock, CifarResNet, resnet20
from .vgg import VGG, vgg11

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
#: The data set each model is made for (its input shape).
DEFAULT_DATASET: dict[str, str] = {}
#: Epochs of the paper's protocol for each model (Yin et al. 2019: 50 for LeNet-5 on MNIST, 200 on CIFAR-10).
PAPER_EPOCHS: dict[str, int] = {}


def register(name: str, builder: Callable[..., nn.Module], *, dataset: str, epochs: int,
             overwrite: bool = False) -> None:
    """Register a model: ``builder(quant=..., num_classes=..., **kwargs)`` returns it with float (``quant=None``) or
    quantized activations; ``dataset`` is the data set it is made for, ``epochs`` its full schedule. It is then a
    valid ``--model`` of every command (``train``, ``reproduce``, ``diagnose``, ``card``) and ``TrainConfig.model``."""
    if name in _BUILDERS and not overwrite:
        raise ValueError(f"model {name!r} is already registered; pass overwrite=True to replace it")
    _BUILDERS[name], DEFAULT_DATASET[name], PAPER_EPOCHS[name] = builder, dataset, epochs


register("lenet5", LeNet5, dataset="mnist", epochs=50)
register("lenet5-caffe", lenet5_caffe, dataset="mnist", epochs=50)
register("vgg11", vgg11, dataset="cifar10", epochs=200)
register("resnet20", resnet20, dataset="cifar10", epochs=200)


def describe() -> str:
    """The registered models by data set, e.g. ``lenet5, lenet5-caffe (mnist) | vgg11, resnet20 (cifar10)``."""
    datasets = dict.fromkeys(DEFAULT_DATASET.values())
    return " | ".join(f"{', '.join(m for m, d in DEFAULT_DATASET.items() if d == ds)} ({ds})" for ds in datasets)


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


def placements(name: str) -> tuple[str, ...]:
    """The activation placements model ``name`` offers: ``relu`` always; all of :data:`PLACEMENTS` when its builder
    takes a ``placement`` argument."""
    if name not in _BUILDERS:
        raise unknown_name("model", name, _BUILDERS)
    return PLACEMENTS if "placement" in inspect.signature(_BUILDERS[name]).parameters else ("relu",)


def check_placement(name: str, placement: str, quant: QuantConfig | None = None) -> None:
    """Raise ``ValueError`` unless model ``name`` offers activation ``placement`` (naming the models that do) and
    ``placement`` fits ``quant`` (:func:`stelab.models.layers.check_placement_fits`)."""
    check_placement_fits(placement, quant)
    if placement not in placements(name):
        offering = ", ".join(m for m in _BUILDERS if placement in placements(m))
        raise ValueError(f"model {name} quantizes its activations at every ReLU only (its ReLUs already feed its "
                         f"convs); placement {placement!r} is offered by: {offering}")


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
    "DEFAULT_DATASET", "PAPER_EPOCHS", "PLACEMENTS", "VGG", "BasicBlock", "CifarResNet", "LeNet5", "build",
    "check_dataset", "check_placement", "describe", "lenet5_caffe", "names", "placements", "register", "resnet20",
    "vgg11",
]
