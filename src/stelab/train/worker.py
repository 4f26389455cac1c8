"""Multi-process training: :func:`launch` starts ``nproc`` ranks with torchrun's environment variables, each
running this module on a job file: ``python -m stelab.train.worker JOB.json``. (The collectives the ranks use are
:mod:`stelab.train.distributed`; launching lives here so that the training loop, which uses them, and the launcher,
which starts the loop, form no import cycle.)

Everything the rank needs is in the job file, written by the launcher (:func:`write_job`): the run's
:class:`TrainConfig`, ``resume`` and ``progress``, and the hooks as :class:`~stelab.train.hooks.HookSpec` s (a
process cannot be handed objects). The command line carries only the file's path; options are parsed in
:mod:`stelab.cli` alone.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ..io import read_json, write_json
from .config import TrainConfig
from .hooks import HookSpec


def write_job(path: str | Path, config: TrainConfig, *, resume: bool = False, progress: bool = True,
              hooks: Sequence[HookSpec] = ()) -> Path:
    """The job file a worker runs: ``{"config": {...}, "resume": bool, "progress": bool, "hooks": [...]}``."""
    write_json(Path(path), {"config": config.to_dict(), "resume": bool(resume), "progress": bool(progress),
                            "hooks": [h.to_dict() for h in hooks]})
    return Path(path)


def main(job_path: str | Path) -> int:
    """Train the job in ``job_path``; 0 when the run finished, 3 when it diverged."""
    from .loop import train

    job = read_json(Path(job_path))
    config = TrainConfig.from_dict(job["config"])
    hooks = [HookSpec.from_dict(h).build() for h in job.get("hooks", [])]
    summary = train(config, hooks, resume=job["resume"], progress=job["progress"])
    return 0 if summary.get("status") == "finished" else 3


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
