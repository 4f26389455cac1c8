"""The learned resolutions of a model (activation ``alpha``, weight ``weight_scale``) as the training loop checks
them: on the device, folded into the loss check's one sync (every 25 steps on a GPU), instead of a host read per
layer and call. Those on a device of :data:`PER_CALL_CHECKED` are checked by every call already (reading them there
is no sync), so the loop leaves them out and adds nothing to the CPU's training step."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .checkpoint import unwrap

#: Device types on which the op and the LSQ weight step check their learned value at every call.
PER_CALL_CHECKED = ("cpu",)


def _named(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    return ((name, p) for name, p in unwrap(model).named_parameters()
            if name.rsplit(".", 1)[-1] in ("alpha", "weight_scale"))


def _valid(p: Tensor) -> Tensor:
    return ((p.detach() > 0) & (p.detach() < float("inf"))).all()


def learned_resolutions(model: nn.Module) -> list[Tensor]:
    """The learned resolutions of ``model`` no call checks (those off the :data:`PER_CALL_CHECKED` devices)."""
    return [p for _, p in _named(model) if p.device.type not in PER_CALL_CHECKED]


def resolutions_ok(params: list[Tensor]) -> Tensor:
    """On the device, no sync: whether every one of ``params`` (not empty) is positive and finite (a 0-d bool)."""
    return torch.stack([_valid(p) for p in params]).all()


def healthy(loss_sum: Tensor, params: list[Tensor]) -> bool:
    """The loop's one sync: the loss sum is finite and every one of ``params`` (:func:`learned_resolutions`) valid."""
    ok = torch.isfinite(loss_sum)
    return bool(ok & resolutions_ok(params) if params else ok)


def bad_resolutions(model: nn.Module) -> str:
    """``"; bad: <names>"``: the learned resolutions (``alpha``, ``weight_scale``) that are not positive and finite."""
    bad = [name for name, p in _named(model) if not bool(_valid(p))]
    return f"; bad: {', '.join(bad)}" if bad else ""


def optimizer_groups(model: nn.Module, lr: float, weight_decay: float, step_lr_scale: float = 1.0,
                     step_weight_decay: float | None = None) -> list[dict]:
    """The optimizer's parameter groups: one of every parameter when the learned steps train as the weights do
    (the defaults), else the other parameters at ``lr`` and ``weight_decay``, then the learned steps (``alpha``,
    ``weight_scale``) at ``step_lr_scale * lr`` and ``step_weight_decay`` (``weight_decay`` when None)."""
    decay = weight_decay if step_weight_decay is None else step_weight_decay
    params = list(model.parameters())
    if step_lr_scale == 1.0 and decay == weight_decay:
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}]
    steps = {id(p) for _, p in _named(model)}
    return [{"params": [p for p in params if id(p) not in steps], "lr": lr, "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in steps], "lr": lr * step_lr_scale, "weight_decay": decay}]
