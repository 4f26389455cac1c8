"""Typed configuration dataclasses that round-trip to JSON.

Every config in stelab derives from :class:`JsonConfig`: ``to_dict``/``from_dict`` and ``to_json``/``from_json``
give back an equal object, and ``from_dict`` rejects unknown keys with the list of valid ones, so a typo in a
config file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import check_alpha, check_bits, check_choice

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin for dataclasses: JSON round-trip with strict keys. Validation lives in ``__post_init__``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; valid fields: {sorted(names)}")
        return cls(**data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class QuantConfig(JsonConfig):
    """How one activation is quantized: forward quantizer, resolution, and STE.

    ``ste`` is a registered name, optionally with parameters: ``"leaky_relu(slope=0.05)"``.
    ``alpha=None`` means the forward's default (Lloyd's half-Gaussian step; 1 for sign).
    ``learn_alpha`` makes the resolution a parameter trained with the ``alpha_rule`` gradient (``ae`` only for sign).
    ``check_nan`` makes the module raise on NaN inputs (one reduction and host sync per call).
    """

    bits: int = 2
    ste: str = "clipped_relu"
    forward: str = "staircase"
    alpha: float | None = None
    learn_alpha: bool = False
    alpha_rule: str = "mean"
    check_nan: bool = True

    def __post_init__(self) -> None:
        from . import quantizers
        from . import ste as ste_registry
        from .ops import ALPHA_RULES, check_learned

        check_bits(self.bits)
        quantizers.get(self.forward).check_bits(self.bits)
        if not isinstance(self.ste, str):
            raise TypeError(f"ste must be a registered name (str) so the config stays JSON, got {self.ste!r}")
        ste_registry.get(self.ste)  # raises with the valid names
        if self.alpha is not None:
            object.__setattr__(self, "alpha", check_alpha(self.alpha))
        check_choice("alpha rule", self.alpha_rule, ALPHA_RULES)
        for flag in ("learn_alpha", "check_nan"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.learn_alpha:
            check_learned(self.forward, self.alpha_rule)
