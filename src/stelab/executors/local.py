"""The embedded executor (``--executor local``, the default): runs here, one at a time or in a process pool.

``jobs == 1`` runs each task in this process, in the graph's order (progress bars allowed). ``jobs > 1`` is a pool
of ``jobs`` spawned processes (no fork of a threaded parent), each with an even share of this process's cores as
its torch threads: small models (LeNet-5: a few MFLOP per image) use two cores poorly inside one process, two
processes with one thread each keep both busy. A worker that dies (killed, out of memory) breaks a
``ProcessPoolExecutor`` for every task in it; the pool is then replaced and those tasks count as lost (retried).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool

from .graph import Outcome, Task
from .worker import run_lock, run_task


def threads_per_job(jobs: int) -> int:
    """The cores of this process (its CPU affinity), shared out evenly; at least one thread each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // jobs)


class InlineExecutor:
    """Each task in this process when the driver waits for it; nothing is started in parallel."""

    name, slots, in_process = "local", 1, True

    def __init__(self, retries: int = 0) -> None:
        self.retries = retries
        self._pending: dict[int, Task] = {}
        self._count = 0

    def submit(self, tasks: Sequence[Task]) -> list[int]:
        handles = list(range(self._count, self._count + len(tasks)))
        self._count += len(tasks)
        self._pending.update(zip(handles, tasks))
        return handles

    def wait(self, handles: Sequence[int]) -> list[tuple[int, Outcome]]:
        handle = handles[0]
        task = self._pending.pop(handle)
        try:
            with run_lock(task.lock):
                return [(handle, Outcome("ok", task.fn(*task.args)))]
        except Exception as err:  # KeyboardInterrupt goes up to the driver as it is
            return [(handle, Outcome("error", error=err))]

    def cancel(self, handles: Sequence[int]) -> None:
        for h in handles:
            self._pending.pop(h, None)

    def close(self) -> None:
        self._pending.clear()

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PoolExecutor:
    """``jobs`` spawned worker processes on this machine, ``threads_per_job(jobs)`` torch threads each."""

    name, slots, in_process = "local", None, False

    def __init__(self, jobs: int, retries: int = 2) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.jobs, self.retries, self.threads = jobs, retries, threads_per_job(jobs)
        self._pool: ProcessPoolExecutor | None = None
        self._cwd = os.getcwd()

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, tasks: Sequence[Task]) -> list[Future]:
        pool = self._get_pool()
        return [pool.submit(run_task, t.fn, t.args, self.threads, self._cwd, t.lock) for t in tasks]

    def wait(self, handles: Sequence[Future]) -> list[tuple[Future, Outcome]]:
        done, _ = wait_futures(handles, return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            err = f.exception()
            if err is None:
                out.append((f, Outcome("ok", f.result())))
            elif isinstance(err, BrokenProcessPool):
                out.append((f, Outcome("lost", error=RuntimeError("a worker process died"))))
            else:
                out.append((f, Outcome("error", error=err)))
        if any(o.kind == "lost" for _, o in out):
            self._drop_pool()
        return out

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def cancel(self, handles: Sequence[Future]) -> None:
        for f in handles:
            f.cancel()
        if self._pool is not None:  # the runs in progress stop too: they resume from their checkpoints
            for proc in list(getattr(self._pool, "_processes", {}).values()):
                proc.terminate()
            self._drop_pool()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> PoolExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def local_executor(jobs: int = 1, retries: int = 2) -> InlineExecutor | PoolExecutor:
    """``--executor local``: in this process for ``jobs == 1``, else a pool of ``jobs`` processes."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    return InlineExecutor() if jobs == 1 else PoolExecutor(jobs, retries)
