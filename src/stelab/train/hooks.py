"""Training hooks: what :func:`stelab.train.train` calls during a run, and how a hook reaches worker processes.

The protocol (:class:`TrainHook`) is small on purpose: an object with an int ``every`` and a keyword-only call

    ``hook(*, step, epoch, model, inputs, targets, loss_fn) -> dict | None``

made on rank 0 after every ``every``-th optimizer step (``step`` counts optimizer steps from 1 over the whole run,
``epoch`` from 1; ``model`` is the plain model, not its DDP or compiled wrapper, in training mode; ``inputs`` and
``targets`` the batch just trained on; ``loss_fn`` the training loss). A returned dict becomes a
``{"kind": "hook", "step", "epoch", **record}`` line of the run's ``metrics.jsonl``. A hook may change the model
(tests poison a weight to check divergence handling); the loop does not protect it.

The training package knows no concrete hook: the caller builds them (``stelab train --diagnose-every N`` builds
:class:`stelab.diagnostics.DiagnosticsHook`). Worker processes of a multi-process run cannot receive objects, so the
launcher hands them :class:`HookSpec` s instead: an importable factory and JSON keyword arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class TrainHook(Protocol):
    """See the module docstring."""

    every: int

    def __call__(self, *, step: int, epoch: int, model: nn.Module, inputs: Tensor, targets: Tensor,
                 loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Mapping[str, Any] | None: ...


def check_hooks(hooks: Iterable[Any]) -> list[TrainHook]:
    """``hooks`` as a list, each checked to have a positive int ``every`` and to be callable."""
    out = list(hooks)
    for hook in out:
        every = getattr(hook, "every", None)
        if not callable(hook) or not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise TypeError(f"a training hook must be callable with an int attribute every >= 1, got {hook!r}; "
                            "see stelab.train.hooks")
    return out


def run_hooks(hooks: list[TrainHook], *, step: int, epoch: int, model: nn.Module, inputs: Tensor, targets: Tensor,
              loss_fn: Callable[[Tensor, Tensor], Tensor]) -> list[dict[str, Any]]:
    """Call the hooks due at ``step``; their records, ready for ``metrics.jsonl``."""
    records = []
    for hook in hooks:
        if step % hook.every == 0:
            out = hook(step=step, epoch=epoch, model=model, inputs=inputs, targets=targets, loss_fn=loss_fn)
            if out:
                records.append({"kind": "hook", "step": step, "epoch": epoch, **out})
    return records


@dataclass(frozen=True)
class HookSpec:
    """A hook by name: ``factory`` is ``"package.module:attribute"`` (a class or function returning a hook) and
    ``kwargs`` its JSON keyword arguments. ``HookSpec("stelab.diagnostics:DiagnosticsHook", {"every": 100})``."""

    factory: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> TrainHook:
        module, sep, attr = self.factory.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"hook factory must be 'package.module:attribute', got {self.factory!r}")
        (hook,) = check_hooks([getattr(importlib.import_module(module), attr)(**self.kwargs)])
        return hook

    def to_dict(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HookSpec:
        return cls(data["factory"], dict(data.get("kwargs", {})))
