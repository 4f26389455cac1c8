"""The ``stelab`` command line. Each sub-command lives in its own module ``stelab.cli.<name>`` that defines
``add_parser(subparsers)``; the parser it adds sets ``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

# Sub-commands (modules of this package), in the order `stelab --help` lists them, with their one-line help: here,
# so that `stelab --help` lists them without importing any (each loads torch).
SUMMARY = {
    "info": "list registered STEs, forward quantizers and default resolutions",
    "data": "download the data sets or check the local copies",
    "train": "train a float or quantized model (activations; weights with --weight-bits)",
    "reproduce": "reproduce Table 1 or the instability experiment of Yin et al. (2019)",
    "classify": "monotone STEs: coarse gradient descent on non-linearly-separable classes",
    "theory": "the two-linear-layer theory lab of Yin et al. (2019): report + plots",
    "symmetry": "scale symmetry and its breaking by the clipped-ReLU STE (report)",
    "diagnose": "gradient fidelity of STEs (coarse vs true gradient) for a trained model",
    "export": "export a trained run to ONNX (standard QDQ, exact QONNX, or float)",
    "card": "grade STEs: the three papers' results and real networks, a ranking and a recommendation",
    "compare": "is a run better than a baseline? paired accuracy difference and McNemar's test",
}
COMMANDS = tuple(SUMMARY)


_RST = re.compile(r":(?:math|mod|class|func|meth|data|attr):`([^`]*)`|``([^`]*)``")


def plain(text: str) -> str:
    """Docstring text as a terminal shows it: ``x`` and :role:`x` markup reduced to x."""
    return _RST.sub(lambda m: (m.group(1) if m.group(1) is not None else m.group(2)).lstrip("~"), text)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and help without RST markup; every option's default shown unless its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain(action.help or "")
        default = action.default
        if (action.option_strings and "default" not in text and "%(default)" not in text
                and default not in (None, False, True, argparse.SUPPRESS, [], ())
                and not isinstance(action, (argparse._VersionAction, argparse._HelpAction))):
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
            text += f" (default: {shown.replace('%', '%%')})"
        return text

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs["formatter_class"] = HelpFormatter  # every command: defaults shown, no RST markup
        super().__init__(*args, **kwargs)
        # taken off the command line by main() before parsing (take_imports); declared here for --help
        self.add_argument("--import", dest="imports", metavar="FILE_OR_MODULE", action="append", default=None,
                          help="run this Python file or module first (its stelab.ste.register calls), so its STEs "
                               "work here; repeatable, anywhere on the command line")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, that command's parser in full and the others as their one-line help
    (what parsing a command line that names ``only``, or none, needs: ``stelab --help`` imports no command)."""
    from .. import __version__

    parser = Parser(prog="stelab", description="Straight-through estimators: train and study them.")
    parser.add_argument("--version", action="version", version=f"stelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMANDS:
        if only is None or name == only:
            importlib.import_module(f"stelab.cli.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=SUMMARY[name])
    return parser


def _command(argv: list[str]) -> str:
    """The command ``argv`` names (its first word that is not an option), or ``""``."""
    return next((a for a in argv if not a.startswith("-")), "")


def take_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(argv without its --import options, their sources)``; like pytest's ``-p``, they act before parsing, since
    the STE names the other arguments give may be the imported ones."""
    rest, sources, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == "--import" or arg.startswith("--import="):
            value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            if not value or value.startswith("-"):
                raise ValueError("--import needs a Python file or module: --import my_stes.py or --import pkg.stes")
            sources.append(value)
            i += 1 if "=" in arg else 2
            continue
        rest.append(arg)
        i += 1
    return rest, sources


def main(argv: list[str] | None = None) -> int:
    from ..ste.plugins import import_sources

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:  # what argparse would print, without building every command's parser (and torch)
        from .. import __version__

        print(f"stelab {__version__}")
        return 0
    try:
        argv, sources = take_imports(argv)
        import_sources(sources)
    except ValueError as err:  # ImportSourceError too: one line, nothing computed
        print(f"stelab: error: {err}", file=sys.stderr)
        return 2
    parser = build_parser(only=_command(argv))
    args = parser.parse_args(argv)
    args.argv = argv  # `train --resume` needs to know which flags were given, not just their values
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not as a traceback at exit
        return code
    except BrokenPipeError:
        # `stelab info | head -3`: the reader left; stop quietly like other command-line tools do.
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    except (ValueError, OSError, KeyError) as err:
        # Bad user input (and unwritable or missing paths) surfaces as a one-line message, not a traceback.
        print(f"stelab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # train prints its own resume command; the sweeps continue from their run folders when rerun
        hint = "" if args.command == "train" else ": rerun the same command to continue (finished runs are kept)"
        print(f"stelab {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
