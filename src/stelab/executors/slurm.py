"""``--executor slurm`` through submitit: one SLURM job per run, each wave of runs that are ready together submitted
as one job array; ``--executor submitit-local`` is the same code path with submitit's local executor (each run a
subprocess with the same job files and logs, no scheduler), to try a sweep on one machine.

The job's logs and pickled task go to ``folder`` (``<out>/slurm/<job id>/`` by default): like the run folders, it
must be on a file system the compute nodes share. A job that SLURM times out or preempts is requeued by submitit
(the task is checkpointable: the requeued job resumes the run from its last epoch); one that ends without a result
(node failure, out-of-memory kill) counts as lost and is resubmitted by :func:`~.graph.run_graph`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .graph import Outcome, Task, wait_poll
from .worker import run_task

TIME_FORMS = "MINUTES, HH:MM:SS, MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
NO_LIMIT_MIN = 7 * 24 * 60  # submitit-local without --time: a week (submitit's own default is 2 minutes)


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise ValueError("--executor slurm needs submitit: pip install 'stelab[slurm]'") from None
    return submitit


def parse_time(text: str) -> int:
    """A SLURM time limit (``sbatch --time``) in whole minutes, rounded up: ``90``, ``1:30:00``, ``2-12``, ..."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not m:
        raise ValueError(f"--time {text!r}: expected {TIME_FORMS}")
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    elif b is None:  # MINUTES
        seconds = a * 60
    elif c is None:  # MM:SS
        seconds = a * 60 + b
    else:  # HH:MM:SS
        seconds = (a * 60 + b) * 60 + c
    if seconds <= 0:
        raise ValueError(f"--time {text!r} must be positive")
    return -(-seconds // 60)


class SlurmTask:
    """A run as submitit submits it: picklable, and checkpointable (on a timeout or preemption submitit requeues the
    same call, which resumes from the run folder)."""

    def __init__(self, task: Task, threads: int, cwd: str) -> None:
        self.fn, self.args, self.lock, self.threads, self.cwd = task.fn, task.args, task.lock, threads, cwd

    def __call__(self) -> Any:
        return run_task(self.fn, self.args, self.threads, self.cwd, self.lock)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        return import_submitit().helpers.DelayedSubmission(self, *args, **kwargs)


class SubmititExecutor:
    """SLURM (``cluster="slurm"``) or submitit's local executor (``cluster="local"``); ``options`` are sbatch's:
    ``partition``, ``time`` (text, see :func:`parse_time`), ``account``, ``qos``, ``constraint``, ``mem`` and
    ``array_parallelism``."""

    name, in_process = "slurm", False

    def __init__(self, folder: str | os.PathLike, cluster: str = "slurm", cpus: int = 1, gpus: int = 0,
                 retries: int = 2, poll_s: float | None = None, **options: Any) -> None:
        submitit = import_submitit()
        if cpus < 1 or gpus < 0:
            raise ValueError(f"need --cpus-per-run >= 1 and --gpus-per-run >= 0 for SLURM, got {cpus} and {gpus}")
        if cluster == "slurm" and (shutil.which("sbatch") is None or shutil.which("srun") is None):
            raise ValueError("--executor slurm: no SLURM here (sbatch/srun not on PATH); run the command on the "
                             "cluster's login node, or try the sweep on this machine with --executor submitit-local")
        self.folder, self.cluster, self.cpus, self.gpus, self.retries = Path(folder), cluster, cpus, gpus, retries
        self.slots = None if cluster == "slurm" else max(1, (os.cpu_count() or 1) // cpus)
        self.poll_s = poll_s if poll_s is not None else (10.0 if cluster == "slurm" else 0.5)
        self.minutes = parse_time(options.pop("time")) if options.get("time") else None
        self.options = {k: v for k, v in options.items() if v is not None}
        self._submitit, self._executor, self._cwd = submitit, None, os.getcwd()
        self._submitted_any = False

    def _make(self) -> Any:
        if self._executor is not None:
            return self._executor
        logs = str(self.folder / "%j")
        if self.cluster == "slurm":
            ex = self._submitit.SlurmExecutor(folder=logs)
            params = dict(job_name="stelab", cpus_per_task=self.cpus, **self.options)
            if self.gpus:
                params["gpus_per_node"] = self.gpus
            if self.minutes is not None:
                params["time"] = self.minutes
            ex.update_parameters(**params)
        else:
            ex = self._submitit.LocalExecutor(folder=logs)
            ex.update_parameters(timeout_min=self.minutes or NO_LIMIT_MIN, gpus_per_node=self.gpus)
        self._executor = ex
        return ex

    def submit(self, tasks: Sequence[Task]) -> list[Any]:
        created = _first_missing(self.folder)
        calls = [SlurmTask(t, self.cpus, self._cwd) for t in tasks]
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):  # submitit prints sbatch's whole error; we say it once
                ex = self._make()
                if len(calls) == 1:
                    jobs = [ex.submit(calls[0])]
                else:
                    with ex.batch():
                        jobs = [ex.submit(c) for c in calls]
        except self._submitit.core.utils.UncompletedJobError as err:  # sbatch said no (FailedJobError)
            if not self._submitted_any and created is not None:
                shutil.rmtree(created, ignore_errors=True)  # no half-made folders from a refused first wave
            raise ValueError(f"SLURM refused the job{'s' * (len(calls) > 1)}: {_sbatch_error(err)}") from None
        self._submitted_any = True
        return jobs

    def wait(self, handles: Sequence[Any]) -> list[tuple[Any, Outcome]]:
        done = wait_poll(handles, lambda job: job.done(), self.poll_s)
        return [(job, self._outcome(job)) for job in done]

    def _outcome(self, job: Any) -> Outcome:
        utils = self._submitit.core.utils
        try:
            return Outcome("ok", job.result())
        except utils.FailedJobError as err:  # the task raised: its last traceback line says what
            return Outcome("error", error=RuntimeError(_last_line(str(err))), where=str(job.paths.stderr))
        except utils.UncompletedJobError as err:  # no result at all: killed, node failure, out of memory
            return Outcome("lost", error=RuntimeError(_last_line(str(err).split("\n")[1] if "\n" in str(err)
                                                                 else str(err))), where=str(job.paths.stderr))

    def cancel(self, handles: Sequence[Any]) -> None:
        for job in handles:
            with contextlib.suppress(Exception):
                job.cancel(check=False)

    def close(self) -> None:
        self._executor = None

    def __enter__(self) -> SubmititExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_missing(path: Path) -> Path | None:
    """The top-most folder of ``path`` that does not exist yet (what a ``mkdir -p`` would create first)."""
    path = path.absolute()
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            return missing
        missing = p
    return missing


def _sbatch_error(err: BaseException) -> str:
    """sbatch's own words, without its prefix: ``Batch job submission failed: Invalid partition name specified``."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines or [type(err).__name__]
    return re.sub(r"^(sbatch: )?error: ", "", errors[-1])


def _last_line(text: str) -> str:
    """The exception line of a traceback text (``ValueError: ...``), else its last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    exc = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", line)]
    return (exc or lines or ["(no message)"])[-1]
