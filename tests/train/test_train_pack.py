"""``TrainConfig.pack_saved`` / ``stelab train --pack-saved`` (and ``--recompute``): the same run, bit for bit, in
less memory; resumable with or without it; refused where it cannot apply; under DDP (2 CPU processes) the same
weights as without it."""

from __future__ import annotations

import pytest
import torch

from stelab.activations.config import QuantConfig
from stelab.cli import main
from stelab.train import TrainConfig, load_checkpoint, train

BASE = TrainConfig(model="lenet5", dataset="mnist", synthetic=192, batch_size=64, epochs=2,
                   quant=QuantConfig(bits=2, ste="clipped_relu"), lr=0.05, augment=True, seed=5)


def assert_same_weights(a_dir, b_dir):
    a, b = load_checkpoint(a_dir / "checkpoint.pt"), load_checkpoint(b_dir / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] and a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])


def test_config_default_off_old_files_load_and_bad_combinations_are_refused():
    assert TrainConfig().pack_saved is False
    old = {k: v for k, v in BASE.flat_dict().items() if k != "pack_saved"}  # a config.json from before the field
    assert TrainConfig.from_dict(old) == BASE
    assert TrainConfig.from_json(BASE.replace(pack_saved=True).to_json()).pack_saved is True
    with pytest.raises(ValueError, match="activations are float"):
        BASE.replace(quant=None, pack_saved=True)
    with pytest.raises(ValueError, match="torch.compile"):
        BASE.replace(compile=True, pack_saved=True)
    assert TrainConfig.from_dict(old).recompute is False
    with pytest.raises(ValueError, match="add --pack-saved"):
        BASE.replace(recompute=True)
    with pytest.raises(ValueError, match="add --recompute"):
        BASE.replace(pack_saved=True, recompute_limit=300)
    limited = BASE.replace(pack_saved=True, recompute=True, recompute_limit=300)
    assert TrainConfig.from_json(limited.to_json()) == limited


class Interrupt:
    every = 1

    def __call__(self, *, step, **_):
        if step == 4:  # the first step of epoch 2 (3 steps per epoch)
            raise KeyboardInterrupt


def test_packed_run_and_a_run_resumed_with_packing_equal_the_plain_run(tmp_path):
    train(BASE.replace(out=str(tmp_path / "plain")), progress=False)
    train(BASE.replace(out=str(tmp_path / "packed"), pack_saved=True), progress=False)
    assert_same_weights(tmp_path / "plain", tmp_path / "packed")
    train(BASE.replace(out=str(tmp_path / "recomputed"), pack_saved=True, recompute=True), progress=False)
    assert_same_weights(tmp_path / "plain", tmp_path / "recomputed")
    broken = BASE.replace(out=str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        train(broken, hooks=[Interrupt()], progress=False)
    # pack_saved changes memory, not the numbers: a run started without it may resume with it
    train(broken.replace(pack_saved=True), resume=True, progress=False)
    assert_same_weights(tmp_path / "plain", tmp_path / "resumed")


def test_cli_flag_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "lenet5", "--synthetic", "64", "--batch-size", "32", "--epochs", "1", "--bits", "2",
            "--out", str(out), "--no-progress"]
    assert main(argv + ["--pack-saved"]) == 0
    assert TrainConfig.from_dict(load_checkpoint(out / "checkpoint.pt")["config"]).pack_saved is True
    assert main(["train", "--resume", "--out", str(out), "--no-pack-saved", "--no-progress"]) == 0  # allowed
    assert main(["train", "--resume", "--out", str(out), "--recompute", "--no-progress"]) == 0  # packing as saved
    assert main(argv[:-3] + ["--float", "--pack-saved", "--out", str(tmp_path / "f")]) == 2
    assert "activations are float" in capsys.readouterr().err


def test_two_process_ddp_with_packing_equals_ddp_without(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["train", "--nproc", "2", "--model", "lenet5", "--synthetic", "128", "--batch-size", "64", "--epochs",
            "1", "--bits", "2", "--ste", "clipped_relu", "--lr", "0.05", "--seed", "3", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "plain")]) == 0
    assert main(argv + ["--out", str(tmp_path / "packed"), "--pack-saved", "--recompute", "--recompute-limit",
                        "100"]) == 0
    assert_same_weights(tmp_path / "plain", tmp_path / "packed")
