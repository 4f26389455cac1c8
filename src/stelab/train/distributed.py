"""Data-parallel training across processes (``torchrun`` or the ``--nproc`` launcher): gloo on CPU, nccl on GPU.

Each rank holds the whole data set, takes a disjoint equal slice of every epoch's permutation (``DeviceLoader``
with ``rank``/``world_size``) with a per-rank batch of ``batch_size / world_size``, and DDP averages gradients, so
one optimizer step sees the same global batch size as a single-process run. Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """The process's place in a ``torchrun`` job (single process when the variables are absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(info: DistInfo, device: torch.device) -> None:
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=info.rank,
                                world_size=info.world_size)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (so every rank stops together when one diverges)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config, nproc: int, *, resume: bool = False, progress: bool = True, hooks: Sequence = ()) -> int:
    """Train ``config`` in ``nproc`` processes with torchrun's environment variables; returns the worst exit code.

    ``hooks`` are :class:`~stelab.train.hooks.HookSpec` s: every rank builds them, rank 0 calls them. Each rank runs
    :mod:`stelab.train.worker` on a job file holding the config, ``resume``, ``progress`` and the hooks.
    A small in-repo launcher (rather than ``torchrun``) so that CPU multi-process runs and tests need nothing but
    this package; the children see what torchrun would set: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT.
    """
    import tempfile

    from .worker import write_job

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_job(os.path.join(tmp, "job.json"), config, resume=resume, progress=progress, hooks=hooks)
        procs = []
        for rank in range(nproc):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            # One thread each unless told otherwise: the ranks already share the cores.
            env.setdefault("OMP_NUM_THREADS", "1")
            procs.append(subprocess.Popen([sys.executable, "-m", "stelab.train.worker", str(path)], env=env))
        codes = [p.wait() for p in procs]
    return next((c for c in codes if c != 0), 0)
