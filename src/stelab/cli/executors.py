"""The flags that say where a sweep's runs train (``--executor local|ray|slurm|submitit-local`` and each engine's
own), shared by every command that runs a grid (``reproduce table1``, ``reproduce instability``, ``card``). See
docs/cluster.md."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# flag -> the executors it applies to (a flag given to another executor is an error, not silently ignored)
ENGINE_FLAGS = {
    "jobs": ("local",),
    "address": ("ray",),
    "cpus_per_run": ("ray", "slurm", "submitit-local"),
    "gpus_per_run": ("ray", "slurm", "submitit-local"),
    "partition": ("slurm",),
    "time": ("slurm", "submitit-local"),
    "account": ("slurm",),
    "qos": ("slurm",),
    "constraint": ("slurm",),
    "mem": ("slurm",),
    "array_parallelism": ("slurm",),
    "slurm_logs": ("slurm", "submitit-local"),
}


def add_executor_arguments(p: argparse.ArgumentParser, jobs_help: str | None = None) -> None:
    from ..executors import EXECUTORS

    g = p.add_argument_group("where the runs train (docs/cluster.md)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: this machine (default); ray: a Ray cluster; slurm: SLURM jobs through submitit; "
                        "submitit-local: the SLURM code path as local processes")
    g.add_argument("--jobs", type=int, default=None,
                   help=jobs_help or "local: runs trained at once, in separate processes sharing the cores (default 1)")
    g.add_argument("--address", default=None,
                   help="ray: 'auto' joins the cluster `ray start` runs here, HOST:PORT the head there (default: "
                        "start a Ray instance on this machine for the sweep)")
    g.add_argument("--cpus-per-run", type=float, default=None, help="ray, slurm: CPUs (and torch threads) per run "
                                                                     "(default 1)")
    g.add_argument("--gpus-per-run", type=float, default=None, help="ray, slurm: GPUs per run (default 0)")
    g.add_argument("--retries", type=int, default=2,
                   help="times a run whose worker was lost is resubmitted (it resumes from its checkpoint; default 2)")
    g.add_argument("--partition", default=None, help="slurm: the partition (sbatch --partition)")
    g.add_argument("--time", default=None, help="slurm: time limit per run, e.g. 4:00:00 or 1-12 (sbatch --time); "
                                                "a run that hits it is requeued and resumes")
    g.add_argument("--account", default=None, help="slurm: sbatch --account")
    g.add_argument("--qos", default=None, help="slurm: sbatch --qos")
    g.add_argument("--constraint", default=None, help="slurm: sbatch --constraint (node features)")
    g.add_argument("--mem", default=None, help="slurm: memory per run, e.g. 8G (sbatch --mem)")
    g.add_argument("--array-parallelism", type=int, default=None,
                   help="slurm: runs of one job array at once (default 256)")
    g.add_argument("--slurm-logs", default=None,
                   help="slurm: folder for the job files and logs, on the shared file system (default OUT/slurm)")


def executor_options(args: argparse.Namespace, out: str | Path) -> dict[str, Any]:
    """The validated keyword arguments of :func:`stelab.executors.make_executor` for these flags; nothing started."""
    name = args.executor
    given = [f for f, engines in ENGINE_FLAGS.items() if getattr(args, f, None) is not None and name not in engines]
    if given:
        flag = given[0]
        engines = " or ".join(ENGINE_FLAGS[flag])
        hint = "; on Ray or SLURM, --cpus-per-run sets each run's share" if flag == "jobs" else ""
        raise ValueError(f"--{flag.replace('_', '-')} is for --executor {engines}, not {name}{hint}")
    if args.retries < 0:
        raise ValueError(f"--retries must be >= 0, got {args.retries}")
    options: dict[str, Any] = {"jobs": 1 if args.jobs is None else args.jobs, "retries": args.retries,
                               "cpus": 1 if args.cpus_per_run is None else args.cpus_per_run,
                               "gpus": 0 if args.gpus_per_run is None else args.gpus_per_run}
    if options["jobs"] < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    if name == "ray":
        options["address"] = args.address
    if name in ("slurm", "submitit-local"):
        from ..executors.slurm import parse_time

        if args.time is not None:
            parse_time(args.time)  # a bad --time fails here, before anything is submitted
        if args.array_parallelism is not None and args.array_parallelism < 1:
            raise ValueError(f"--array-parallelism must be >= 1, got {args.array_parallelism}")
        options["folder"] = args.slurm_logs or str(Path(out) / "slurm")
        sbatch = {k: getattr(args, k) for k in ("partition", "time", "account", "qos", "constraint", "mem",
                                                "array_parallelism")}
        options.update({k: v for k, v in sbatch.items() if v is not None})
    return options


def executor_from_args(args: argparse.Namespace, out: str | Path):
    """The executor the flags ask for, started (a local Ray instance, a Ray connection, ...); close it after."""
    from .. import executors

    return executors.make_executor(args.executor, **executor_options(args, out))
