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
                       "1", "--rounds", "2", "--recompute-limit", "50", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    variants = ("float", "quantized", "packed", "recomputed", "recomputed-limit")
    assert [(r["config"], r["variant"]) for r in rows] == [(c, v) for c in ("fp32-nchw", "bf16-cl") for v in variants]
    for i in (0, len(variants)):
        float_, quantized, packed, recomputed, limited = rows[i:i + len(variants)]
        assert float_["saved_vs_float"] == 1.0 and quantized["time_vs_quantized"] == 1.0
        assert packed["saved_bytes"] < quantized["saved_bytes"] and packed["max_batch"] > quantized["max_batch"]
        # recomputing the convolutions' outputs saves more again; a limit of 50 multiply-adds per element takes
        # LeNet-5's first conv (1 x 5 x 5 = 25) and not its second (6 x 5 x 5 = 150)
        assert recomputed["saved_bytes"] < limited["saved_bytes"] < packed["saved_bytes"]
    assert "| lenet5 | bf16-cl | packed |" in capsys.readouterr().out


def test_a_learned_resolution_saves_what_a_fixed_one_does_with_the_three_valued_rules(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_saved_memory", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    saved = {}
    for learned in (None, "pact", "lsq"):
        out = tmp_path / str(learned)
        assert bench.main(["--models", "lenet5", "--configs", "fp32-nchw", "--batch-size", "8", "--steps", "1",
                           "--rounds", "1", "--out", str(out)] + (["--learned", learned] if learned else [])) == 0
        rows = json.loads((out / "results.json").read_text())["rows"]
        saved[learned] = next(r["saved_bytes"] for r in rows if r["variant"] == "quantized")
    # pact keeps the forward's one-byte state as the fixed op does, and each layer's alpha (4 bytes, 4 layers);
    # lsq keeps x (4 bytes per float32 element)
    assert saved["pact"] == saved[None] + 4 * 4 and saved["pact"] + 3 * 8 * 6 * 24 * 24 < saved["lsq"]
