"""The vocabulary of a training configuration: its sections, the choices of its fields, and :func:`_f`, which
declares a field with its section and command-line help (:class:`stelab.train.config.TrainConfig` uses it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..models import PAPER_EPOCHS

MODEL_EPOCHS = PAPER_EPOCHS  # the paper's protocol, defined with the models
DATASETS = ("mnist", "cifar10")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("step", "cosine")
#: ``sgd``: plain SGD with momentum on the latent weights (the STE's coarse gradient); ``bcgd``/``binaryrelax``: that
#: SGD wrapped by :class:`stelab.weights.optim.BCGD` / :class:`~stelab.weights.optim.BinaryRelax` (they need quantized
#: weights).
OPTIMIZERS = ("sgd", "bcgd", "binaryrelax")
# --channels-last when not given: the faster memory format per (device type, model), measured with
# benchmarks/train_step.py (BENCHMARKS.md). On CUDA, channels_last is what cuDNN's tensor-core kernels want.
# lenet5-caffe is not measured on CPU: NCHW (False, the default of the lookup) as for the other LeNet.
CHANNELS_LAST_DEFAULT = {("cpu", "lenet5"): False, ("cpu", "vgg11"): True, ("cpu", "resnet20"): True,
                         ("cuda", "lenet5"): True, ("cuda", "lenet5-caffe"): True, ("cuda", "vgg11"): True,
                         ("cuda", "resnet20"): True}


# The flat fields config.json files had before the quantization moved into ``quant`` (a QuantConfig); read files
# with them convert (:meth:`TrainConfig.from_dict`), "bits": null meaning the float model.
LEGACY_QUANT_FIELDS = ("bits", "ste", "forward", "alpha")


#: The sections of a training configuration, in config.json's order, with what each holds.
SECTIONS = {
    "model": "model and data: architecture, data set, initial weights, seed, subsets",
    "schedule": "epochs, learning rate and its schedule, batch size",
    "activations": "how the activations are quantized (a QuantConfig, None: float) and STE parameter schedules",
    "weights": "how the weights are quantized (a WeightQuantConfig, None: float) and whether the first and last "
               "layers are",
    "optimizer": "SGD's settings and the quantized-weight wrappers (BCGD, BinaryRelax)",
    "runtime": "where and how fast it runs, what it logs and keeps: a resume may change these, except the two that "
               "change the numbers (precision, channels_last)",
}


def _f(section: str, default: Any, help: str | Callable[[], str], *, choices: tuple[str, ...] | None = None,
       metavar: str | None = None, negatable: bool = False, numbers: bool = False) -> Any:
    """A field of :class:`TrainConfig` with its ``section``, command-line ``help`` (``choices``, ``metavar``;
    ``negatable``: a ``--no-`` form too) and, for a runtime field, whether it changes the numbers (``numbers``: then a
    resume may not change it)."""
    meta = {"section": section, "help": help, "choices": choices, "metavar": metavar, "negatable": negatable,
            "numbers": numbers}
    return dataclasses.field(default=default, metadata=meta)


def _flag(field: str) -> str:
    """`` (--batch-size)``: the flag of a field, appended to errors raised from Python and command line alike."""
    return f" (--{field.replace('_', '-')})"
