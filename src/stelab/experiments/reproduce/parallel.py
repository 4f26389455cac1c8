"""Run independent training runs side by side, each process with its share of the CPU's cores.

Small models (LeNet-5: a few MFLOP per image) use two cores poorly inside one process: their convolutions are too
small to split well. Two processes with one thread each keep both cores busy instead, which is what makes the
paper's 50-epoch LeNet-5 sweep fit in one sitting. Each run still writes its own folder, checkpoint and log, so an
interrupted pool resumes exactly like one process would (:func:`~stelab.experiments.reproduce.table1.run_or_resume`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ...train import TrainConfig


def threads_per_job(jobs: int) -> int:
    """The cores of this process (its CPU affinity), shared out evenly; at least one thread each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run(run: Callable[[TrainConfig, bool], dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    return run(TrainConfig.from_dict(config), False)


def run_all(run: Callable[[TrainConfig, bool], dict[str, Any]], configs: Sequence[TrainConfig], jobs: int,
            progress: bool = True) -> list[dict[str, Any]]:
    """``run(config, progress)`` for every config, ``jobs`` at a time, in order of the results; ``jobs == 1`` runs
    here, in this process (progress bars allowed). Worker processes are spawned (no fork of a threaded parent) and
    show no progress bars, which would interleave; each run's start and end are still printed."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(configs) <= 1:
        return [run(c, progress) for c in configs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(configs)), mp_context=context, initializer=_init_worker,
                             initargs=(threads_per_job(jobs),)) as pool:
        futures = [pool.submit(_run, run, c.to_dict()) for c in configs]
        return [f.result() for f in futures]
