"""Exact per-channel statistics of uint8 image sets, from pixel histograms (no float copy of the data set)."""

from __future__ import annotations

import torch


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 ``[N,C,H,W]`` images in [0, 1] units.

    Each channel's 256-bin histogram gives the moments exactly in float64:
    ``mean = sum_v v h(v) / n`` and ``var = sum_v (v - mean)^2 h(v) / n`` (v = pixel / 255).
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [N,C,H,W], got {images.dtype} {tuple(images.shape)}")
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        n = hist.sum()
        mean = (values * hist).sum() / n
        means.append(float(mean))
        stds.append(float(((values - mean) ** 2 * hist).sum().div(n).sqrt()))
    return tuple(means), tuple(stds)
