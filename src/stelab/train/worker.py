"""One rank of a job started by :func:`stelab.train.distributed.launch`:
``python -m stelab.train.worker CONFIG.json [--resume] [--no-progress]`` with torchrun's environment variables."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from .config import TrainConfig
    from .loop import train

    with open(argv[0]) as f:
        config = TrainConfig.from_json(f.read())
    summary = train(config, resume="--resume" in argv, progress="--no-progress" not in argv)
    return 0 if summary.get("status") == "finished" else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
