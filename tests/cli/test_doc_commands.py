"""Every ``stelab`` command the documentation shows is one the command line accepts.

REPRODUCTION.md promises exact commands (the GPU protocol among them) that nobody here can run to the end, so they
are checked the only way that does not take hours: ``stelab reproduce`` and ``stelab train`` commands go through
``stelab.cli.main`` with the training itself replaced by a recorder, so argument parsing *and* the config checks
(model, data set, STE and schedule names, flag combinations) run as for a user; every other command is parsed.

Commands come from fenced code blocks (continuation lines joined, ``# ...`` comments dropped) and from inline code
spans with a flag. ``[--flag value]`` (an optional part) is checked with and without it, ``a|b`` with each value;
what still holds a placeholder (``RUN``, ``N``, ``...``, ``<float run>``) is a synopsis and is left out.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import stelab
from stelab.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "REPRODUCTION.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Upper-case words (RUN, N, DIR), "..." and <...> stand for values the reader fills in: such a variant is a synopsis.
PLACEHOLDER = re.compile(r"(^|\s)[A-Z][A-Z_]*(\s|$)|\.\.\.|<")


def _fenced(text: str) -> list[str]:
    commands, inside, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        line = pending + re.sub(r"\s+#.*$", "", line).strip()
        pending = line[:-1] + " " if line.endswith("\\") else ""
        if not pending and line.startswith("stelab "):
            commands.append(line)
    return commands


def _inline(text: str) -> list[str]:
    # A span without a flag (`stelab reproduce`) names a command in prose rather than showing one to run.
    return [s for s in re.findall(r"`(stelab [^`]+)`", text) if " -" in s]


def _variants(command: str) -> list[str]:
    """The commands a line stands for: ``[...]`` is an optional part (with it and without it), ``a|b`` (``a\\|b``
    in a Markdown table) one of several values; variants with a placeholder left are synopses, not commands."""
    command = " ".join(command.replace("\\|", "|").split())
    if "[" in command:
        return sorted({v for form in (command.replace("[", "").replace("]", ""), re.sub(r"\[[^\]]*\]", "", command))
                       for v in _variants(form)})
    words = command.split(" ")
    for i, word in enumerate(words):
        if "|" in word:
            forms = (" ".join(words[:i] + [alt] + words[i + 1:]) for alt in word.split("|"))
            return sorted({v for form in forms for v in _variants(form)})
    return [] if PLACEHOLDER.search(command) else [command]


def doc_commands() -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for doc in DOCS:
        text = doc.read_text()
        for line in _fenced(text) + _inline(text):
            for command in _variants(line):
                found.setdefault(command, doc.name)
    return sorted((doc, command) for command, doc in found.items())


COMMANDS = doc_commands()


def doc_files() -> dict[str, str]:
    """Files the documentation asks the reader to write: a fenced block whose first line is ``# name.py``."""
    found = {}
    for doc in DOCS:
        for block in re.findall(r"```python\n(# (\w+\.py)\n.*?)```", doc.read_text(), re.S):
            found[block[1]] = block[0]
    return found


def test_the_documentation_shows_the_commands_this_test_is_for():
    """Guards the extraction itself: if it found nothing, every check below would pass vacuously."""
    shown = {command for _, command in COMMANDS}
    assert "stelab reproduce table1 --dataset mnist --seeds 3 --out runs/table1-mnist-full" in shown
    assert any(c.startswith("stelab reproduce instability --dataset cifar10 --model resnet20") and "--then-epochs 200"
               in c for c in shown)
    assert any(c.startswith("stelab reproduce table1 --dataset cifar10 --models vgg11 resnet20") for c in shown)
    assert any(c.startswith("stelab train ") for c in shown)
    assert len(shown) >= 15
    assert "my_stes.py" in doc_files() and any("--import my_stes.py" in c for c in shown)


@pytest.fixture
def recorder(monkeypatch, tmp_path):
    """Replace every long-running entry point by one that records its config; run from an empty folder."""
    import stelab.executors as executors
    import stelab.experiments.reproduce as reproduce
    import stelab.train as train_pkg

    calls = []
    monkeypatch.setattr(reproduce, "run_table1", lambda config, out, progress=True, executor=None:
                        calls.append(config) or {})
    monkeypatch.setattr(reproduce, "run_instability", lambda config, out, progress=True, executor=None:
                        calls.append(config) or {})
    # --executor ray|slurm: the flags are checked as for a user, but no cluster is joined and nothing is submitted
    monkeypatch.setattr(executors, "make_executor", lambda name, **options: executors.InlineExecutor())
    monkeypatch.setattr(reproduce, "table1_markdown", lambda results: "")
    monkeypatch.setattr(reproduce, "instability_markdown", lambda results: "")
    monkeypatch.setattr(train_pkg, "train", lambda config, hooks=(), resume=False, progress=True:
                        calls.append(config) or {"status": "finished"})
    monkeypatch.chdir(tmp_path)
    for name, text in doc_files().items():  # my_stes.py for `--import my_stes.py`
        (tmp_path / name).write_text(text)
    monkeypatch.delenv("STELAB_IMPORT", raising=False)  # --import sets it; restored after
    before = set(stelab.ste.names())
    yield calls
    for name in set(stelab.ste.names()) - before:  # what an --import registered stays in this test
        stelab.ste.unregister(name)


@pytest.mark.parametrize(("doc", "command"), COMMANDS, ids=[f"{d}:{c[:70]}" for d, c in COMMANDS])
def test_documented_command_is_accepted(doc, command, recorder, capsys):
    argv = shlex.split(command)[1:]
    if argv[0] in ("reproduce", "train") and "--resume" not in argv:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, f"{doc}: `{command}` was refused: {err}"
        assert len(recorder) == 1, f"{doc}: `{command}` did not reach the experiment"
        return
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):  # --help / --version exit 0
            pytest.fail(f"{doc}: `{command}` does not parse: {capsys.readouterr().err}")
