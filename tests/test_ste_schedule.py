"""Scheduling an STE parameter over a run (stelab.ste_schedule): the shapes' values against their formulas, the
parse/refuse rules, and a training run whose epochs trained with the scheduled STE, resumed on the same schedule."""

from __future__ import annotations

import math

import pytest
import torch

import stelab
from stelab.activations.config import QuantConfig
from stelab.activations.schedule import SteSchedule, apply, parse_all, progress, scheduled
from stelab.cli import main
from stelab.io import read_jsonl
from stelab.train import TrainConfig, load_checkpoint, train


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_shapes_are_their_formulas(p):
    assert SteSchedule.parse("t=0.1:10:geometric").value(p) == pytest.approx(0.1 * 100**p, rel=1e-12)
    assert SteSchedule.parse("o=1:3").value(p) == pytest.approx(1 + 2 * p, rel=1e-12)
    assert SteSchedule.parse("width=1:0.1:cosine").value(p) == pytest.approx(
        0.1 + 0.9 * (1 + math.cos(math.pi * p)) / 2, rel=1e-12)
    assert SteSchedule.parse("o=1:3").value(-1) == 1 and SteSchedule.parse("o=1:3").value(2) == 3  # clamped


def test_progress_runs_from_start_to_end_over_the_epochs():
    assert [progress(e, 5) for e in range(1, 6)] == [0, 0.25, 0.5, 0.75, 1]
    assert progress(1, 1) == 0.0


@pytest.mark.parametrize("text, message", [
    ("t", "PARAM=START:END"), ("t=1", "PARAM=START:END"), ("t=a:2", "must be numbers"),
    ("t=1:2:spline", "unknown schedule shape 'spline'; valid: linear, geometric, cosine"),
    ("t=0:2:geometric", "one sign"), ("1t=0:2", "identifier")])
def test_bad_schedules_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        SteSchedule.parse(text)


def test_a_parameter_scheduled_twice_or_unknown_is_refused_before_training():
    with pytest.raises(ValueError, match="scheduled twice"):
        parse_all(["t=1:2", "t=2:3"])
    base = TrainConfig(model="lenet5", synthetic=64, epochs=2, quant=QuantConfig(bits=2, ste="ede"))
    with pytest.raises(ValueError, match="has no parameter"):
        base.replace(ste_schedule=("slope=0:1",))
    with pytest.raises(ValueError, match="ede t must be positive"):
        base.replace(ste_schedule=("t=0:1",))  # the value at the start is checked, not only the name
    with pytest.raises(ValueError, match="activations are float"):
        base.replace(quant=None, ste_schedule=("t=1:2",))
    config = base.replace(ste_schedule=["t=0.1:10:geometric"])
    assert config.ste_schedule == ("t=0.1:10:geometric",)
    assert TrainConfig.from_json(config.to_json()) == config


def test_apply_sets_every_quantized_activation_and_keeps_the_fused_plan():
    model = stelab.quantize_activations(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()),
                                        bits=2, ste="leaky_relu(slope=0.3)")
    schedules = parse_all(["slope=0.3:0:linear"])
    assert apply(model, schedules, 1.0) == "leaky_relu(slope=0.0)"
    layer = model[1]
    assert layer.ste.label == "leaky_relu(slope=0.0)" and layer._plan is not None  # still the fused op
    assert layer.config.ste == "leaky_relu(slope=0.3)"  # the config keeps what the layer was built with
    x = torch.tensor([-1.0, 0.5], requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0]
    assert scheduled("reste", parse_all(["o=1:3"]), 0.5).params["o"] == 2.0


class Stop:
    every = 1

    def __call__(self, *, step, **_):
        if step == 3:  # in epoch 2 (2 steps per epoch)
            raise KeyboardInterrupt


def test_training_records_the_scheduled_ste_and_a_resume_continues_it(tmp_path):
    config = TrainConfig(model="lenet5", synthetic=64, batch_size=32, epochs=3, lr=0.05, seed=1,
                         quant=QuantConfig(bits=2, ste="ede"), ste_schedule=("t=0.1:10:geometric",))
    train(config.replace(out=str(tmp_path / "a")), progress=False)
    stes = [r["ste"] for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "epoch"]
    assert stes == ["ede(t=0.1)", "ede(t=1.0)", "ede(t=10.0)"]
    broken = config.replace(out=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        train(broken, hooks=[Stop()], progress=False)
    train(broken, resume=True, progress=False)
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_cli_flag(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "lenet5", "--synthetic", "64", "--batch-size", "32", "--epochs", "2",
                 "--bits", "2", "--ste", "reste", "--ste-schedule", "o=1:3", "--out", str(out), "--no-progress"]) == 0
    stes = [r["ste"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "epoch"]
    assert stes == ["reste(m=0.1, o=1.0, t=1.5)", "reste(m=0.1, o=3.0, t=1.5)"]
    assert main(["train", "--model", "lenet5", "--synthetic", "64", "--epochs", "2", "--ste", "relu",
                 "--ste-schedule", "o=1:3", "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
