"""TrainConfig holds a QuantConfig (``quant``; None = float): nested JSON, and config.json files of the legacy flat
form (``bits``, ``ste``, ``forward``, ``alpha`` at the top) still load, resume and name their runs as before."""

from __future__ import annotations

import json

import pytest

from stelab.activations.config import QuantConfig
from stelab.cli import main
from stelab.io import read_json, read_jsonl, write_json
from stelab.train import TrainConfig, read_config, train

# A config.json as `stelab train --bits 2 --synthetic 512 --batch-size 64 --epochs 1` wrote it before `quant` existed.
LEGACY = {
    "model": "lenet5", "dataset": "mnist", "bits": 2, "ste": "clipped_relu", "forward": "staircase", "alpha": None,
    "init": None, "epochs": 1, "lr": None, "lr_milestones": [0.5, 0.75], "lr_gamma": 0.1, "lr_schedule": "step",
    "batch_size": 64, "momentum": 0.9, "weight_decay": 0.0001, "nesterov": False, "augment": None, "seed": 0,
    "data_dir": None, "out": "runs/old", "device": "auto", "compile": False, "channels_last": None,
    "precision": "fp32", "limit_train": 0, "limit_test": 0, "synthetic": 512, "eval_batch_size": 1000,
    "diagnose_every": 0, "save_best": False,
}


def test_quant_is_a_nested_quant_config_with_the_nan_check_off():
    config = TrainConfig(quant=QuantConfig(bits=4, ste="relu", alpha=0.3))
    assert config.quant == QuantConfig(bits=4, ste="relu", alpha=0.3, check_nan=False)  # the loop checks the loss
    data = config.to_dict()
    assert data["activations"]["quant"] == config.quant.to_dict() and "bits" not in data["activations"]
    assert TrainConfig.from_json(config.to_json()) == config
    assert TrainConfig().quant == QuantConfig(check_nan=False)  # the default: QuantConfig's defaults
    assert TrainConfig(quant=None).run_name() == "lenet5-mnist-float-seed0"
    assert config.run_name() == "lenet5-mnist-4bit-relu-seed0"
    with pytest.raises(TypeError, match="quant must be a stelab.QuantConfig or None"):
        TrainConfig(quant=2)


def test_legacy_flat_configs_load():
    config = TrainConfig.from_dict(LEGACY)
    assert config.quant == QuantConfig(bits=2, ste="clipped_relu", check_nan=False)
    assert config.run_name() == "lenet5-mnist-2bit-clipped_relu-seed0"
    assert config == TrainConfig.from_dict(config.to_dict())
    float_run = TrainConfig.from_dict({**LEGACY, "bits": None, "ste": "relu"})
    assert float_run.quant is None and float_run.run_name() == "lenet5-mnist-float-seed0"
    partial = TrainConfig.from_dict({"ste": "relu", "alpha": 0.5})  # older files: missing keys take the defaults
    assert partial.quant == QuantConfig(ste="relu", alpha=0.5, check_nan=False)
    with pytest.raises(ValueError, match="both 'quant' and the legacy"):
        TrainConfig.from_dict({**LEGACY, "quant": None})
    with pytest.raises(ValueError, match="unknown STE 'nope'"):
        TrainConfig.from_dict({**LEGACY, "ste": "nope"})


def test_a_legacy_run_folder_reads_and_resumes(tmp_path, capsys):
    out = tmp_path / "old"
    config = TrainConfig.from_dict({**LEGACY, "synthetic": 128, "batch_size": 64, "epochs": 2, "out": str(out)})
    train(config.replace(epochs=1), progress=False)  # a run with one epoch done (its checkpoint) ...
    # ... as written then, by a run asked to diagnose every step (a runtime field: resuming keeps it)
    write_json(out / "config.json", {**LEGACY, "synthetic": 128, "epochs": 2, "out": str(out), "diagnose_every": 1})
    (out / "results.json").unlink()
    assert read_config(out) == config.replace(diagnose_every=1)
    # The CLI resumes it: the flags given agree with the legacy file, field by field.
    assert main(["train", "--resume", "--out", str(out), "--bits", "2", "--ste", "clipped_relu", "--no-progress"]) == 0
    assert read_json(out / "results.json")["epochs_done"] == 2
    assert read_json(out / "results.json")["bits"] == 2 and read_json(out / "results.json")["ste"] == "clipped_relu"
    assert json.loads((out / "config.json").read_text())["activations"]["quant"]["bits"] == 2  # the sectioned form
    # The CLI built the diagnostics hook from the saved diagnose_every: epoch 2's steps (3 and 4) are diagnosed.
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "hook"] == [3, 4]
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--ste", "relu"]) == 2
    assert "--ste gives ste='relu'" in capsys.readouterr().err


def test_bf16_on_a_cpu_without_native_bfloat16_gets_a_note(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for native in (False, True):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda native=native: native)
        note = TrainConfig(precision="bf16", device="cpu").precision_note()
        assert (note is None) == native
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert "2x slower than fp32" in TrainConfig(precision="bf16", device="cpu").precision_note()
    assert TrainConfig(precision="fp32", device="cpu").precision_note() is None


def test_the_fields_come_in_sections_and_every_form_of_config_json_loads():
    """config.json nests the fields by section; the flat form of the files written before the sections loads the same,
    and a wrong key names its section and the valid fields."""
    from stelab.train.config import RUNTIME_FIELDS, SECTIONS, may_change, section_fields

    config = TrainConfig(lr=0.05, epochs=3, quant=QuantConfig(bits=4), pack_saved=True, seed=2)
    data = config.to_dict()
    assert list(data) == list(SECTIONS)
    assert data["schedule"]["lr"] == 0.05 and data["model"]["seed"] == 2 and data["runtime"]["pack_saved"] is True
    assert TrainConfig.from_dict(data) == config == TrainConfig.from_dict(config.flat_dict())
    assert config.section("schedule")["epochs"] == 3
    every = [f for s in SECTIONS for f in section_fields(s)]
    assert sorted(every) == sorted(config.flat_dict()) and len(every) == len(set(every))  # each field in one section
    with pytest.raises(ValueError, match="in section 'schedule'; valid fields there: epochs, lr"):
        TrainConfig.from_dict({**data, "schedule": {**data["schedule"], "learning_rate": 0.1}})
    # the resume rule: the runtime section, except what changes the numbers
    assert may_change("device") and may_change("pack_saved") and not may_change("precision")
    assert not may_change("lr") and not may_change("channels_last") and "out" in RUNTIME_FIELDS
