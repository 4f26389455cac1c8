"""``stelab reproduce``: the paper's numbers as data, the sweep's skip/resume logic, the table with diverged runs
kept out of the means, and the instability experiment end to end on synthetic data."""

from __future__ import annotations

import math
import statistics

import pytest

from stelab.cli import main
from stelab.cli.reproduce import parse_pair
from stelab.experiments.reproduce import TABLE1, aggregate, instability_markdown, table1_markdown
from stelab.io import read_json
from stelab.train.runs import read_config


def test_paper_table1_is_encoded_as_in_the_paper():
    assert len(TABLE1) == 18
    assert TABLE1[("lenet5", 2, "identity")] == (2.6e-2, 98.49)
    assert TABLE1[("lenet5", 4, "clipped_relu")] == (8.8e-4, 99.24)
    assert TABLE1[("vgg11", 2, "relu")] == (0.10, 88.69)
    assert TABLE1[("resnet20", 4, "clipped_relu")] == (0.04, 91.24)
    assert TABLE1[("resnet20", 2, "identity")] == (1.56, 46.52)


def _run(status, loss, acc, ste="relu", seed=0):
    return {"status": status, "model": "lenet5", "bits": 2, "ste": ste, "seed": seed, "train_loss": loss,
            "test_acc": acc}


def test_means_use_finite_runs_only_and_diverged_runs_are_counted():
    runs = [_run("finished", 0.1, 0.98), _run("finished", 0.3, 0.96, seed=1), _run("diverged", float("nan"), 0.1,
                                                                                     seed=2)]
    (cell,) = [c for c in aggregate(runs, ["lenet5"], [2], ["relu"]) if c["ste"] == "relu"]
    assert cell["n"] == 2 and cell["runs"] == 3 and cell["diverged"] == 1
    assert math.isclose(cell["train_loss_mean"], 0.2) and math.isclose(cell["train_loss_std"],
                                                                       statistics.stdev([0.1, 0.3]))
    assert math.isclose(cell["test_acc_mean"], 97.0)
    table = table1_markdown({"dataset": "mnist", "models": ["lenet5"], "seeds": 3, "epochs_scale": 1.0,
                             "cells": [cell]})
    assert "1 diverged" in table and "2/3" in table and "5.10e-03 / 99.24" in table


