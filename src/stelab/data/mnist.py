"""MNIST from the standard idx files (``train-images-idx3-ubyte[.gz]`` ...), read with numpy.

idx format (LeCun): a big-endian header ``0x00 0x00 <type> <ndim>`` followed by ``ndim`` big-endian uint32 sizes and
then the data. MNIST uses type 0x08 (unsigned byte): images have ndim 3 (N, 28, 28), labels ndim 1 (N,).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .paths import DataFormatError, download_hint, find_data_dir, repair_hint

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Layouts seen in the wild: stelab's and the shared copy (MNIST/), torchvision's (MNIST/raw), and flat.
SUBDIRS = ("MNIST", "MNIST/raw", "mnist", "")
IMAGE_SIZE = 28
NUM_CLASSES = 10


def _locate(root: Path, stem: str) -> Path | None:
    for sub in SUBDIRS:
        for name in (stem + ".gz", stem):
            path = root / sub / name
            if path.is_file():
                return path
    return None


def _data_root(path: Path) -> Path:
    """The data root holding an MNIST file, i.e. the ``--data-dir`` to name: its folder less the SUBDIRS layout."""
    parts = path.parent.parts
    for sub in SUBDIRS:
        tail = Path(sub).parts
        if tail and parts[-len(tail):] == tail:
            return Path(*parts[:-len(tail)])
    return path.parent


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as err:  # BadGzipFile is an OSError; a cut-off .gz raises EOFError
        raise DataFormatError(f"{path}: cannot decompress ({err}); the file is truncated or corrupt: "
                              f"{repair_hint('mnist', _data_root(path))}") from None


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read one idx file of unsigned bytes with ``ndim`` dimensions into a (read-only view of a) uint8 array."""
    path = Path(path)
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(f"{path}: only {len(data)} bytes, shorter than an idx header; the file is truncated: "
                              f"{repair_hint('mnist', _data_root(path))}")
    zero, dtype_code, file_ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code != 0x08 or file_ndim != ndim:
        raise DataFormatError(f"{path}: bad idx magic number 0x{data[:4].hex()} (expected 0x000008{ndim:02x}: "
                              f"unsigned bytes, {ndim} dimension(s)); this is not an MNIST idx file of this kind")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise DataFormatError(f"{path}: header says shape {shape} ({expected} bytes) but the file has {len(data)} "
                              f"bytes; it is truncated or corrupt: {repair_hint('mnist', _data_root(path))}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(data_dir: str | os.PathLike | None = None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` ("train": 60,000, "test": 10,000) as ``(uint8 [N,1,28,28], int64 [N])``."""
    if split not in FILES:
        raise ValueError(f"unknown MNIST split {split!r}; valid choices: {', '.join(FILES)}")
    root = find_data_dir(data_dir)
    arrays = []
    for stem, ndim in zip(FILES[split], (3, 1)):
        path = _locate(root, stem)
        if path is None:
            raise FileNotFoundError(f"MNIST file {stem}[.gz] not found under {root} (looked in "
                                    f"{', '.join(str(root / s) for s in SUBDIRS)}); {download_hint('mnist', root)}")
        arrays.append((path, read_idx(path, ndim)))
    (image_path, images), (label_path, labels) = arrays
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataFormatError(f"{image_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise DataFormatError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataFormatError(f"{label_path}: label {int(labels.max())} is outside 0..{NUM_CLASSES - 1}")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an idx file (gzip-compressed when ``path`` ends in ``.gz``), atomically.

    The inverse of :func:`read_idx`: handy for subsets of MNIST and for tests that need small idx files.
    """
    from ..io import atomic_open

    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload += array.tobytes()
    path = Path(path)
    with atomic_open(path, "wb") as f:
        f.write(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)
    return path
