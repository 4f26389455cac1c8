"""Small random image sets with the shapes of the real ones, for tests and benchmarks that must run without data."""

from __future__ import annotations

import torch

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
NUM_CLASSES = 10


def synthetic(name_like: str = "mnist", n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images shaped like ``name_like``'s and int64 labels in 0..9, a pure function of ``seed``.

    Each class has its own random template and an image is its class template plus noise, so the set is learnable:
    a 2-step training test sees the loss fall instead of fitting pure noise.
    """
    if name_like not in SHAPES:
        raise ValueError(f"unknown data set {name_like!r}; valid choices: {', '.join(SHAPES)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen = torch.Generator().manual_seed(seed)
    shape = SHAPES[name_like]
    templates = torch.rand((NUM_CLASSES, *shape), generator=gen) * 255
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    noise = torch.randn((n, *shape), generator=gen) * 40
    images = (templates[labels] + noise).round().clamp(0, 255).to(torch.uint8)
    return images, labels
