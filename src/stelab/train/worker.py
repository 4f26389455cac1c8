"""One rank of a job started by :func:`stelab.train.distributed.launch`, run with torchrun's environment variables:
``python -m stelab.train.worker JOB.json``.

Everything the rank needs is in the job file, written by the launcher (:func:`write_job`): the run's
:class:`TrainConfig`, ``resume`` and ``progress``, and the hooks as :class:`~stelab.train.hooks.HookSpec` s (a
process cannot be handed objects). The command line carries only the file's path; options are parsed in
:mod:`stelab.cli` alone.
"""

from __future__ import annotations

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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
