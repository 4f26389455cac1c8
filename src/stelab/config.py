"""Typed configuration dataclasses that round-trip to JSON.

Every config in stelab derives from :class:`JsonConfig`: ``to_dict``/``from_dict`` and ``to_json``/``from_json``
give back an equal object, and ``from_dict`` rejects unknown keys with the list of valid ones, so a typo in a
config file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import check_alpha, check_bits, check_choice
from .ste import DEFAULT_STE

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin for dataclasses: JSON round-trip with strict keys. Validation lives in ``__post_init__``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        cls.check_fields(data)
        return cls(**data)

    @classmethod
    def check_fields(cls, names: Iterable[str]) -> None:
        """Raise ``ValueError`` listing the valid fields if any of ``names`` is not a field of this config."""
        # __dataclass_fields__ rather than dataclasses.fields(): torch.compile traces this (stelab.quantize) and
        # does not handle fields() of a class.
        valid = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        unknown = set(names) - set(valid)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; valid fields: {', '.join(valid)}")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# The gradient rules of a learned resolution (stelab.ops implements them; docs/quantizers.md gives the math).
ALPHA_RULES = ("mean", "ae", "pact", "min", "lsq")


def check_learned(forward: str, alpha_rule: str) -> None:
    """``sign`` levels are ``+-alpha``: only the ``ae`` rule (``dq/dalpha = q(x)/alpha = +-1``) is right for it."""
    check_choice("alpha rule", alpha_rule, ALPHA_RULES)
    if forward == "sign" and alpha_rule != "ae":
        raise ValueError(f"a learned alpha with forward 'sign' needs alpha_rule 'ae' (dq/dalpha = +-1), got "
                         f"{alpha_rule!r}; valid choices for sign: ae")


@dataclass(frozen=True)
class QuantConfig(JsonConfig):
    """How one activation is quantized: forward quantizer, resolution, and STE.

    ``ste`` is a registered name, optionally with parameters: ``"leaky_relu(slope=0.05)"``.
    ``alpha=None`` means the forward's default (Lloyd's half-Gaussian step; 1 for sign).
    ``learn_alpha`` makes the resolution a parameter trained with the ``alpha_rule`` gradient (``ae`` only for sign).
    ``check_nan`` makes the module raise on NaN inputs (one reduction and host sync per call).

    This is the one declaration of a quantized activation's fields and their defaults: :class:`stelab.QuantReLU`,
    :func:`stelab.quantize` and :func:`stelab.quantize_activations` take ``config`` and/or these fields by keyword
    (:meth:`merged`).
    """

    bits: int = 2
    ste: str = DEFAULT_STE
    forward: str = "staircase"
    alpha: float | None = None
    learn_alpha: bool = False
    alpha_rule: str = "mean"
    check_nan: bool = True

    def __post_init__(self) -> None:
        from . import quantizers
        from . import ste as ste_registry
        check_bits(self.bits)
        quantizers.get(self.forward).check_bits(self.bits)
        if not isinstance(self.ste, str):
            raise TypeError(f"ste must be a registered name (str) so the config stays JSON, got {self.ste!r}")
        levels = ste_registry.get(self.ste).params.get("levels")  # raises with the valid names
        if levels is not None and levels != 2**self.bits - 1:
            # an STE built on the staircase's L levels (dsq, gaussian_smoothed) must see this layer's L
            raise ValueError(f"STE {self.ste!r} is built for {int(levels)} levels, but {self.bits} bits have "
                             f"{2**self.bits - 1}; give levels={2**self.bits - 1} in the STE (e.g. "
                             f"'{self.ste.split('(')[0]}(levels={2**self.bits - 1})')")
        if self.alpha is not None:
            object.__setattr__(self, "alpha", check_alpha(self.alpha))
        check_choice("alpha rule", self.alpha_rule, ALPHA_RULES)
        for flag in ("learn_alpha", "check_nan"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.learn_alpha:
            check_learned(self.forward, self.alpha_rule)

    @classmethod
    def merged(cls, config: QuantConfig | None = None, /, **fields: Any) -> QuantConfig:
        """``config`` (default ``QuantConfig()``) with ``fields`` replaced, validated; an unknown field name raises
        ``ValueError`` listing the valid ones. ``QuantConfig.merged(bits=4) == QuantConfig(bits=4)``."""
        if config is not None and not isinstance(config, QuantConfig):
            raise TypeError(f"config must be a stelab.QuantConfig or None, got {type(config).__name__} ({config!r}); "
                            "give the fields by keyword instead, e.g. bits=2, ste='relu'")
        cls.check_fields(fields)
        if config is None:
            return cls(**fields)
        return dataclasses.replace(config, **fields) if fields else config
