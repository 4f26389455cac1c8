r"""Knowledge distillation from a float teacher (``TrainConfig.distill``, ``--distill``).

With the student's logits :math:`z_s`, the teacher's :math:`z_t` (the float network of the same architecture, in
evaluation mode, no gradient), temperature :math:`T` and weight :math:`w`, the training loss is

.. math::  \ell = (1 - w)\,\mathrm{CE}(z_s, y) + w\,T^2\,\mathrm{KL}\big(\mathrm{softmax}(z_t/T)\,\|\,
           \mathrm{softmax}(z_s/T)\big),

the KL term averaged over the batch; :math:`T^2` keeps its gradient on the scale of the cross-entropy's as
:math:`T` changes (Hinton, Vinyals & Dean 2015, as commonly stated; only that formulation is used here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_weights


def load_teacher(model_name: str, path: str | Path, device: torch.device, channels_last: bool) -> nn.Module:
    """The float ``model_name`` with the weights of ``path`` (a checkpoint file or run folder), frozen, in evaluation
    mode on ``device``. A checkpoint of another model (or of a quantized run) raises
    :class:`stelab.train.checkpoint.CheckpointError` naming it, before anything is trained."""
    from .. import models

    teacher = models.build(model_name, quant=None, num_classes=10)
    load_weights(teacher, path)
    teacher.to(device).eval().requires_grad_(False)
    return teacher.to(memory_format=torch.channels_last) if channels_last else teacher


def distill_loss(ce: Tensor, student: Tensor, teacher: nn.Module, inputs: Tensor, config: Any) -> Tensor:
    """The training loss with ``config``'s distillation (temperature, weight), from the cross-entropy ``ce`` of the
    ``student`` logits, and the ``teacher``'s logits on ``inputs`` (no gradient)."""
    with torch.no_grad():
        logits = teacher(inputs)
    return kd_loss(ce, student, logits, config.distill_temperature, config.distill_weight)


def kd_loss(ce: Tensor, student: Tensor, teacher: Tensor, temperature: float, weight: float) -> Tensor:
    """:math:`(1 - w)\\,\\mathrm{CE} + w T^2 \\mathrm{KL}` (module docstring) from the cross-entropy ``ce`` already
    computed and the two sets of logits; the KL in float32 whatever the autocast dtype."""
    t = temperature
    log_p = F.log_softmax(student.float() / t, dim=1)
    log_q = F.log_softmax(teacher.float() / t, dim=1)
    kl = F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
    return (1.0 - weight) * ce + weight * t * t * kl
