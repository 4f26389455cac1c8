"""Evaluating a finished run on its test images, as the run evaluated itself (``stelab compare``, Table 1's
first-1,000 accuracy). Apart from :mod:`stelab.train.runs` because it needs the training loop's mixed precision."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from .. import data
from .loop import autocast
from .runs import load_model_from_run, load_split, read_config


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
