"""Fixtures of the executor tests (the tiny sweep and its comparison live in executor_sweeps.py)."""

from __future__ import annotations

import pytest
from executor_sweeps import TINY_SWEEP, run_signature


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory) -> dict[str, object]:
    """The tiny sweep on the local executor, in this process (one torch thread, as every worker below uses)."""
    from stelab.cli import main

    root = tmp_path_factory.mktemp("reference")
    assert main([*TINY_SWEEP, "--out", str(root)]) == 0
    return run_signature(root)
