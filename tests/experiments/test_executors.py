"""The executor interface on the engines that need no cluster: the graph's order, skips, retries and failures on
the local executor (in process and as a process pool), the sweep through submitit's local executor (SLURM's code
path minus the scheduler) bit-identical to the local one, a driver killed mid-sweep and the same command rerun, and
the user errors of the executor flags. Ray has its own module (one cluster for all its tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from executor_sweeps import TINY_SWEEP, assert_same_runs, run_signature

from stelab.cli import main
from stelab.executors import InlineExecutor, PoolExecutor, SweepError, Task, check_graph, run_graph
from stelab.executors.slurm import parse_time
from stelab.executors.worker import lock_holder, run_lock


def _stamp(folder: str, name: str, seconds: float) -> str:
    """A toy run: sleeps, and writes when it started and ended (the driver's clock is the machine's)."""
    start = time.time()
    time.sleep(seconds)
    Path(folder, name).write_text(f"{start} {time.time()}")
    return name


def _die_once(marker: str) -> str:
    """Kills its own worker process the first time (a lost worker), succeeds the second."""
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


def _fail(message: str) -> None:
    raise ValueError(message)


def _times(folder: Path, name: str) -> tuple[float, float]:
    start, end = (float(x) for x in (folder / name).read_text().split())
    return start, end


def test_a_cell_starts_when_its_own_float_run_is_done_not_all_of_them(tmp_path):
    """Two workers: float A is short, float B long; A's cell must start (and end) while B still trains, which the
    old "all floats, then all cells" order could not do."""
    d = str(tmp_path)
    tasks = [Task("A", _stamp, (d, "A", 0.2)), Task("B", _stamp, (d, "B", 4.0)),
             Task("A1", _stamp, (d, "A1", 0.2), after=("A",)), Task("B1", _stamp, (d, "B1", 0.1), after=("B",))]
    with PoolExecutor(2, retries=0) as ex:
        results = run_graph(ex, tasks)
    assert results == {"A": "A", "B": "B", "A1": "A1", "B1": "B1"}
    a_end, b_end = _times(tmp_path, "A")[1], _times(tmp_path, "B")[1]
    a1_start, a1_end = _times(tmp_path, "A1")
    assert a_end <= a1_start and a1_end < b_end, "A1 waited for B"
    assert _times(tmp_path, "B1")[0] >= b_end


def test_in_process_order_skips_and_failures(tmp_path, capsys):
    d = str(tmp_path)
    tasks = [Task("f0", _stamp, (d, "f0", 0)), Task("f1", _stamp, (d, "f1", 0)),
             Task("c0", _stamp, (d, "c0", 0), after=("f0",)),
             Task("c1", _stamp, (d, "c1", 0), after=("f1",), when=lambda r: r["f1"] == "nope", why_not="f1 diverged"),
             Task("c1b", _stamp, (d, "c1b", 0), after=("c1",))]
    finished: list[str] = []
    assert run_graph(InlineExecutor(), tasks, done=lambda t: finished.append(t.key)) == {"f0": "f0", "f1": "f1",
                                                                                          "c0": "c0"}
    assert finished == ["f0", "f1", "c0"]  # reported as each finished; skipped ones are not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c0", "f0", "f1"]
    assert _times(tmp_path, "f1")[1] <= _times(tmp_path, "c0")[0]  # one at a time: the floats first, as before
    err = capsys.readouterr().err
    assert "skip c1 (f1 diverged)" in err and "skip c1b" in err
    with pytest.raises(SweepError, match=r"^bad: no data here$"):
        run_graph(InlineExecutor(), [Task("bad", _fail, ("no data here",)), Task("x", _stamp, (d, "x", 0))])
    assert not (tmp_path / "x").exists()  # the sweep stopped at its first error


def test_graph_checks(tmp_path):
    with pytest.raises(ValueError, match="two tasks named"):
        check_graph([Task("a", print), Task("a", print)])
    with pytest.raises(ValueError, match="not earlier tasks"):
        check_graph([Task("a", print, after=("b",)), Task("b", print)])


def test_a_lost_pool_worker_is_retried_and_an_error_is_not(tmp_path, capsys):
    marker = str(tmp_path / "marker")
    with PoolExecutor(2, retries=1) as ex:
        assert run_graph(ex, [Task("dies", _die_once, (marker,))]) == {"dies": "survived"}
    assert "lost dies" in capsys.readouterr().err
    Path(marker).unlink()
    with PoolExecutor(2, retries=0) as ex, pytest.raises(SweepError, match="lost 1 times"):
        run_graph(ex, [Task("dies", _die_once, (marker,))])
    with PoolExecutor(2, retries=3) as ex, pytest.raises(SweepError, match="^boom: it broke$"):
        run_graph(ex, [Task("boom", _fail, ("it broke",))])


def test_the_run_lock_says_who_holds_it_and_is_released(tmp_path):
    lock = tmp_path / "run" / ".lock"
    with run_lock(lock):
        host, pid = lock_holder(lock)
        assert pid == os.getpid()
        probe = subprocess.run([sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
                                "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(lock)], capture_output=True)
        assert probe.returncode != 0 and b"BlockingIOError" in probe.stderr  # held: another process must wait
    with run_lock(lock):  # released at the end of the block
        pass


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30:00", 90), ("0:30", 1), ("2-12", 3600),
                                           ("1-0:01", 1441), ("1-00:00:30", 1441)])
def test_slurm_time_limits_parse_as_sbatch_reads_them(text, minutes):
    assert parse_time(text) == minutes


def test_the_sweep_through_submitit_is_bit_identical_to_the_local_one(tmp_path, reference_sweep):
    """submitit's local executor: each run a job of its own (a subprocess with SLURM's job files and logs)."""
    pytest.importorskip("submitit")
    out = tmp_path / "t1"
    assert main([*TINY_SWEEP, "--executor", "submitit-local", "--out", str(out)]) == 0
    assert_same_runs(run_signature(out), reference_sweep)
    logs = list((out / "slurm").glob("*/*_log.err"))
    assert len(logs) == 3  # one job per run, logs beside the run folders


def test_a_partition_slurm_refuses_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """SLURM's own refusal, from a stand-in ``sbatch`` that answers as SLURM 23 does for an unknown partition (no
    scheduler here); the job files go through submitit's real SLURM executor up to the ``sbatch`` call."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid partition "
                                    "name specified' >&2\nexit 1\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "sweep"
    assert main([*TINY_SWEEP, "--executor", "slurm", "--partition", "nope", "--time", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "stelab reproduce: error: SLURM refused the job: Batch job submission failed: Invalid partition name specified"]
    assert not out.exists()


def test_executor_flags_are_checked_before_anything_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    out = str(tmp_path / "t")
    monkeypatch.setenv("PATH", "/nonexistent")  # no SLURM
    cases = [(["--executor", "ray", "--partition", "gpu"], "--partition is for --executor slurm, not ray"),
             (["--executor", "ray", "--jobs", "2"], "--jobs is for --executor local, not ray; on Ray or SLURM"),
             (["--address", "auto"], "--address is for --executor ray, not local"),
             (["--executor", "slurm", "--time", "1:2:3:4"], "--time '1:2:3:4': expected MINUTES, HH:MM:SS"),
             (["--executor", "slurm", "--partition", "p"], "no SLURM here (sbatch/srun not on PATH)"),
             (["--executor", "slurm", "--cpus-per-run", "1.5"], "whole CPUs"),
             (["--retries", "-1"], "--retries must be >= 0")]
    for flags, message in cases:
        assert main([*TINY_SWEEP, *flags, "--out", out]) == 2, flags
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (flags, err)
    assert not Path(out).exists()


def test_a_missing_extra_names_the_pip_command(tmp_path, monkeypatch, capsys):
    for module, extra in (("ray", "ray"), ("submitit", "slurm")):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import raises ImportError
        executor = "ray" if module == "ray" else "submitit-local"
        assert main([*TINY_SWEEP, "--executor", executor, "--out", str(tmp_path / "t")]) == 2
        assert f"pip install 'stelab[{extra}]'" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_a_sweep_whose_driver_died_continues_when_rerun(tmp_path, reference_sweep, capsys):
    """The driver (here the whole command: runs train in it) is killed once the float run has a checkpoint; the same
    command again skips nothing that is unfinished, resumes the float run from its checkpoint and ends with the very
    numbers and weights of an uninterrupted sweep."""
    out = tmp_path / "t1"
    argv = [*TINY_SWEEP, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import sys, torch; torch.set_num_threads(1); from stelab.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stderr=subprocess.DEVNULL)
    checkpoint = out / "lenet5" / "seed0" / "float" / "checkpoint.pt"
    try:
        while not checkpoint.exists() and proc.poll() is None:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "lenet5" / "seed0" / "float" / "results.json").exists(), "the driver finished before the kill"
    assert main(argv) == 0
    assert "train" in capsys.readouterr().err
    assert_same_runs(run_signature(out), reference_sweep)
