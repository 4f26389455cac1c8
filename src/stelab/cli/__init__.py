"""The ``stelab`` command line. Each sub-command lives in its own module ``stelab.cli.<name>`` that defines
``add_parser(subparsers)``; the parser it adds sets ``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order `stelab --help` lists them.
COMMANDS = ("info", "data", "train", "reproduce", "classify", "theory", "symmetry", "diagnose")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stelab", description="Straight-through estimators: train and study them.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"stelab.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Bad user input surfaces as a one-line message, not a traceback.
        print(f"stelab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
