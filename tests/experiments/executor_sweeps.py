"""The smallest Table 1 sweep that exercises the graph (a float run of 8 epochs, then two 1-epoch cells from it, on
synthetic images) and what "the same results" means for its run folders: every number but the clocks, and every
weight of every checkpoint, bit for bit."""

from __future__ import annotations

from pathlib import Path

import torch

from stelab.io import read_json, read_jsonl

TINY_SWEEP = ["reproduce", "table1", "--dataset", "mnist", "--bits", "2", "--stes", "relu", "clipped_relu",
              "--epochs-scale", "0.16", "--cell-epochs", "1", "--synthetic", "256", "--no-progress"]
RUNS = ("float", "2bit-relu", "2bit-clipped_relu")
CLOCKS = {"wall_time_s", "images_per_s", "time_s", "dir"}  # time, and where the sweep was written


def run_signature(root: Path) -> dict[str, object]:
    """Per run: its summary and per-epoch records without the clocks, and its checkpoint's tensors."""
    out: dict[str, object] = {}
    for run in RUNS:
        folder = root / "lenet5" / "seed0" / run
        summary = {k: v for k, v in read_json(folder / "results.json").items() if k not in CLOCKS}
        records = [{k: v for k, v in r.items() if k not in CLOCKS} for r in read_jsonl(folder / "metrics.jsonl")]
        blob = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
        out[run] = (summary, records, {k: v.clone() for k, v in blob["model"].items()})
    return out


def assert_same_runs(got: dict[str, object], want: dict[str, object]) -> None:
    assert set(got) == set(want)
    for run in want:
        (s1, r1, w1), (s2, r2, w2) = got[run], want[run]
        assert s1 == s2, run
        assert r1 == r2, run
        assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w2), f"{run}: weights differ"


