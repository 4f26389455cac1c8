"""The one syntax for lists of STEs on every command line: ``--stes A B C`` (space-separated STE specs, each as
``stelab.ste.get`` reads it, e.g. ``leaky_relu(slope=0.05)``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def ste_spec(text: str) -> str:
    """One STE spec; a comma outside parentheses means the old comma-separated form, refused with the fix."""
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            fixed = " ".join(part.strip() for part in _split_top(text))
            raise argparse.ArgumentTypeError(f"STEs are separated by spaces, not commas: --stes {fixed}")
    return text.strip()


def _split_top(text: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in (*out, cur) if p.strip()]


def add_stes_argument(p: argparse.ArgumentParser, default: Sequence[str], help: str, flag: str = "--stes") -> None:
    """``--stes NAME [NAME ...]`` with ``default``; the help says the syntax and the default."""
    shown = " ".join(default) if default else "see above"
    p.add_argument(flag, nargs="+", type=ste_spec, default=list(default), metavar="STE",
                   help=f"{help} (space-separated specs, e.g. relu 'leaky_relu(slope=0.05)'; default: {shown})")
