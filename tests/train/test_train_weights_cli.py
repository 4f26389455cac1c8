"""``stelab train`` with quantized weights: --weight-* and --optimizer flags, their one-line errors, tiny BCGD and
BinaryRelax runs, and --resume comparing the weight flags like the others."""

from __future__ import annotations

import pytest

from stelab.cli import main
from stelab.io import read_json
from stelab.train.runs import SUMMARY, read_config
from stelab.weights import WeightQuantConfig

TINY = ["--synthetic", "256", "--epochs", "1", "--no-progress"]


@pytest.mark.parametrize("optimizer", ["bcgd", "binaryrelax"])
def test_tiny_weight_quantized_runs_finish(optimizer, tmp_path, capsys):
    out = tmp_path / optimizer
    assert main(["train", *TINY, "--weight-bits", "2", "--optimizer", optimizer, "--out", str(out)]) == 0
    summary = read_json(out / SUMMARY)
    assert summary["status"] == "finished" and summary["optimizer"] == optimizer and summary["weight_bits"] == 2
    config = read_config(out).flat_dict()
    assert config["weights"] == WeightQuantConfig(bits=2).to_dict() and config["optimizer"] == optimizer
    assert "status=finished" in capsys.readouterr().out


def test_weight_flags_build_the_config(tmp_path):
    from stelab.cli import build_parser
    from stelab.cli.train import config_from_args

    def config(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    assert config().weights is None and config().optimizer == "sgd"
    c = config("--weight-bits", "2", "--weight-quantizer", "ternary", "--weight-ste", "hardtanh",
               "--weight-granularity", "tensor", "--weight-scale-rule", "lsq", "--weight-scale", "0.05",
               "--weight-first-last", "--optimizer", "binaryrelax", "--relax-lam", "0.5", "--relax-growth", "100",
               "--relax-hard-at", "0.9")
    assert c.weights == WeightQuantConfig(quantizer="ternary", bits=2, ste="hardtanh", granularity="tensor",
                                          scale_rule="lsq", scale=0.05)
    assert (c.weight_first_last, c.optimizer, c.relax_lam, c.relax_growth, c.relax_hard_at) == \
        (True, "binaryrelax", 0.5, 100.0, 0.9)
    assert config("--weight-bits", "1").weights == WeightQuantConfig(quantizer="binary", bits=1)
    assert config("--weight-bits", "2", "--optimizer", "bcgd", "--bcgd-rho", "0.001").bcgd_rho == 0.001
    assert config("--float", "--weight-bits", "4").run_name() == "lenet5-mnist-w4a32-seed0"


@pytest.mark.parametrize("argv, message", [
    (["--weight-quantizer", "binary"], "--weight-quantizer set(s) how weights are quantized, but weight "
                                       "quantization is off; give --weight-bits B"),
    (["--optimizer", "bcgd"], "optimizer 'bcgd' moves quantized weights, but the weights are float"),
    (["--weight-bits", "2", "--optimizer", "adam"], "unknown optimizer 'adam'; valid choices: bcgd, binaryrelax, sgd"),
    (["--weight-bits", "2", "--weight-quantizer", "octal"], "unknown weight quantizer 'octal'; valid choices: "
                                                            "binary, midrise, ternary, uniform"),
    (["--weight-bits", "2", "--weight-ste", "relu"],
     "valid choices for weights: approx_sign, dsq, ede, gaussian_smoothed, hardtanh, identity"),
    (["--weight-bits", "2", "--weight-granularity", "row"], "unknown granularity 'row'; valid choices: channel, "
                                                            "tensor"),
    (["--weight-bits", "2", "--weight-scale-rule", "mean"], "does not take scale rule 'mean'; valid choices for "
                                                            "it: max, fixed, lsq"),
    (["--weight-bits", "2", "--weight-quantizer", "binary"], "weight quantizer 'binary' takes bits 1, got 2"),
    (["--weight-bits", "2", "--bcgd-rho", "0.1"], "--bcgd-rho is a parameter of --optimizer bcgd, not of sgd"),
    (["--weight-bits", "2", "--optimizer", "bcgd", "--relax-lam", "2"], "--relax-lam is a parameter of --optimizer "
                                                                         "binaryrelax, not of bcgd"),
    (["--weight-first-last"], "give --weight-bits B too"),
])
def test_flag_errors_are_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stelab train: error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_resume_compares_the_weight_flags(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--epochs", "2", "--weight-bits", "2", "--optimizer", "binaryrelax", "--out", str(out)]
    assert main(argv) == 0
    (out / SUMMARY).unlink()  # as if killed: resumable
    capsys.readouterr()
    for flags, message in ((["--weight-bits", "4"], "--weight-bits gives weights.bits=4 but the run"),
                           (["--weight-granularity", "tensor", "--weight-bits", "2"], "weights.granularity="),
                           (["--optimizer", "bcgd", "--weight-bits", "2"], "--optimizer gives optimizer='bcgd'"),
                           (["--relax-hard-at", "0.5", "--weight-bits", "2", "--optimizer", "binaryrelax"],
                            "--relax-hard-at gives relax_hard_at=0.5")):
        assert main(["train", "--resume", "--out", str(out), *flags]) == 2
        assert message in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(out), "--weight-bits", "2", "--no-progress"]) == 0
    assert read_json(out / SUMMARY)["epochs_done"] == 2


def test_reproduce_instability_refuses_weight_quantization_before_running(tmp_path, capsys):
    # its minima are the activation-only folders of Table 1 (seed0/4bit-relu, ...)
    out = tmp_path / "t"
    assert main(["reproduce", "instability", "--synthetic", "64", "--weight-bits", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stelab reproduce: error: --weight-bits: the instability experiment continues") and \
        "stelab train --weight-bits B --init" in err
    assert not out.exists()


def test_reproduce_table1_with_weight_bits_names_its_cells_and_keeps_a_float_start(tmp_path):
    """A W2A2 sweep: the float run is the float network (its weights too), the cells are named w2a<bits>-<ste>,
    train from it with quantized weights, and the table says W2A2 and shows no paper numbers (the paper quantizes
    activations only)."""
    out = tmp_path / "t"
    assert main(["reproduce", "table1", "--dataset", "mnist", "--bits", "2", "--stes", "clipped_relu",
                 "--epochs-scale", "0.02", "--synthetic", "64", "--weight-bits", "2", "--optimizer", "bcgd",
                 "--out", str(out), "--no-progress"]) == 0
    seed = out / "lenet5" / "seed0"
    assert sorted(p.name for p in seed.iterdir()) == ["float", "w2a2-clipped_relu-bcgd"]
    float_config = read_config(seed / "float").flat_dict()
    assert float_config["weights"] is None and float_config["quant"] is None and float_config["optimizer"] == "sgd"
    cell = read_config(seed / "w2a2-clipped_relu-bcgd").flat_dict()
    assert cell["weights"]["bits"] == 2 and cell["optimizer"] == "bcgd" and cell["init"].endswith("float")
    results = read_json(out / "results.json")
    assert results["weights"] == "w2" and all(c["paper_test_acc"] is None for c in results["cells"])
    assert "| lenet5 | W2A2 | clipped_relu | - |" in (out / "report.md").read_text()
