"""Data sets as uint8 tensors, and a loader that batches, normalises and augments them on the training device.

``load("mnist" | "cifar10", data_dir=None, split="train")`` -> ``(uint8 [N,C,H,W], int64 [N])``;
``DeviceLoader(images, labels, batch_size=..., shuffle=..., augment=..., mean=STATS[name][0], std=STATS[name][1])``
yields normalised float32 batches. ``synthetic(...)`` gives look-alike random sets for tests without data.
``find_data_dir`` looks at the argument, ``$STELAB_DATA``, ``<repo>/../shared/data`` and ``./data`` in that order.
"""

from __future__ import annotations

import os

import torch

from ..errors import unknown_name
from .cifar10 import load_cifar10
from .loader import DeviceLoader, normalise, random_crop_flip
from .mnist import load_mnist
from .paths import ENV_VAR, DataFormatError, find_data_dir
from .stats import channel_stats
from .synthetic import SHAPES, synthetic

DATASETS = ("mnist", "cifar10")
SPLITS = ("train", "test")
NUM_CLASSES = {"mnist": 10, "cifar10": 10}
# Per-channel mean and std of the training images in [0, 1] units (``channel_stats`` of the training splits; the
# test suite recomputes them from the real files when they are present).
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.13066048,), (0.30810780,)),
    "cifar10": ((0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784)),
}
_LOADERS = {"mnist": load_mnist, "cifar10": load_cifar10}


def load(name: str, data_dir: str | os.PathLike | None = None,
         split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Data set ``name`` ("mnist" | "cifar10"), ``split`` ("train" | "test") as ``(uint8 [N,C,H,W], int64 [N])``."""
    if name not in _LOADERS:
        raise unknown_name("data set", name, DATASETS)
    return _LOADERS[name](data_dir, split)


__all__ = [
    "DATASETS",
    "ENV_VAR",
    "NUM_CLASSES",
    "SHAPES",
    "SPLITS",
    "STATS",
    "channel_stats",
    "DataFormatError",
    "DeviceLoader",
    "find_data_dir",
    "load",
    "load_cifar10",
    "load_mnist",
    "normalise",
    "random_crop_flip",
    "synthetic",
]
