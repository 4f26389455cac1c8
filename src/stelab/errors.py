"""Argument checking shared by every public entry point: one place that formats "what was wrong, what is valid"."""

from __future__ import annotations

import math
from collections.abc import Iterable


def unknown_name(kind: str, name: object, valid: Iterable[str]) -> ValueError:
    """The error for a name that is not registered, listing the valid choices."""
    choices = ", ".join(sorted(valid))
    return ValueError(f"unknown {kind} {name!r}; valid choices: {choices}")


def check_bits(bits: object, low: int = 1, high: int = 16) -> int:
    """``bits`` itself if it is an int (not a bool) in ``low..high``; TypeError / ValueError saying so otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int in {low}..{high}, got {bits!r} ({type(bits).__name__})")
    if not low <= bits <= high:
        raise ValueError(f"bits must be in {low}..{high}, got {bits}")
    return bits


def check_alpha(alpha: object) -> float:
    """``alpha`` as a float if it is a positive finite number in ``[2**-100, 2**100]`` (so that it and every level are
    normal float32 numbers); TypeError / ValueError saying so otherwise."""
    try:
        value = float(alpha)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"alpha must be a positive finite number, got {alpha!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"alpha must be a positive finite number, got {alpha!r}")
    if not 2.0**-100 <= value <= 2.0**100:
        raise ValueError(f"alpha must be in [2**-100, 2**100] so every level is a normal float32, got {alpha!r}")
    return value


def check_choice(kind: str, value: object, valid: Iterable[str]) -> str:
    """``value`` if it is one of ``valid``; otherwise the :func:`unknown_name` error listing them."""
    valid = tuple(valid)
    if value not in valid:
        raise unknown_name(kind, value, valid)
    return value  # type: ignore[return-value]