def test_table1_sweep_writes_the_table_and_skips_finished_cells(tmp_path, capsys):
    out = tmp_path / "t1"
    argv = ["reproduce", "table1", "--dataset", "mnist", "--bits", "2", "--stes", "identity", "clipped_relu",
            "--epochs-scale", "0.02", "--synthetic", "256", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    results = read_json(out / "results.json")
    cells = {(c["bits"], c["ste"]): c for c in results["cells"]}
    assert len(results["findings"]) == sum(e["mean"] is not None for e in results["ordering"])
    assert cells[(2, "identity")]["n"] == 1 and cells[(None, "float")]["n"] == 1
    assert cells[(2, "identity")]["paper_test_acc"] == 98.49
    table = (out / "report.md").read_text()
    assert "98.49" in table and "99.23" in table and (out / "lenet5-curves.png").is_file()
    assert read_config(out / "lenet5" / "seed0" / "2bit-clipped_relu").init.endswith("float")
    stamp = (out / "lenet5" / "seed0" / "float" / "checkpoint.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0  # everything is done: nothing is retrained
    assert capsys.readouterr().err.count("skip") == 3
    assert (out / "lenet5" / "seed0" / "float" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert main([*argv, "--first-seed", "1"]) == 0  # a second seed from a separate invocation joins the table
    results = read_json(out / "results.json")
    assert results["seed_list"] == [0, 1]
    cell = next(c for c in results["cells"] if c["ste"] == "identity")
    losses = [r["train_loss"] for r in results["runs"] if r["ste"] == "identity"]
    assert cell["n"] == 2 and math.isclose(cell["train_loss_std"], statistics.stdev(losses))


def test_instability_runs_from_the_minima_and_plots(tmp_path):
    out = tmp_path / "inst"
    argv = ["reproduce", "instability", "--pairs", "2:clipped_relu->identity", "--epochs-scale", "0.02",
            "--switch-epochs", "2", "--synthetic", "256", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    (pair,) = read_json(out / "results.json")["pairs"]
    assert pair["to_status"] == "finished" and pair["control_status"] == "finished"
    (found,) = read_json(out / "results.json")["findings"]
    assert found["id"] == "2:clipped_relu->identity" and found["held"] == (
        pair["to_train_loss"] > pair["start_train_loss"] and pair["to_train_loss"] > pair["control_train_loss"])
    switched = read_config(out / "2bit-clipped_relu-to-identity").flat_dict()
    assert switched["lr"] == 1e-5 and switched["quant"]["ste"] == "identity" and switched["lr_milestones"] == ()
    assert switched["init"].endswith("2bit-clipped_relu")
    assert (out / "instability.png").is_file() and "clipped_relu -> identity" in (out / "report.md").read_text()


def test_instability_then_continues_with_the_normal_schedule(tmp_path):
    out = tmp_path / "inst"
    argv = ["reproduce", "instability", "--pairs", "2:clipped_relu->identity", "--epochs-scale", "0.02",
            "--switch-epochs", "1", "--then-epochs", "2", "--no-control", "--synthetic", "256", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    (pair,) = read_json(out / "results.json")["pairs"]
    assert pair["to_then_status"] == "finished" and "control_status" not in pair
    then = read_config(out / "2bit-clipped_relu-to-identity-then").flat_dict()
    assert then["quant"]["ste"] == "identity" and then["epochs"] == 2 and then["lr"] != 1e-5
    assert then["init"].endswith("2bit-clipped_relu-to-identity")
    assert "then 2 ep." in (out / "report.md").read_text()


def test_instability_reports_the_minima_own_length(tmp_path):
    """Minima from a --table1-dir sweep keep their own number of epochs in the report, not this config's."""
    table1 = tmp_path / "t1"
    assert main(["reproduce", "table1", "--bits", "2", "--stes", "clipped_relu", "--epochs-scale", "0.04",
                 "--cell-epochs", "1", "--synthetic", "256", "--out", str(table1), "--no-progress"]) == 0
    out = tmp_path / "inst"
    assert main(["reproduce", "instability", "--pairs", "2:clipped_relu->identity", "--table1-dir", str(table1),
                 "--switch-epochs", "1", "--no-control", "--synthetic", "256", "--out", str(out),
                 "--no-progress"]) == 0
    results = read_json(out / "results.json")
    assert results["source_epochs"] == 1 and results["pairs"][0]["source_epochs"] == 1
    assert "(1 epoch)" in (out / "report.md").read_text()


def test_instability_markdown_brackets_the_exact_test_images():
    pair = {"bits": 4, "from": "relu", "to": "identity", "start_train_loss": 0.128, "start_test_acc": 0.8214,
            "start_test_acc_first1000": 0.919, "to_train_loss": 2.845, "to_test_acc": 0.2549,
            "to_test_acc_first1000": 0.241}
    text = instability_markdown({"model": "resnet20", "dataset": "cifar10", "epochs": 3, "lr": 1e-5,
                                 "source_epochs": 15, "then_epochs": 0, "pairs": [pair]})
    assert "1.280e-01 / 82.14 (91.9)" in text and "2.845e+00 / 25.49 (24.1)" in text
    assert "first 1,000 test images" in text and "| - |" in text  # no control run: a dash


def test_parse_pair_and_cli_errors(capsys):
    assert parse_pair("4:relu->identity") == (4, "relu", "identity")
    with pytest.raises(ValueError, match="BITS:FROM->TO"):
        parse_pair("relu to identity")
    assert main(["reproduce", "table1", "--models", "alexnet"]) == 2
    assert "lenet5" in capsys.readouterr().err
    assert main(["reproduce", "instability", "--pairs", "4-relu"]) == 2
    assert "BITS:FROM->TO" in capsys.readouterr().err


def test_table1_cells_can_train_for_their_own_number_of_epochs(tmp_path):
    out = tmp_path / "t1"
    argv = ["reproduce", "table1", "--dataset", "mnist", "--bits", "2", "--stes", "relu", "--epochs-scale", "0.04",
            "--cell-epochs", "1", "--synthetic", "256", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert read_json(out / "lenet5" / "seed0" / "float" / "results.json")["epochs"] == 2
    assert read_json(out / "lenet5" / "seed0" / "2bit-relu" / "results.json")["epochs"] == 1
    results = read_json(out / "results.json")
    assert results["cell_epochs"] == 1
    assert next(c for c in results["cells"] if c["ste"] == "relu")["n"] == 1  # the 1-epoch cell is in the table
    assert "quantized cells: 1" in (out / "report.md").read_text()
    bad = [a if a != str(out) else str(tmp_path / "bad") for a in argv]
    bad[bad.index("--cell-epochs") + 1] = "0"
    assert main(bad) == 2 and not (tmp_path / "bad" / "lenet5").exists()


def test_table1_jobs_train_runs_side_by_side_with_the_same_results(tmp_path):
    """--jobs 2: the two cells train in two spawned processes; every run gives what one process gives (the worker
    has one thread, like the test process, so the arithmetic is the same)."""
    argv = ["reproduce", "table1", "--dataset", "mnist", "--bits", "2", "--stes", "relu", "clipped_relu",
            "--epochs-scale", "0.02", "--synthetic", "128", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--jobs", "2", "--out", str(tmp_path / "two")]) == 0
    for run in ("float", "2bit-relu", "2bit-clipped_relu"):
        one, two = (read_json(tmp_path / d / "lenet5" / "seed0" / run / "results.json") for d in ("one", "two"))
        assert two["status"] == "finished" and two["train_loss"] == one["train_loss"], run
    assert main([*argv, "--jobs", "0", "--out", str(tmp_path / "bad")]) == 2


def test_a_rerun_with_other_settings_is_an_error_and_subsets_are_stated(tmp_path, capsys):
    out = tmp_path / "t1"
    argv = ["reproduce", "table1", "--bits", "2", "--stes", "relu", "--epochs-scale", "0.02", "--cell-epochs", "1",
            "--synthetic", "128", "--limit-test", "16", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    assert "the first 16 test images (--limit-test)" in report and "128 synthetic images" in report
    capsys.readouterr()
    assert main([*argv, "--lr", "0.05"]) == 2  # a finished run answers only for its own configuration
    err = capsys.readouterr().err
    assert "holds a finished run of another configuration (lr (--lr): None -> 0.05)" in err
    assert main(argv) == 0  # the same flags: every run skipped as done
    assert "skip" in capsys.readouterr().err
