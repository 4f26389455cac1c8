"""The shell scripts the documentation points to (``scripts/``, ``results/**``) parse, and the issue-23 results
script runs exactly the runs it is named (all without names) and refuses a name it does not list."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*(ROOT / "scripts").glob("*.sh"), *(ROOT / "results").rglob("*.sh")])
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_parses(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _dry_run(tmp_path: Path, *names: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """commands.sh copied into an empty tree whose ``stelab`` and ``python`` only record their arguments."""
    script = tmp_path / "results" / "qat-resnet20" / "commands.sh"
    script.parent.mkdir(parents=True)
    shutil.copy(ROOT / "results" / "qat-resnet20" / "commands.sh", script)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "activate").write_text(f'PATH="{tmp_path}/bin:$PATH"\n')
    (tmp_path / "bin").mkdir()
    for tool in ("stelab", "python"):
        (tmp_path / "bin" / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls"\ncat > /dev/null\n')
        (tmp_path / "bin" / tool).chmod(0o755)
    done = subprocess.run(["bash", str(script), *names], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{tmp_path}/bin:{os.environ['PATH']}"}, stdin=subprocess.DEVNULL)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return done, calls


def _outs(calls: list[str]) -> list[str]:
    return [c.split("--out ")[1].split()[0] for c in calls if c.startswith("stelab train")]


def test_commands_runs_only_the_named_runs(tmp_path: Path) -> None:
    done, calls = _dry_run(tmp_path, "a4-pact", "w2a2-lsq-kd")
    assert done.returncode == 0, done.stderr
    assert _outs(calls) == ["runs/qat/w2a2-lsq-kd", "runs/qat/a4-pact"]  # in the script's order
    assert calls[-1] == "python -"  # the summary still refreshed


def test_commands_without_names_runs_every_run(tmp_path: Path) -> None:
    done, calls = _dry_run(tmp_path)
    listed = [line.split()[1] for line in (ROOT / "results/qat-resnet20/commands.sh").read_text().splitlines()
              if line.split()[:1] in (["run"], ["ab"], ["only"])]
    assert done.returncode == 0, done.stderr
    assert _outs(calls) == listed and len(listed) > 10


def test_commands_refuses_an_unknown_run_name(tmp_path: Path) -> None:
    done, calls = _dry_run(tmp_path, "a4-pact", "w2a2-no-such-run")
    assert done.returncode == 2
    assert "no run named 'w2a2-no-such-run'" in done.stderr
    assert calls == []
