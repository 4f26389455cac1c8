"""The training loop: config round-trip, a 2-step run and its run folder, hooks, divergence, CLI errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stelab.activations.config import QuantConfig
from stelab.cli import main
from stelab.io import read_json, read_jsonl
from stelab.train import TrainConfig, load_checkpoint, load_model_from_run, train
from stelab.train.runs import read_config

Q2 = QuantConfig(bits=2)  # the default quantization, spelled out
# 256 synthetic MNIST-shaped images, batch 128: one epoch is exactly 2 optimizer steps.
TINY = dict(model="lenet5", dataset="mnist", synthetic=256, batch_size=128, epochs=1)


@settings(max_examples=25, deadline=None)
@given(bits=st.one_of(st.none(), st.sampled_from([1, 2, 4])), lr=st.one_of(st.none(), st.floats(1e-6, 1.0)),
       milestones=st.lists(st.floats(0.01, 0.99), max_size=3), seed=st.integers(0, 2**31 - 1),
       augment=st.one_of(st.none(), st.booleans()))
def test_config_round_trips_through_json(bits, lr, milestones, seed, augment):
    quant = None if bits is None else QuantConfig(bits=bits)
    config = TrainConfig(quant=quant, lr=lr, lr_milestones=tuple(milestones), seed=seed, augment=augment)
    assert TrainConfig.from_json(config.to_json()) == config


def test_config_rejects_bad_values_with_the_valid_choices():
    with pytest.raises(ValueError, match="cifar10, mnist"):
        TrainConfig(dataset="imagenet")
    with pytest.raises(ValueError, match="clipped_relu"):
        TrainConfig(quant=QuantConfig(ste="nope"))
    with pytest.raises(ValueError, match="fractions"):
        TrainConfig(lr_milestones=(20,))
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"epochz": 3})


def test_schedule_defaults_follow_the_documented_protocol():
    assert TrainConfig(model="lenet5").resolved_epochs() == 50
    assert TrainConfig(model="resnet20", dataset="cifar10").resolved_epochs() == 200
    assert TrainConfig(quant=None).resolved_lr() == 0.1 == TrainConfig(quant=Q2).resolved_lr()  # from scratch
    assert TrainConfig(quant=Q2, init="runs/float").resolved_lr() == 0.01  # fine-tuning a trained model
    assert TrainConfig(epochs=50).milestone_epochs() == [25, 37]
    assert TrainConfig(epochs=200).milestone_epochs() == [100, 150]
    assert TrainConfig(epochs=50, lr_milestones=()).milestone_epochs() == []


def test_two_step_run_writes_a_complete_run_folder(tmp_path):
    out = tmp_path / "float"
    summary = train(TrainConfig(**TINY, quant=None, out=str(out)), progress=False)
    assert summary["status"] == "finished" and summary["steps"] == 2 and summary["epochs_done"] == 1
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "results.json", "report.md", "curves.png"):
        assert (out / name).is_file(), name
    assert TrainConfig.from_dict(read_json(out / "config.json")) == TrainConfig(**TINY, quant=None, out=str(out))
    (record,) = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "epoch"]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "time_s"):
        assert math.isfinite(record[key]), key
    assert record["lr"] == 0.1 and 0 <= record["test_acc"] <= 1
    blob = load_checkpoint(out / "checkpoint.pt")
    assert blob["epoch"] == 1 and blob["step"] == 2 and blob["optimizer"]["state"]  # momentum buffers saved


def test_quantized_run_starts_from_the_float_weights(tmp_path):
    train(TrainConfig(**TINY, quant=None, out=str(tmp_path / "float")), progress=False)
    float_model = load_model_from_run(tmp_path / "float")
    # lr tiny and no momentum history: after 2 steps the weights are the float ones up to ~lr * |grad|.
    q = TrainConfig(**TINY, quant=QuantConfig(bits=2, ste="relu"), init=str(tmp_path / "float"), lr=1e-9,
                    out=str(tmp_path / "q"))
    train(q, progress=False)
    qmodel = load_model_from_run(tmp_path / "q")
    assert any(type(m).__name__ == "QuantReLU" for m in qmodel.modules())
    fs, qs = float_model.state_dict(), qmodel.state_dict()
    weights = [k for k in fs if k.endswith("weight")]
    assert weights and all(torch.allclose(fs[k], qs[k], atol=1e-6) for k in weights)


class RecordingHook:
    def __init__(self, every: int):
        self.every, self.calls = every, []

    def __call__(self, *, step, epoch, model, inputs, targets, loss_fn):
        self.calls.append(step)
        assert inputs.shape[0] == targets.shape[0] and isinstance(model, torch.nn.Module)
        with torch.no_grad():
            return {"loss_here": loss_fn(model(inputs), targets).item()}


def test_hooks_run_every_n_steps_and_their_records_land_in_metrics(tmp_path):
    hook = RecordingHook(every=3)
    train(TrainConfig(**{**TINY, "epochs": 4}, quant=Q2, out=str(tmp_path / "r")), hooks=[hook], progress=False)
    assert hook.calls == [3, 6]  # 8 steps in all
    records = [r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "hook"]
    assert [(r["step"], r["epoch"]) for r in records] == [(3, 2), (6, 3)]
    assert all(math.isfinite(r["loss_here"]) for r in records)


class PoisonHook:
    """Sets a weight to inf after the given step: the next loss is non-finite."""

    every = 1

    def __init__(self, at_step: int):
        self.at_step = at_step

    def __call__(self, *, step, model, **_):
        if step == self.at_step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "r"
    summary = train(TrainConfig(**{**TINY, "epochs": 3}, quant=Q2, out=str(out)), hooks=[PoisonHook(3)],
                    progress=False)
    assert summary["status"] == "diverged" and summary["steps"] == 4  # detected at the very next step
    assert read_json(out / "results.json")["status"] == "diverged"
    blob = load_checkpoint(out / "checkpoint.pt")
    assert blob["epoch"] == 1 and all(torch.isfinite(v).all() for v in blob["model"].values())
    kinds = [r["kind"] for r in read_jsonl(out / "metrics.jsonl")]
    assert kinds == ["epoch", "diverged"]


def test_an_existing_run_folder_needs_resume_and_the_same_config(tmp_path):
    config = TrainConfig(**TINY, quant=None, out=str(tmp_path / "r"))
    train(config, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        train(config, progress=False)
    with pytest.raises(ValueError, match="seed"):
        train(config.replace(seed=1), resume=True, progress=False)
    assert train(config, resume=True, progress=False)["status"] == "finished"  # already done: a no-op


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "imagenet"], "cifar10, mnist"),
    (["train", "--model", "alexnet"], "lenet5"),
    (["train", "--ste", "nope"], "clipped_relu"),
    (["train", "--bits", "0"], "bits"),
    (["train", "--lr-milestones", "30"], "fractions"),
])
def test_cli_argument_errors_are_one_line_messages(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_trains_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["train", "--float", "--synthetic", "256", "--epochs", "1", "--out", str(out), "--no-progress",
                 "--lr-milestones"])
    assert code == 0
    assert "status=finished" in capsys.readouterr().out
    config = read_config(out).flat_dict()
    assert config["quant"] is None and config["lr_milestones"] == () and config["batch_size"] == 128


def test_diagnose_every_adds_the_diagnostics_hook_from_the_cli(tmp_path):
    pytest.importorskip("stelab.diagnostics")
    out = tmp_path / "d"
    assert main(["train", "--bits", "2", "--synthetic", "256", "--batch-size", "128", "--epochs", "1",
                 "--diagnose-every", "2", "--out", str(out), "--no-progress"]) == 0
    (record,) = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "hook"]
    assert record["step"] == 2 and "diagnostics" in record
    assert read_config(out).diagnose_every == 2  # recorded: --resume keeps diagnosing


def test_train_takes_hooks_from_its_caller_only(tmp_path):
    # diagnose_every is a record of what the CLI was asked; train() itself adds no hook.
    train(TrainConfig(**TINY, quant=Q2, diagnose_every=1, out=str(tmp_path / "r")), progress=False)
    assert not [r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "hook"]
    with pytest.raises(TypeError, match="every >= 1"):
        train(TrainConfig(**TINY, quant=Q2, out=str(tmp_path / "bad")), hooks=[lambda **_: None], progress=False)


def test_training_imports_no_diagnostics():
    import subprocess
    import sys

    code = "import sys, stelab.train, stelab.train.worker; print('stelab.diagnostics' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_worker_runs_a_job_file_with_hook_specs(tmp_path):
    from stelab.train import worker
    from stelab.train.hooks import HookSpec

    spec = HookSpec(f"{__name__}:RecordingHook", {"every": 1})
    assert HookSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    config = TrainConfig(**TINY, quant=Q2, out=str(tmp_path / "w"))
    job = worker.write_job(tmp_path / "job.json", config, progress=False, hooks=[spec])
    assert worker.main(job) == 0
    records = [r for r in read_jsonl(tmp_path / "w" / "metrics.jsonl") if r["kind"] == "hook"]
    assert [r["step"] for r in records] == [1, 2]
    worker.write_job(job, config, resume=True, progress=False)
    assert worker.main(job) == 0  # already finished: resuming is a no-op
    with pytest.raises(ValueError, match="package.module:attribute"):
        HookSpec("no_colon").build()


def test_runs_made_before_the_rename_are_still_read(tmp_path):
    from stelab.io import write_json
    from stelab.train import is_done, read_summary

    write_json(tmp_path / "summary.json", {"status": "finished", "epochs": 1})
    assert read_summary(tmp_path) == {"status": "finished", "epochs": 1} and is_done(tmp_path)


def test_bf16_cosine_run_follows_the_cosine_and_trains_in_autocast(tmp_path, monkeypatch):
    from stelab.train import loop

    seen = []
    real = loop.autocast

    def spy(device, precision):
        seen.append(precision)
        return real(device, precision)

    monkeypatch.setattr(loop, "autocast", spy)
    out = tmp_path / "bf16"
    config = TrainConfig(**{**TINY, "epochs": 3}, quant=Q2, out=str(out), precision="bf16", lr_schedule="cosine")
    summary = train(config, progress=False)
    assert summary["status"] == "finished" and seen and set(seen) == {"bf16"}
    lrs = [r["lr"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "epoch"]
    expected = [0.1 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]  # the rate each epoch trained at
    assert lrs == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="valid choices: bf16, fp32"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="valid choices: cosine, step"):
        TrainConfig(lr_schedule="onecycle")


def test_warmup_ramps_the_scheduled_rate_per_step_and_leaves_the_schedule_alone(tmp_path, monkeypatch):
    seen = []
    real_step = torch.optim.SGD.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    common = dict(**{**TINY, "epochs": 3}, quant=Q2, lr_schedule="cosine")
    train(TrainConfig(**common, out=str(tmp_path / "warm"), warmup_epochs=1.5), progress=False)  # S = 3 steps
    scheduled = [0.1 * (1 + math.cos(math.pi * (s // 2) / 3)) / 2 for s in range(6)]  # 2 steps per epoch
    expected = [lr * min(1.0, (s + 1) / 3) for s, lr in enumerate(scheduled)]
    assert seen == pytest.approx(expected, rel=1e-12)
    seen.clear()
    train(TrainConfig(**common, out=str(tmp_path / "cold")), progress=False)
    assert seen == pytest.approx(scheduled, rel=1e-12)
    logged = [[r["lr"] for r in read_jsonl(tmp_path / d / "metrics.jsonl") if r["kind"] == "epoch"]
              for d in ("warm", "cold")]
    assert logged[0] == logged[1]  # the epoch schedule is the same with and without the warm-up
    for bad in (-0.5, 3.0, float("nan")):
        with pytest.raises(ValueError, match="warmup_epochs"):
            TrainConfig(epochs=3, warmup_epochs=bad)


def test_channels_last_default_is_the_measured_one_and_can_be_overridden():
    from stelab.train.config import CHANNELS_LAST_DEFAULT

    assert TrainConfig(model="resnet20", dataset="cifar10").resolved_channels_last("cpu") is \
        CHANNELS_LAST_DEFAULT[("cpu", "resnet20")]
    assert TrainConfig(model="resnet20", dataset="cifar10", channels_last=False).resolved_channels_last("cpu") is False
    assert TrainConfig(channels_last=True).resolved_channels_last("cpu") is True
