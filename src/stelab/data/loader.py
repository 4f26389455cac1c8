"""A data loader that keeps the whole data set as tensors on the training device.

MNIST (47 MB) and CIFAR-10 (150 MB) fit in any accelerator's memory as uint8, so batching, normalisation and
augmentation are a handful of tensor ops on the device: no worker pool, no host-to-device copy per batch.

Reproducibility: every random choice of an epoch (the order, the crop offsets and the flips) is drawn up front on
the CPU from a generator seeded by ``(seed, epoch)``, so it is a pure function of those two numbers, identical on
every device and for a run resumed at that epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PAD = 4  # pixels of zero padding for the random crop (the standard CIFAR-10 augmentation)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # SeedSequence hashes the pair, so distinct (seed, epoch) pairs get unrelated streams (no seed + epoch aliasing).
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def random_crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, pad: int = PAD) -> Tensor:
    """Batched zero-padded random crop and horizontal flip.

    ``images`` [B,C,H,W]; ``offsets`` [B,2] integer (row, col) positions of the crop in the padded image, each in
    ``0..2*pad``; ``flips`` [B] bool. Output pixel ``(i, j)`` of image ``b`` is padded pixel
    ``(offsets[b,0] + i, offsets[b,1] + j')`` with ``j' = W-1-j`` when flipped, else ``j``.
    """
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # [B,H]
    cols = torch.arange(w, device=images.device).expand(b, w)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[:, 1:]  # [B,W]
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: [B,H,W,C]; permuting back gives a channels_last
    # tensor for free.
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def normaliser(mean: Sequence[float], std: Sequence[float],
               device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """``(shift, scale)`` [1,C,1,1] float32 tensors with ``(pixel/255 - mean)/std == shift + pixel * scale``."""
    std_t = torch.tensor(std, dtype=torch.float32)
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(device)
    shift = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(1, -1, 1, 1).to(device)
    return shift, scale


def normalise(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``[N,C,H,W]`` -> float32 ``(pixel/255 - mean)/std`` on ``images``' device, bit for bit as the loader's
    batches (use it for evaluation sets so train and test inputs are normalised identically)."""
    shift, scale = normaliser(mean, std, images.device)
    return torch.addcmul(shift, images.float(), scale)


class DeviceLoader:
    """Iterate over ``(x float32 normalised [B,C,H,W], y int64 [B])`` batches of a uint8 image set held on ``device``.

    ``augment=True`` applies the 4-pixel zero-padded random crop and the horizontal flip (padding is black, i.e.
    zero pixels before normalisation, as in the usual torchvision pipeline). ``shuffle`` permutes each epoch.
    Iterating runs epoch ``self.epoch`` and then advances it by one; ``set_epoch(e)`` selects an epoch explicitly.
    With ``world_size > 1`` each epoch's permutation is cut into ``world_size`` disjoint equal slices (the tail that
    does not divide evenly is dropped) and rank ``rank`` iterates its slice. Without ``drop_last``, a last batch
    of a single sample is merged into the batch before it (``merges_last``; batch norm cannot train on one sample).
    """

    def __init__(self, images: Tensor, labels: Tensor, *, batch_size: int, shuffle: bool, augment: bool,
                 mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu", seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, channels_last: bool = False) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ValueError(f"mean and std need {channels} entries (std > 0), got mean={mean}, std={std}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self._shift, self._scale = normaliser(mean, std, self.device)  # one multiply-add per pixel
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.seed, self.rank, self.world_size, self.channels_last = seed, rank, world_size, channels_last
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        n = len(self.images)
        return n if self.world_size == 1 else n // self.world_size

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        if self.drop_last:
            return n // b
        return n // b if self.merges_last else -(-n // b)

    @property
    def merges_last(self) -> bool:
        """Whether the last batch, of a single sample, is merged into the one before (see :meth:`__iter__`)."""
        n, b = self.num_samples, self.batch_size
        return not self.drop_last and n > b and n % b == 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """This rank's sample indices of ``epoch`` and, with augmentation, their crop offsets and flips (on CPU)."""
        n = len(self.images)
        gen = _epoch_generator(self.seed, epoch)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        offsets = flips = None
        if self.augment:  # drawn for the full epoch so every rank's slice is consistent with the global plan
            offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=gen)
            flips = torch.rand(n, generator=gen) < 0.5
        if self.world_size > 1:
            per = self.num_samples
            part = slice(self.rank * per, (self.rank + 1) * per)
            order = order[part]
            offsets = offsets[part] if offsets is not None else None
            flips = flips[part] if flips is not None else None
        return order, offsets, flips

    def _normalise(self, images: Tensor) -> Tensor:
        x = torch.addcmul(self._shift, images.float(), self._scale)  # shift + pixel * scale
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order, offsets, flips = self.epoch_plan(self.epoch)
        order = order.to(self.device)
        if offsets is not None:
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        last = len(self) - 1
        for k in range(len(self)):
            # A last batch of one sample goes with the one before: batch norm cannot train on a single value per
            # channel (BatchNorm1d raises), and that error came after a whole epoch of work.
            end = len(order) if k == last and self.merges_last else (k + 1) * self.batch_size
            part = slice(k * self.batch_size, end)
            idx = order[part]
            images = self.images[idx]
            if offsets is not None:
                images = random_crop_flip(images, offsets[part], flips[part])
            yield self._normalise(images), self.labels[idx]
        self.epoch += 1
