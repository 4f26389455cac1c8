"""``WeightQuantConfig``: how one layer's weights are quantized (forward quantizer, bits, scale, STE)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import ste as ste_registry
from ..errors import check_alpha, check_choice
from ..io import JsonConfig
from ..ste import STE
from . import quantizers
from .quantizers import GRANULARITIES, SCALE_RULES

#: The default weight STE: the identity (BinaryConnect's gradient on the latent weights, without its clip).
DEFAULT_WEIGHT_STE = "identity"


def weight_ste_names() -> list[str]:
    """Registered STEs usable for weights: those that are not zero below 0 (:func:`check_weight_ste`)."""
    return [n for n in ste_registry.names() if not ste_registry.get(n).zero_below]


def check_weight_ste(name: str | STE) -> STE:
    """The STE ``name``, if it can train weights.

    The registry's STEs are ``mu'(x; top)`` of an activation. Weights are signed, so ``mu'`` is used on both sides
    of 0: identity (1 everywhere) and hardtanh (1 on ``(-top, top]``) are symmetric, approx_sign and swish_sign are
    even functions of ``x``, leaky_relu is asymmetric (``slope`` for ``w <= 0``) and allowed as such. An STE that is
    zero below 0 (relu, clipped_relu, log_tailed_relu, ...) would give every non-positive weight a zero gradient
    for ever, so it is rejected, with the list of valid ones.
    """
    estimator = ste_registry.get(name)
    if estimator.zero_below:
        raise ValueError(f"STE {estimator.label!r} is zero for x <= 0, so no negative or zero weight would ever get a "
                         f"gradient; valid choices for weights: {', '.join(weight_ste_names())}")
    return estimator


def _field(default: Any, help: str | Callable[[], str], metavar: str | None = None) -> Any:
    # help: a text, or a function giving it when the flag is made (registries that users extend)
    return dataclasses.field(default=default, metadata={"help": help, "metavar": metavar})


@dataclass(frozen=True)
class WeightQuantConfig(JsonConfig):
    """How a layer's weights are quantized; every field is checked and a bad one raises listing the valid choices.

    * ``quantizer``: ``binary``, ``ternary`` or ``uniform`` (:mod:`stelab.weights.quantizers`, with the math).
    * ``bits``: ``None`` is the quantizer's own (1 for binary, 2 for ternary, 4 for uniform; uniform takes 2..16).
    * ``ste``: a registered STE name not zero below 0 (:func:`check_weight_ste`), e.g. ``"hardtanh"``; its
      ``top`` is the largest level, ``Q_P * s``.
    * ``granularity``: ``"tensor"`` (one scale) or ``"channel"`` (one per output channel, dim 0).
    * ``scale_rule``: ``None`` is the quantizer's default (``mean`` for binary/ternary, ``max`` for uniform);
      ``fixed`` uses ``scale``; ``lsq`` learns the scale (:mod:`stelab.quant.lsq`), starting at ``scale`` when
      given, else at the data rule's value. A ``scale`` with ``scale_rule=None`` means ``fixed``.
    """

    # metadata["help"]: the one description of each field, shown by `stelab train --help` for its --weight-* flag
    quantizer: str = _field("uniform", lambda: f"{' | '.join(quantizers.names())} (default uniform)")
    bits: int | None = _field(None, "quantize the Linear/Conv2d weights to B bits; turns weight quantization on "
                                    "(uniform: 2..16; 1 picks binary; ternary: 2 with --weight-quantizer ternary)",
                              metavar="B")
    ste: str = _field(DEFAULT_WEIGHT_STE, f"STE of the weights, one not zero below 0 (default {DEFAULT_WEIGHT_STE}; "
                                          "e.g. hardtanh)")
    granularity: str = _field("channel", f"{' | '.join(GRANULARITIES)}: one scale per tensor or per output channel "
                                         "(default channel)")
    scale_rule: str | None = _field(None, f"{' | '.join(SCALE_RULES)} (default: mean for binary/ternary, max for "
                                          "uniform; lsq learns the scale, and is the one to use for uniform at 2-3 "
                                          "bits: docs/weights.md)")
    scale: float | None = _field(None, "the scale of --weight-scale-rule fixed, or lsq's initial step")

    def __post_init__(self) -> None:
        q = quantizers.get(self.quantizer)
        if self.bits is not None:
            q.check_bits(self.bits)
        if not isinstance(self.ste, str):
            raise TypeError(f"ste must be a registered name (str) so the config stays JSON, got {self.ste!r}")
        check_weight_ste(self.ste)
        check_choice("granularity", self.granularity, GRANULARITIES)
        if self.scale_rule is not None:
            q.check_rule(self.scale_rule)
        if self.scale is not None:
            object.__setattr__(self, "scale", check_alpha(self.scale))
            if self.rule not in ("fixed", "lsq"):
                raise ValueError(f"a scale is given only with scale_rule 'fixed' or 'lsq' (its initial value), not "
                                 f"with {self.rule!r}, which computes it from the weights")
        elif self.rule == "fixed":
            raise ValueError("scale_rule 'fixed' needs a scale (a positive number)")

    @property
    def effective_bits(self) -> int:
        return quantizers.get(self.quantizer).default_bits if self.bits is None else self.bits

    @property
    def rule(self) -> str:
        """The scale rule used: ``scale_rule``, or ``fixed`` when only a scale is given, or the quantizer's default."""
        if self.scale_rule is not None:
            return self.scale_rule
        return "fixed" if self.scale is not None else quantizers.get(self.quantizer).default_rule

    @property
    def learned(self) -> bool:
        return self.rule == "lsq"

    @classmethod
    def merged(cls, config: WeightQuantConfig | None = None, /, **fields: Any) -> WeightQuantConfig:
        """``config`` (default ``WeightQuantConfig()``) with ``fields`` replaced and validated; an unknown field
        raises ``ValueError`` listing the valid ones."""
        if config is not None and not isinstance(config, WeightQuantConfig):
            raise TypeError(f"config must be a WeightQuantConfig or None, got {type(config).__name__}")
        cls.check_fields(fields)
        if config is None:
            return cls(**fields)
        return dataclasses.replace(config, **fields) if fields else config
