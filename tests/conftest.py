"""Shared test set-up.

The suite runs as two pytest-xdist workers on a 2-core machine; letting each worker's torch use every core
oversubscribes the CPU and makes small tensor operations orders of magnitude slower, so each worker uses one thread.
"""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# Smooth STEs' backward compiles (stelab.ste.compiled) for large float32 tensors; each compile costs seconds, which
# the training tests would pay again and again. They run the eager product (the reference); tests/test_ste_compiled.py
# turns compiling on and checks it against that reference.
os.environ.setdefault("STELAB_COMPILE_STE", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real data sets (``../shared/data`` beside the checkout, or ``$STELAB_DATA``); skip when absent."""
    candidates = [Path(os.environ["STELAB_DATA"])] if os.environ.get("STELAB_DATA") else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    pytest.skip(f"real data not found (looked in {', '.join(map(str, candidates))})")
