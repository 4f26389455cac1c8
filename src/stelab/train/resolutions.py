"""The learned resolutions of a model (activation ``alpha``, weight ``weight_scale``) as the training loop checks
them: on the device, folded into the loss check's one sync (every step on the CPU, every 25 on a GPU), instead of a
host read per layer and call."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .checkpoint import unwrap


def learned_resolutions(model: nn.Module) -> list[Tensor]:
    """The learned activation resolutions (``alpha``) and weight steps (``weight_scale``) of ``model``."""
    return [p for name, p in unwrap(model).named_parameters() if name.rsplit(".", 1)[-1] in ("alpha", "weight_scale")]


def resolutions_ok(params: list[Tensor]) -> Tensor:
    """On the device, no sync: whether every learned resolution is positive and finite (a 0-d bool tensor)."""
    if not params:
        return torch.tensor(True)
    return torch.stack([((p.detach() > 0) & (p.detach() < float("inf"))).all() for p in params]).all()


def bad_resolutions(model: nn.Module) -> str:
    """``"; bad: <names>"``: the learned resolutions (``alpha``, ``weight_scale``) that are not positive and finite."""
    bad = [name for name, p in unwrap(model).named_parameters()
           if name.rsplit(".", 1)[-1] in ("alpha", "weight_scale")
           and not bool(((p.detach() > 0) & (p.detach() < float("inf"))).all())]
    return f"; bad: {', '.join(bad)}" if bad else ""
