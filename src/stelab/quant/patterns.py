"""Glob patterns on qualified module names, shared by the conversions of activations
(:mod:`stelab.activations.convert`) and of weights (:mod:`stelab.weights.convert`): which modules a pattern selects,
and per-pattern config overrides.

A pattern that selects nothing, or an override naming no config field, is an error listing what is valid: a typo
would otherwise quantize the wrong layers (or the right ones the wrong way) without a word.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

C = TypeVar("C")


def as_list(patterns: Iterable[str] | str | None) -> list[str] | None:
    """``None`` stays ``None``; one pattern or an iterable of them becomes a list (a generator is read once here, not
    used up by the checks)."""
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def matches(name: str, patterns: Iterable[str] | str | None) -> bool:
    """Whether ``name`` matches any of ``patterns`` (``fnmatch``, case-sensitive); ``None`` matches nothing."""
    return any(fnmatch.fnmatchcase(name, p) for p in (as_list(patterns) or ()))


def check_patterns(names: list[str], checks: Iterable[tuple[str, Iterable[str] | None]], what: str) -> None:
    """Raise ``ValueError`` for the first pattern of ``checks`` (``(kind, patterns)`` pairs) that matches none of
    ``names``, listing them; ``what`` names the kind of module (``"activation module"``)."""
    for kind, patterns in checks:
        for pattern in patterns or ():
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise ValueError(f"{kind} pattern {pattern!r} matches no {what}; the candidates are: "
                                 f"{', '.join(names) or 'none'}")


def check_overrides(overrides: Mapping[str, Any] | None, config_type: type) -> None:
    """Every override is a ``config_type`` or a mapping of its fields (``config_type.check_fields`` lists them)."""
    for pattern, change in (overrides or {}).items():
        if isinstance(change, config_type):
            continue
        if not isinstance(change, Mapping):
            raise TypeError(f"overrides[{pattern!r}] must be a {config_type.__name__} or a mapping of its fields, got "
                            f"{type(change).__name__}")
        try:
            config_type.check_fields(change)  # type: ignore[attr-defined]
        except ValueError as err:
            raise ValueError(f"overrides[{pattern!r}]: {err}") from None


def apply_overrides(name: str, config: C, overrides: Mapping[str, Any] | None) -> C:
    """``config`` with every override whose pattern matches ``name`` applied in order (later patterns win): a whole
    config replaces it, a mapping changes those fields."""
    for pattern, change in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            config = change if isinstance(change, type(config)) else config.replace(**dict(change))  # type: ignore
    return config
