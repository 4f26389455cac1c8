r"""Scheduling an STE parameter over a run: one mechanism for every parameter of every STE (IR-Net's ``t`` upward,
ReSTE's ``o`` from 1 to 3, DSQ's ``shape`` and the noise ``width`` toward 0, a user's own).

A schedule ``PARAM=START:END[:SHAPE]`` gives the parameter's value at progress :math:`p \in [0, 1]` through the run:

* ``linear``: :math:`v = v_0 + (v_1 - v_0)\,p`;
* ``geometric``: :math:`v = v_0 (v_1 / v_0)^p` (IR-Net's form for ``t``; :math:`v_0, v_1` of one sign, nonzero);
* ``cosine``: :math:`v = v_1 + (v_0 - v_1)(1 + \cos \pi p)/2`.

Training applies the schedules once per epoch, before it, with :math:`p = (e - 1)/(E - 1)` for epoch :math:`e` of
:math:`E` (the first epoch at the start value, the last at the end value; :math:`p = 0` for a one-epoch run): a
function of the epoch alone, so a resumed run continues the same schedule. Every quantized activation of the model
gets the STE of its config with the scheduled parameters replaced (:func:`apply`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .. import ste as ste_registry
from ..ste.probe import probe

SHAPES = ("linear", "geometric", "cosine")


@dataclass(frozen=True)
class SteSchedule:
    """One parameter's schedule: ``param`` from ``start`` to ``end`` along ``shape`` (module docstring)."""

    param: str
    start: float
    end: float
    shape: str = "linear"

    def __post_init__(self) -> None:
        if not (isinstance(self.param, str) and self.param.isidentifier()):
            raise ValueError(f"an STE schedule names a parameter (an identifier), got {self.param!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown schedule shape {self.shape!r}; valid: {', '.join(SHAPES)}")
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise ValueError(f"schedule of {self.param}: start and end must be finite, got {self.start}, {self.end}")
        if self.shape == "geometric" and not self.start * self.end > 0:
            raise ValueError(f"a geometric schedule of {self.param} needs start and end of one sign, nonzero; got "
                             f"{self.start} and {self.end} (use linear or cosine)")

    @classmethod
    def parse(cls, text: str) -> SteSchedule:
        """``"t=0.1:10:geometric"`` -> ``SteSchedule("t", 0.1, 10.0, "geometric")``."""
        param, sep, rest = str(text).partition("=")
        parts = rest.split(":")
        if not sep or len(parts) not in (2, 3):
            raise ValueError(f"an STE schedule is PARAM=START:END[:SHAPE] (SHAPE: {', '.join(SHAPES)}), e.g. "
                             f"t=0.1:10:geometric; got {text!r}")
        try:
            start, end = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"STE schedule {text!r}: START and END must be numbers") from None
        return cls(param.strip(), start, end, *(parts[2:] or ["linear"]))

    def __str__(self) -> str:
        return f"{self.param}={self.start:g}:{self.end:g}:{self.shape}"

    def value(self, progress: float) -> float:
        p = min(max(float(progress), 0.0), 1.0)
        if self.shape == "linear":
            return self.start + (self.end - self.start) * p
        if self.shape == "geometric":
            return self.start * (self.end / self.start) ** p
        return self.end + (self.start - self.end) * (1 + math.cos(math.pi * p)) / 2


def parse_all(specs: tuple[str, ...] | list[str]) -> tuple[SteSchedule, ...]:
    """The schedules of ``specs``; one parameter may be scheduled once."""
    schedules = tuple(SteSchedule.parse(s) for s in specs)
    params = [s.param for s in schedules]
    if len(set(params)) != len(params):
        raise ValueError(f"an STE parameter is scheduled twice: {params}")
    return schedules


def scheduled(ste: str, schedules: tuple[SteSchedule, ...], progress: float) -> ste_registry.STE:
    """The STE ``ste`` (a spec) with each scheduled parameter at its value at ``progress``; an unknown parameter
    raises ``ValueError`` naming the STE's parameters."""
    base = ste_registry.get(ste)
    params = {**dict(base.params), **{s.param: s.value(progress) for s in schedules}}
    return ste_registry.get(base.name, **params)


def check(ste: str, schedules: tuple[SteSchedule, ...]) -> None:
    """Raise ``ValueError`` (before any training) if a schedule names no parameter of ``ste`` or gives a value the
    STE rejects at either end."""
    for p in (0.0, 1.0):
        candidate = scheduled(ste, schedules, p)
        if candidate.derivative_fn is not None:  # a table was checked when built; a function is probed here
            probe(candidate)


def progress(epoch: int, epochs: int) -> float:
    """:math:`p = (e - 1)/(E - 1)`, 0 for a one-epoch run (module docstring)."""
    return (epoch - 1) / (epochs - 1) if epochs > 1 else 0.0


def apply(model: nn.Module, schedules: tuple[SteSchedule, ...], progress: float) -> str | None:
    """Give every quantized activation of ``model`` its config's STE with the scheduled parameters at ``progress``;
    returns the STE's label (``None`` when there is nothing to schedule)."""
    from .modules import QuantReLU

    if not schedules:
        return None
    label = None
    for module in model.modules():
        if isinstance(module, QuantReLU):
            module.set_ste(scheduled(module.config.ste, schedules, progress))
            label = module.ste.label
    return label


__all__ = ["SHAPES", "SteSchedule", "apply", "check", "parse_all", "progress", "scheduled"]
