"""Smoke test of benchmarks/saved_memory.py at a tiny size, so the benchmark cannot silently rot."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "saved_memory.py"


def test_saved_memory_benchmark_runs_and_packing_saves(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_saved_memory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench"
    assert bench.main(["--models", "lenet5", "--configs", "fp32-nchw", "bf16-cl", "--batch-size", "8", "--steps",
                       "1", "--rounds", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["config"], r["variant"]) for r in rows] == [(c, v) for c in ("fp32-nchw", "bf16-cl")
                                                           for v in ("float", "quantized", "packed")]
    for i in (0, 3):
        float_, quantized, packed = rows[i:i + 3]
        assert float_["saved_vs_float"] == 1.0 and quantized["time_vs_quantized"] == 1.0
        assert packed["saved_bytes"] < quantized["saved_bytes"] and packed["max_batch"] > quantized["max_batch"]
    assert "| lenet5 | bf16-cl | packed |" in capsys.readouterr().out
