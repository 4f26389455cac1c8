"""Argument checking shared by every public entry point: one place that formats "what was wrong, what is valid"."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable


class ResolutionError(ValueError):
    """A learned resolution (an activation's alpha, a weight's LSQ step) left the positive finite numbers during
    training: the training loop records the run as diverged (with this message) instead of crashing."""


def first_line(err: BaseException) -> str:
    """An exception as one line: a ValueError's own message, anything else prefixed by its type."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text if isinstance(err, ValueError) and text else f"{type(err).__name__}: {text}"


def unknown_name(kind: str, name: object, valid: Iterable[str]) -> ValueError:
    """The error for a name that is not registered, listing the valid choices (and the nearest, for a typo)."""
    valid = sorted(valid)
    near = difflib.get_close_matches(name, valid, n=1, cutoff=0.6) if isinstance(name, str) else []
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ValueError(f"unknown {kind} {name!r}; valid choices: {', '.join(valid)}{hint}")


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
