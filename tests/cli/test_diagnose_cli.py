import json

import pytest
import torch

from stelab import models
from stelab.cli import main
from stelab.experiments.diagnose import hook_records


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-bit LeNet-5 trained for a few steps on synthetic images with the diagnostics hook every 2 steps (through
    the command line, which builds the hook)."""
    out = tmp_path_factory.mktemp("run") / "lenet"
    assert main(["train", "--model", "lenet5", "--dataset", "mnist", "--bits", "2", "--epochs", "1", "--batch-size",
                 "16", "--synthetic", "64", "--limit-test", "32", "--diagnose-every", "2", "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0
    return out


def test_training_loop_logs_hook_records(trained_run):
    records = hook_records(trained_run)
    assert [r["step"] for r in records] == [2, 4]
    diag = records[-1]["diagnostics"]
    assert set(diag["cosine"]) == {"identity", "relu", "clipped_relu"}
    assert diag["flip"] is not None and 0 <= diag["flip"]["model"] <= 1


def test_diagnose_run_dir_writes_report(trained_run, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["diagnose", str(trained_run), "--synthetic", "64", "--batches", "3", "--batch-size", "16",
                 "--widths", "0.5", "0.25", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "Gradient fidelity" in capsys.readouterr().out
    for name in ("report.md", "results.json", "cosine_per_layer.png", "cosine_over_training.png",
                 "saturation.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    layers = {row["layer"] for row in data["fidelity"]["rows"]}
    assert [f["id"].split(":")[0] for f in data["findings"]] == ["fidelity"] * len(data["fidelity"]["stes"])
    assert "model" in layers and "features.0.0" in layers
    assert data["hook_records"] == 2


def test_diagnose_float_checkpoint_is_quantized_first(tmp_path):
    path = tmp_path / "float.pt"
    torch.save(models.build("lenet5").state_dict(), path)
    out = tmp_path / "report"
    assert main(["diagnose", "--model", "lenet5", "--checkpoint", str(path), "--bits", "2", "--synthetic", "64",
                 "--batches", "2", "--batch-size", "16", "--widths", "0.5", "--out", str(out), "--no-progress",
                 "--zo-directions", "3", "--zo-batches", "1"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert {r["direction"] for r in data["zeroth_order"]} == {"identity", "relu", "clipped_relu", "smoothed(s=0.5a)"}
    assert data["meta"]["bits"] == 2 and data["meta"]["trained_as"] == "float"
    assert not (out / "cosine_over_training.png").exists()


@pytest.mark.parametrize("argv, message", [
    (["diagnose"], "RUN_DIR"),
    (["diagnose", "--model", "nope", "--checkpoint", "x.pt"], "unknown model 'nope'"),
    (["diagnose", "--model", "lenet5", "--checkpoint", "missing.pt", "--synthetic", "64"], "no checkpoint"),
])
def test_diagnose_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_diagnose_unknown_ste_lists_choices(trained_run, capsys):
    assert main(["diagnose", str(trained_run), "--synthetic", "64", "--batches", "2", "--batch-size", "16",
                 "--stes", "relu", "bogus", "--out", str(trained_run / "x")]) == 2
    assert "unknown STE 'bogus'" in capsys.readouterr().err


def test_diagnose_weight_quantized_run_uses_its_quantized_weights(tmp_path):
    """A W2A2 run is diagnosed as it was trained: quantized weights in the model, and the report says so."""
    from stelab.experiments.diagnose import DiagnoseConfig, load_model
    from stelab.weights import weight_quantized_modules

    out = tmp_path / "w2a2"
    assert main(["train", "--model", "lenet5", "--bits", "2", "--weight-bits", "2", "--epochs", "1", "--batch-size",
                 "16", "--synthetic", "32", "--limit-test", "16", "--out", str(out), "--no-progress"]) == 0
    model, _, meta = load_model(DiagnoseConfig(run_dir=str(out)))
    assert len(weight_quantized_modules(model)) == 3  # LeNet-5's 5 weight layers but the first and the last
    assert main(["diagnose", str(out), "--synthetic", "32", "--batches", "2", "--batch-size", "16", "--widths", "0.5",
                 "--out", str(tmp_path / "report"), "--no-progress"]) == 0
    assert "2-bit uniform weights" in (tmp_path / "report" / "report.md").read_text()
