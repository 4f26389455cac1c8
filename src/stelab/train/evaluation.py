"""Evaluating a finished run on its test images, as the run evaluated itself (``stelab compare``, Table 1's
first-1,000 accuracy). Apart from :mod:`stelab.train.runs` because it needs the training loop's mixed precision.

A run folder kept without its weights (the summaries committed under ``results/``) can still be compared when it
holds ``test_right.json``: which of its test images the run got right, recorded by :func:`right_or_recorded` the last
time its weights were evaluated (1 bit per image, about 1.7 kB for CIFAR-10's 10,000)."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import data
from ..io import read_json, write_json
from .checkpoint import resolve_checkpoint
from .loop import autocast
from .runs import load_model_from_run, load_split, read_config

RIGHT = "test_right.json"


def right_on_test(run_dir: str | Path, first: int | None = None, batch: int | None = None
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Which test images the run's model (last checkpoint, or ``model.pt``) gets right, as the run evaluated itself
    (on the CPU, in its precision, memory format and evaluation batch unless ``batch`` is given, eval mode): a
    boolean per image, with the images and labels. ``first=None`` takes the run's own test split (``--limit-test``
    applied); ``first=n`` the first ``n`` images of the data set's test split."""
    config = read_config(run_dir)
    if first is None:
        images, labels = load_split(config, "test")
    else:
        images, labels = data.load(config.dataset, config.data_dir, split="test")
        images, labels = images[:first], labels[:first]
    model = load_model_from_run(run_dir)
    fmt = torch.channels_last if config.resolved_channels_last("cpu") else torch.contiguous_format
    model.to(memory_format=fmt)
    mean, std = data.STATS[config.dataset]
    batch = config.eval_batch_size if batch is None else batch
    right = []
    with torch.no_grad(), autocast(torch.device("cpu"), config.precision):
        for i in range(0, len(images), batch):
            x = data.normalise(images[i:i + batch], mean, std).contiguous(memory_format=fmt)
            right.append(model(x).argmax(1) == labels[i:i + batch])
    return torch.cat(right), images, labels


def record_right(run_dir: str | Path, right: Tensor) -> Path:
    """Write ``test_right.json``: the run's right/wrong vector on its own test split, bit-packed in base64, with its
    length and accuracy (a reader's check, and a figure for people)."""
    bits = np.packbits(right.bool().numpy())
    return write_json(Path(run_dir) / RIGHT, {"images": int(right.numel()), "accuracy": float(right.float().mean()),
                                             "right": base64.b64encode(bits.tobytes()).decode("ascii")})


def recorded_right(run_dir: str | Path) -> Tensor:
    """The vector :func:`record_right` wrote; a damaged record raises ``ValueError`` saying so."""
    path = Path(run_dir) / RIGHT
    fix = "delete it and evaluate the run from its weights again"
    try:
        record = read_json(path)
        n, accuracy = int(record["images"]), float(record["accuracy"])
        bits = np.frombuffer(base64.b64decode(record["right"], validate=True), dtype=np.uint8)
        right = torch.from_numpy(np.unpackbits(bits, count=n).astype(bool))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a test_right record ({type(err).__name__}: {err}); {fix}") from None
    if len(bits) != (n + 7) // 8 or abs(float(right.float().mean()) - accuracy) > 1e-6:
        raise ValueError(f"{path} does not match its own length and accuracy; {fix}")
    return right


def right_or_recorded(run_dir: str | Path, batch: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`right_on_test` on the run's own test split when the folder has weights, recorded in ``test_right.json``
    (as the run evaluated itself, i.e. ``batch=None``); else the recorded vector with the split's images and labels.
    Neither raises ``FileNotFoundError`` saying what the folder lacks."""
    config = read_config(run_dir)  # a folder that is no run folder says so first
    if not _has_weights(run_dir):
        if not (Path(run_dir) / RIGHT).is_file():
            raise FileNotFoundError(f"{run_dir} has no weights (checkpoint.pt or model.pt) and no {RIGHT} record of an "
                                    "earlier evaluation; pass a run folder that has one of them")
        right = recorded_right(run_dir)
        images, labels = load_split(config, "test")
        if len(labels) != len(right):
            raise ValueError(f"{run_dir}/{RIGHT} covers {len(right)} test images but the run's test split has "
                             f"{len(labels)}; it was recorded from another split: evaluate the run from its weights")
        return right, images, labels
    right, images, labels = right_on_test(run_dir, batch=batch)
    if batch is None:
        try:
            record_right(run_dir, right)
        except OSError as err:  # a read-only folder: the evaluation stands, only its record is missing
            print(f"note: could not write {Path(run_dir) / RIGHT} ({err}); the result is unaffected, but a copy of "
                  "this folder without its weights will not compare", file=sys.stderr)
    return right, images, labels


def _has_weights(run_dir: str | Path) -> bool:
    try:
        resolve_checkpoint(run_dir)
    except FileNotFoundError:
        return False
    return True
