"""How one activation is quantized: :class:`QuantConfig` (a :class:`stelab.io.JsonConfig`) and the learned
resolution's gradient rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import check_alpha, check_bits, check_choice
from ..io import JsonConfig
from ..ste import DEFAULT_STE

# The gradient rules of a learned resolution (stelab.activations.ops implements them; docs/quantizers.md: the math).
ALPHA_RULES = ("mean", "ae", "pact", "min", "lsq")


def check_learned(forward: str, alpha_rule: str) -> None:
    """``sign`` levels are ``+-alpha``: only the ``ae`` rule (``dq/dalpha = q(x)/alpha = +-1``) is right for it."""
    check_choice("alpha rule", alpha_rule, ALPHA_RULES)
    if forward == "sign" and alpha_rule != "ae":
        raise ValueError(f"a learned alpha with forward 'sign' needs alpha_rule 'ae' (dq/dalpha = +-1), got "
                         f"{alpha_rule!r}; valid choices for sign: ae")


def _forward_names() -> list[str]:
    from . import quantizers

    return quantizers.names()


def _field(default: Any, help: str | Callable[[], str]) -> Any:
    # help: a text, or a function giving it when the flag is made (registries that users extend)
    return dataclasses.field(default=default, metadata={"help": help})


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

    # metadata["help"]: the one description of each field, which `stelab train` shows as its flag's help
    bits: int = _field(2, "activation bits (default 2; ignored with --float)")
    ste: str = _field(DEFAULT_STE, f"STE name, e.g. identity, relu, clipped_relu (default {DEFAULT_STE}; see `stelab "
                                   "info`)")
    forward: str = _field("staircase", lambda: f"forward quantizer: {' | '.join(_forward_names())} (default staircase)")
    alpha: float | None = _field(None, "resolution (default: Lloyd's for the bits); with --learn-alpha its initial "
                                       "value")
    learn_alpha: bool = _field(False, "train the activations' resolution with the --alpha-rule gradient (one per "
                                      "activation)")
    alpha_rule: str = _field("mean", f"gradient of a learned resolution: {' | '.join(ALPHA_RULES)} (default mean; "
                                     "with --learn-alpha only; docs/quantizers.md)")
    check_nan: bool = _field(True, "raise on NaN inputs (one reduction and host sync per call; off in training)")

    def __post_init__(self) -> None:
        from .. import ste as ste_registry
        from . import quantizers
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
