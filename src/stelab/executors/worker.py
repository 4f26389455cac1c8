"""What runs on the worker around each task: the driver's working folder, the task's thread count, the run lock.

Threads: a task given ``c`` CPUs runs torch with ``c`` threads, set at every call. Ray exports
``OMP_NUM_THREADS=c`` per task only for processes it starts, and a reused worker keeps the thread pool of the task
before it; SLURM and a process pool say nothing at all. Too many threads on a shared node make small convolutions
orders of magnitude slower (every run fighting for the same cores), too few leave cores idle.

Lock: the worker holds an exclusive ``flock`` on the task's lock file (``<run folder>/.lock``) while it trains. If a
driver died and its jobs live on (a SLURM job outlives the login shell that submitted it), the same command run again
waits for them instead of training the same folder twice; the lock dies with the process holding it, so a killed
worker never leaves a stale one. The file says who holds it (host and pid), for the log and for the tests.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def set_threads(threads: int) -> None:
    """torch's intra-op threads for this task (and the variables child processes read)."""
    import torch

    threads = max(1, int(threads))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)


@contextmanager
def run_lock(path: str | os.PathLike | None) -> Iterator[None]:
    """Hold the exclusive lock ``path`` (created with its folder) for the block; wait if another process has it."""
    if path is None:
        yield
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only folder (finished minima given as input): nothing can train into it
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            print(f"wait {path.parent}: {holder} is training it", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_holder(path: str | os.PathLike) -> tuple[str, int] | None:
    """``(host, pid)`` written by the last holder of the lock file ``path``, if any."""
    try:
        words = Path(path).read_text().split()
    except FileNotFoundError:
        return None
    if len(words) == 4 and words[0] == "host" and words[2] == "pid" and words[3].isdigit():
        return words[1], int(words[3])
    return None


def run_task(fn: Callable[..., Any], args: tuple, threads: int | None, cwd: str | None,
             lock: str | None) -> Any:
    """``fn(*args)`` on a worker: in the driver's folder ``cwd`` (relative run folders mean the same there), with
    ``threads`` torch threads (``None``: leave them), holding ``lock``."""
    if cwd is not None and os.getcwd() != cwd:
        try:
            os.chdir(cwd)
        except OSError as err:
            raise OSError(f"the sweep's folder {cwd} does not exist on worker {socket.gethostname()} ({err}); run "
                          "the command from a folder every node sees (the shared file system)") from None
    if threads is not None:
        set_threads(threads)
    with run_lock(lock):
        return fn(*args)
