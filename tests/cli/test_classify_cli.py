"""``stelab classify``: the run folder and report, bad arguments as one-line errors (exit 2), and the MNIST
experiment on a subset when the data set is there."""

from __future__ import annotations

import json

import pytest

from stelab.cli import main


def test_cli_writes_a_report(tmp_path):
    out = tmp_path / "run"
    assert main(["classify", "--quick", "--kinds", "subspaces", "--stes", "relu", "leaky_relu(slope=0.05)",
                 "--steps", "100", "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert [m["ste"] for m in result["monotone"]] == ["relu", "leaky_relu(slope=0.05)"]
    assert {r["ste"] for r in result["synthetic"]["runs"]} == {"relu", "leaky_relu(slope=0.05)"}
    assert [f["id"] for f in result["findings"]] == ["synthetic:leaky_relu(slope=0.05)", "synthetic:relu"]
    assert "is_monotone" in (out / "report.md").read_text()
    assert (out / "synthetic_curves.png").stat().st_size > 0


@pytest.mark.parametrize("argv, message", [
    (["--stes", "nope"], "valid choices"),
    (["--kinds", "spheres"], "valid choices: subspaces, cones"),
    (["--no-synthetic"], "nothing to do"),
    (["--quick", "--bits", "4"], "--quick runs its own small grid"),
    (["--steps", "0"], "--steps must be a positive integer"),
])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv, message):
    assert main(["classify", "--out", str(tmp_path / "x"), "--no-progress", *argv]) == 2
    assert message in capsys.readouterr().err


def test_mnist_experiment_runs_on_a_subset(tmp_path):
    from stelab.data import find_data_dir, load_mnist

    try:
        find_data_dir()
        load_mnist(split="test")
    except (FileNotFoundError, ValueError) as err:
        pytest.skip(f"MNIST not available: {err}")
    out = tmp_path / "mnist"
    assert main(["classify", "--no-synthetic", "--mnist", "--quick", "--mnist-epochs", "2", "--out", str(out),
                 "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())["mnist"]
    (run,) = res["runs"]
    assert (run["ste"], run["bits"]) == ("relu", 2) and res["train_size"] == 2000 and res["steps"] == 40
    assert res["test_size"] == 10000
    assert run["test_accuracy"] > 0.75  # far above chance (0.1) after 40 coarse SGD steps
    assert (out / "mnist_accuracy.png").stat().st_size > 0 and "## MNIST" in (out / "report.md").read_text()
