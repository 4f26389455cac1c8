"""CIFAR-10 from the standard ``cifar-10-batches-py`` pickles, read with numpy.

Each batch file is a pickled dict with ``data`` (N x 3072 uint8: the 1024 red, then green, then blue pixels of a
32x32 image, row-major) and ``labels`` (N ints in 0..9). Pickles can run arbitrary code, so they are read with an
unpickler that only admits numpy's array reconstruction: a hostile file fails to load instead of executing.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .paths import DataFormatError, download_hint, find_data_dir, repair_hint

FOLDER = "cifar-10-batches-py"
FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocol 2 stores bytes under Python 3
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as ``(uint8 [N,3,32,32], int64 [N])``, validating its structure."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataFormatError(f"{path}: not a readable CIFAR-10 batch ({type(err).__name__}: {err}); the file is "
                              f"truncated or corrupt: {repair_hint('cifar10', path.parent.parent)}") from None
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = {"data", "labels"} - set(batch)
    if missing:
        raise DataFormatError(f"{path}: missing key(s) {sorted(missing)}; found {sorted(map(str, batch))}")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataFormatError(f"{path}: 'data' is {desc}, expected uint8 of shape (N, 3072)")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"{path}: 'labels' has shape {labels.shape} ({labels.dtype}), expected {len(data)} ints")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataFormatError(f"{path}: labels span {labels.min()}..{labels.max()}, outside 0..{NUM_CLASSES - 1}")
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def load_cifar10(data_dir: str | os.PathLike | None = None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` ("train": 50,000, "test": 10,000) as ``(uint8 [N,3,32,32], int64 [N])``."""
    if split not in FILES:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; valid choices: {', '.join(FILES)}")
    root = find_data_dir(data_dir)
    folder = root / FOLDER
    images, labels = [], []
    for name in FILES[split]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"CIFAR-10 file {path} not found; {download_hint('cifar10', root)}")
        x, y = read_batch(path)
        images.append(x)
        labels.append(y)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def write_batch(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``(uint8 [N,3,32,32], ints [N])`` as a CIFAR-10 batch pickle (bytes keys, as the originals), atomically."""
    from ..io import atomic_open

    images = np.ascontiguousarray(images, dtype=np.uint8)
    batch = {b"batch_label": b"stelab", b"labels": [int(v) for v in labels],
             b"data": images.reshape(len(images), -1), b"filenames": [b"%d.png" % i for i in range(len(images))]}
    path = Path(path)
    with atomic_open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return path
