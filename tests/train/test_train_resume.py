"""Resume: a run interrupted after epoch 1 (an exception, or SIGKILL of the process) and resumed with --resume
ends bit-identical to the uninterrupted run (model, optimizer state, metrics apart from timings)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from stelab.activations.config import QuantConfig
from stelab.io import read_jsonl
from stelab.train import TrainConfig, load_checkpoint, train

# Augmentation on, so the resumed epochs must also replay the crops and flips.
BASE = TrainConfig(model="lenet5", dataset="mnist", synthetic=320, batch_size=64, epochs=3,
                   quant=QuantConfig(bits=2, ste="relu"), lr=0.05, augment=True, seed=7)


def assert_same_run(dir_a, dir_b):
    a, b = load_checkpoint(dir_a / "checkpoint.pt"), load_checkpoint(dir_b / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] and a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert a["scheduler"] == b["scheduler"]

    def epochs(d):
        return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")}
                for r in read_jsonl(d / "metrics.jsonl") if r["kind"] == "epoch"]

    assert epochs(dir_a) == epochs(dir_b)


class Interrupt:
    every = 1

    def __call__(self, *, step, **_):
        if step == 7:  # the 2nd step of epoch 2 (5 steps per epoch)
            raise KeyboardInterrupt


@pytest.mark.parametrize("warmup", [0.0, 1.6])  # 1.6 epochs = 8 steps: the warm-up spans the interruption
def test_resume_after_an_exception_is_bit_identical(tmp_path, warmup):
    base = BASE.replace(warmup_epochs=warmup)
    train(base.replace(out=str(tmp_path / "straight")), progress=False)
    broken = base.replace(out=str(tmp_path / "broken"))
    try:
        train(broken, hooks=[Interrupt()], progress=False)
        raise AssertionError("the hook should have interrupted the run")
    except KeyboardInterrupt:
        pass
    assert load_checkpoint(tmp_path / "broken" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "broken" / "results.json").exists()
    summary = train(broken, resume=True, progress=False)
    assert summary["status"] == "finished" and summary["epochs_done"] == 3
    assert_same_run(tmp_path / "straight", tmp_path / "broken")


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    config = BASE.replace(synthetic=2048, epochs=4)  # epochs long enough (~0.3 s) to be killed mid-run
    train(config.replace(out=str(tmp_path / "straight")), progress=False)
    out = tmp_path / "killed"
    argv = ["--model", "lenet5", "--dataset", "mnist", "--synthetic", "2048", "--batch-size", "64", "--epochs", "4",
            "--bits", "2", "--ste", "relu", "--lr", "0.05", "--augment", "--seed", "7", "--out", str(out),
            "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "stelab.cli", "train", *argv], env=env)
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)  # somewhere in epoch 2 (or later): whatever it was writing is lost
    proc.wait()
    assert not (out / "results.json").exists(), "the run finished before it could be killed"
    # The killed run was configured by the CLI; resuming it in-process checks that flags and config agree too.
    summary = train(config.replace(out=str(out)), resume=True, progress=False)
    assert summary["status"] == "finished" and summary["epochs_done"] == 4
    assert_same_run(tmp_path / "straight", out)
