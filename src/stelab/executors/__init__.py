"""Executors: where the runs of a sweep train. One interface, several engines, the run folders the only state.

A sweep is a list of :class:`Task` (a pure function of its config that writes its own run folder, and the tasks it
waits for); :func:`run_graph` drives it to the end on an :class:`Executor`:

- ``local`` (the default): in this process (``jobs=1``) or a pool of ``jobs`` processes on this machine;
- ``ray``: each run a Ray task with its CPUs/GPUs, on a cluster joined at ``address`` or started here;
- ``slurm``: each run a SLURM job through submitit (a job array per wave of ready runs); ``submitit-local`` runs
  the same jobs as local subprocesses.

Nothing but the run folders records progress: run the same sweep again after its driver died and finished runs are
skipped, unfinished ones resumed from their checkpoints. Any grid plugs in by building its tasks
(``stelab reproduce table1``, ``instability`` and the STE report card do) and taking an executor
from :func:`make_executor`. ``ray`` and ``submitit`` are optional: ``pip install 'stelab[ray]'`` / ``'stelab[slurm]'``.
"""

from __future__ import annotations

import os
from typing import Any

from .graph import Executor, Outcome, SweepError, Task, check_graph, dedupe, run_graph
from .local import InlineExecutor, PoolExecutor, local_executor, threads_per_job

EXECUTORS = ("local", "ray", "slurm", "submitit-local")


def make_executor(name: str = "local", *, jobs: int = 1, address: str | None = None, cpus: float = 1,
                  gpus: float = 0, retries: int = 2, folder: str | os.PathLike | None = None,
                  **slurm: Any) -> Executor:
    """The executor ``name`` (one of :data:`EXECUTORS`). ``jobs``: local runs at once; ``address``: Ray's;
    ``cpus``/``gpus``: per run (Ray, SLURM); ``retries``: resubmissions of a run whose worker was lost; ``folder``:
    submitit's job files and logs; ``slurm``: sbatch options (``partition``, ``time``, ``account``, ...)."""
    from ..errors import check_choice

    check_choice("executor", name, EXECUTORS)
    if retries < 0:
        raise ValueError(f"--retries must be >= 0, got {retries}")
    if name == "local":
        return InlineExecutor() if jobs == 1 else PoolExecutor(jobs, retries)
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(address=address, cpus=cpus, gpus=gpus, retries=retries)
    from .slurm import SubmititExecutor

    if folder is None:
        raise ValueError("a SLURM executor needs a folder for its job files and logs")
    if cpus != int(cpus) or gpus != int(gpus):
        raise ValueError(f"SLURM allocates whole CPUs and GPUs: --cpus-per-run {cpus:g}, --gpus-per-run {gpus:g}")
    return SubmititExecutor(folder, cluster="slurm" if name == "slurm" else "local", cpus=int(cpus), gpus=int(gpus),
                            retries=retries, **slurm)


__all__ = ["EXECUTORS", "Executor", "InlineExecutor", "Outcome", "PoolExecutor", "SweepError", "Task",
           "check_graph", "dedupe", "local_executor", "make_executor", "run_graph", "threads_per_job"]
