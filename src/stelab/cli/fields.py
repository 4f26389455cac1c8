"""Command-line flags derived from the config dataclasses: a flag's type, default, help, choices and metavar come
from its field's declaration (``dataclasses.field`` metadata: ``help``, ``choices``, ``metavar``, ``negatable``), so
no flag is re-listed by hand and ``--help`` cannot drift from the config.

The mapping: ``bool`` -> ``--flag`` (``--flag/--no-flag`` when ``negatable``), ``tuple[float, ...]`` -> ``--flag F
...`` (any number), ``tuple[str, ...]`` -> a repeatable ``--flag``, ``int``/``float``/``str`` (or ``None``) -> one
value. A flag not given leaves the field at its default (:func:`values`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def _base(hint: Any) -> tuple[Any, Any]:
    """``(outer type, element type)`` of a field's annotation, with ``None`` stripped from a union."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _base(args[0])
    if origin is tuple:
        return tuple, args[0]
    return hint, None


def add_flags(group: Any, cls: type, names: tuple[str, ...] | list[str], *, prefix: str = "",
              all_not_given: bool = False) -> None:
    """Add a flag for each field ``names`` of dataclass ``cls``: ``--<prefix><name>`` with dest ``<prefix><name>``
    (dashes as underscores). ``all_not_given``: every default is None, so :func:`values` can tell a given flag from
    an absent one (the ``--weight-*`` flags, which turn weight quantization on)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name in names:
        f, meta = fields[name], fields[name].metadata
        outer, element = _base(hints[name])
        flag = "--" + (prefix + name).replace("_", "-")
        text = meta.get("help")
        text = text() if callable(text) else text
        kw: dict[str, Any] = {"dest": (prefix + name).replace("-", "_"), "help": text or None}
        default = None if all_not_given else f.default
        if outer is bool:
            negatable = meta.get("negatable") or all_not_given
            kw["action"] = argparse.BooleanOptionalAction if negatable else "store_true"
            kw["default"] = None if negatable else default
        elif outer is tuple and element is str:
            kw.update(action="append", default=None, metavar=meta.get("metavar"))
        elif outer is tuple:
            kw.update(type=element, nargs="*", default=None if default is None else list(default),
                      metavar=meta.get("metavar"))
        else:
            kw.update(type=outer, default=default, metavar=meta.get("metavar"))
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
        group.add_argument(flag, **kw)


def values(args: argparse.Namespace, cls: type, names: tuple[str, ...] | list[str], *, prefix: str = "",
           given_only: bool = False) -> dict[str, Any]:
    """The fields ``names`` of ``cls`` read from ``args`` (flags absent from ``args`` are left out); a flag not
    given (None) gives the field's default, or is left out with ``given_only``; lists become tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for name in names:
        dest = (prefix + name).replace("-", "_")
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if value is None:
            if given_only:
                continue
            value = fields[name].default
        out[name] = tuple(value) if isinstance(value, list) else value
    return out
