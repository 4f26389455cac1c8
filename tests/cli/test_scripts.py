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


def _dry_run(tmp_path: Path, *names: str, script: str = "results/qat-resnet20/commands.sh"
             ) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``script`` (with scripts/_restore.sh) copied into a tree whose ``stelab`` and ``python`` only record their
    arguments."""
    copy = tmp_path / script
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / script, copy)
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy(ROOT / "scripts" / "_restore.sh", tmp_path / "scripts" / "_restore.sh")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "activate").write_text(f'PATH="{tmp_path}/bin:$PATH"\n')
    (tmp_path / "bin").mkdir()
    for tool in ("stelab", "python"):
        (tmp_path / "bin" / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls"\ncat > /dev/null\n')
        (tmp_path / "bin" / tool).chmod(0o755)
    done = subprocess.run(["bash", str(copy), *names], capture_output=True, text=True, timeout=60,
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


def _files(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_the_resnet20_long_cells_restore_committed_cells_and_run_one_cell_at_a_time(tmp_path: Path) -> None:
    """A fresh clone: the float network becomes a finished run, an unfinished committed cell comes back with its
    checkpoint (to continue), and a cell already started in runs/ is left as it is."""
    here, runs = tmp_path / "results/table1-cifar10-resnet20", tmp_path / "runs/t1-r20-60/resnet20/seed0"
    _files(here / "seed0/float", {"config.json": "{}", "results.json": "{}", "model.pt": "float weights"})
    _files(here / "long60/seed0/2bit-clipped_relu",
           {"config.json": "{}", "metrics.jsonl": "", "checkpoint.pt": "ep 30"})
    _files(here / "long60/seed0/4bit-clipped_relu", {"config.json": "committed", "checkpoint.pt": "ep 5"})
    _files(runs / "4bit-clipped_relu", {"config.json": "newer", "checkpoint.pt": "ep 9"})
    done, calls = _dry_run(tmp_path, script="results/table1-cifar10-resnet20/long-cells.sh")
    assert done.returncode == 0, done.stderr
    assert (runs / "float/checkpoint.pt").read_text() == "float weights"
    assert (runs / "2bit-clipped_relu/checkpoint.pt").read_text() == "ep 30"
    assert (runs / "4bit-clipped_relu/checkpoint.pt").read_text() == "ep 9"  # started here: not replaced
    assert [c.split("--out runs/t1-r20-60 ")[1] for c in calls] == [
        "--bits 2 --stes clipped_relu", "--bits 4 --stes clipped_relu", "--bits 2 --stes identity clipped_relu"]
    assert all("--cell-epochs 60" in c for c in calls)


def test_the_vgg11_resume_restores_the_finished_cells_and_reports_all(tmp_path: Path) -> None:
    here, runs = tmp_path / "results/table1-cifar10-vgg11-40ep/seed0", tmp_path / "runs/t1-vgg11/vgg11/seed0"
    _files(here / "float", {"config.json": "{}", "results.json": "{}", "model.pt": "float weights"})
    _files(here / "2bit-relu", {"config.json": "{}", "metrics.jsonl": "", "results.json": "finished"})
    done, calls = _dry_run(tmp_path, script="results/table1-cifar10-vgg11-40ep/resume.sh")
    assert done.returncode == 0, done.stderr
    assert (runs / "2bit-relu/results.json").read_text() == "finished"
    assert not (runs / "float/model.pt").exists() and (runs / "float/checkpoint.pt").is_file()
    (call,) = calls
    assert "--bits 2 4 --stes identity relu clipped_relu" in call and "--out runs/t1-vgg11" in call


def test_a_committed_cell_without_summary_or_checkpoint_stops_the_restore(tmp_path: Path) -> None:
    """A checkpoint left out of a commit (``*.pt`` is ignored unless under results/) must not restart the cell from
    its first epoch unnoticed."""
    here = tmp_path / "results/table1-cifar10-resnet20"
    _files(here / "seed0/float", {"config.json": "{}", "results.json": "{}", "model.pt": "float weights"})
    _files(here / "long60/seed0/2bit-clipped_relu", {"config.json": "{}", "metrics.jsonl": ""})
    done, calls = _dry_run(tmp_path, script="results/table1-cifar10-resnet20/long-cells.sh")
    assert done.returncode != 0 and calls == []
    assert "has neither results.json (finished) nor checkpoint.pt (to continue)" in done.stderr


def test_committed_checkpoints_under_results_are_not_ignored() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    done = subprocess.run(["git", "check-ignore", "-q", "results/x/seed0/cell/checkpoint.pt"], cwd=ROOT)
    assert done.returncode == 1  # 1: not ignored (0: ignored)
