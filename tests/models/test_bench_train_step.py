"""Smoke test of benchmarks/train_step.py at a tiny size, so the benchmark cannot silently rot."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


def test_train_step_benchmark_runs_and_writes_results(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench"
    assert bench.main(["--models", "lenet5", "--batch-size", "8", "--steps", "2", "--rounds", "2", "--warmup", "1",
                       "--stes", "relu", "clipped_relu", "--configs", "fp32-nchw", "bf16-cl", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    per_config = ["float", "2-bit relu", "W2A2 relu", "2-bit clipped_relu", "W2A2 clipped_relu"]  # W2A2: default
    assert [r["variant"] for r in rows] == [f"{c} {v}" for c in ("fp32-nchw", "bf16-cl") for v in per_config]
    assert all(r["images_per_s"] > 0 and len(r["seconds"]) == 2 for r in rows)
    assert rows[0]["ratio_vs_float"] == 1.0 and rows[5]["ratio_vs_float"] == 1.0
    # the fastest float configuration is 1.0 against itself in every round, so one of the two floats is 1.0 at most
    assert max(rows[0]["ratio_vs_best_float"], rows[5]["ratio_vs_best_float"]) <= 1.0
    out = capsys.readouterr().out
    assert "| lenet5 | bf16-cl 2-bit clipped_relu |" in out and "| lenet5 | bf16-cl W2A2 clipped_relu |" in out


def test_train_step_benchmark_times_the_learned_w2a2_variant(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench"
    assert bench.main(["--models", "lenet5", "--batch-size", "8", "--steps", "1", "--rounds", "1", "--warmup", "0",
                       "--configs", "fp32-nchw", "--learned", "pact", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows[-1]["variant"] == "fp32-nchw W2A2 clipped_relu, learned pact, lsq weights"
    model = bench.build_variants("lenet5", bench.parse_args(["--configs", "fp32-nchw", "--learned", "pact"]))[-1].model
    assert [n for n, p in model.named_parameters() if n.endswith(("alpha", "weight_scale"))]  # both learned
