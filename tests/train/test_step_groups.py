"""``--step-lr-scale`` / ``--step-weight-decay``: the learned steps (activation resolutions, LSQ weight steps) in
their own optimizer group, checked on the optimizer a run builds and on what a short run does to them."""

import pytest
import torch
from torch import nn

from stelab import QuantConfig, WeightQuantConfig, models
from stelab.io import read_jsonl, write_json
from stelab.train import TrainConfig, load_checkpoint, train
from stelab.train.quant_weights import quantize_run_weights
from stelab.train.resolutions import optimizer_groups
from stelab.train.runs import describe_run

LEARNED = dict(model="lenet5", dataset="mnist", synthetic=256, batch_size=64, epochs=1, lr=0.05,
               quant=QuantConfig(bits=2, learn_alpha=True, alpha_rule="lsq"),
               weights=WeightQuantConfig(bits=2, scale_rule="lsq"))


def _steps(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.rsplit(".", 1)[-1] in ("alpha", "weight_scale")}


def test_the_groups_split_exactly_the_learned_steps():
    config = TrainConfig(**LEARNED)
    model = quantize_run_weights(models.build("lenet5", config.quant), config)
    names = {id(p): n for n, p in model.named_parameters()}
    rest, steps = optimizer_groups(model, 0.1, 5e-4, step_lr_scale=0.25, step_weight_decay=0.0)
    assert sorted(names[id(p)] for p in steps["params"]) == sorted(_steps(dict(model.named_parameters())))
    assert len(steps["params"]) >= 4 and len(rest["params"]) + len(steps["params"]) == len(names)
    assert (rest["lr"], rest["weight_decay"], steps["lr"], steps["weight_decay"]) == (0.1, 5e-4, 0.025, 0.0)
    # the defaults keep one group, so optimizer states of earlier runs still load on resume
    assert len(optimizer_groups(model, 0.1, 5e-4)) == 1
    assert len(optimizer_groups(model, 0.1, 5e-4, step_weight_decay=5e-4)) == 1


def test_frozen_steps_stay_put_while_the_weights_train(tmp_path):
    start = TrainConfig(**LEARNED, out=str(tmp_path / "start"))
    train(start)
    first = load_checkpoint(tmp_path / "start" / "checkpoint.pt")["model"]
    frozen = start.replace(init=str(tmp_path / "start"), step_lr_scale=0.0, out=str(tmp_path / "frozen"))
    assert TrainConfig.from_json(frozen.to_json()) == frozen
    assert train(frozen)["status"] == "finished"
    after = load_checkpoint(tmp_path / "frozen" / "checkpoint.pt")["model"]
    assert _steps(after) and all(torch.equal(after[k], first[k]) for k in _steps(after))
    quantized = [k.replace("weight_scale", "weight") for k in _steps(after) if k.endswith("weight_scale")]
    assert quantized and all(not torch.equal(after[k], first[k]) for k in quantized)  # their weights trained
    # the run's title says its steps were frozen; the default's does not
    assert ", learned steps at 0 x lr" in describe_run(tmp_path / "frozen")
    assert "learned steps" not in describe_run(tmp_path / "start")
    moving = frozen.replace(step_lr_scale=1.0, step_weight_decay=0.0, out=str(tmp_path / "moving"))
    train(moving)
    assert describe_run(tmp_path / "moving").endswith("from a trained model, step decay 0, 1 epoch")
    moved = load_checkpoint(tmp_path / "moving" / "checkpoint.pt")["model"]
    assert any(not torch.equal(moved[k], first[k]) for k in _steps(moved))


@pytest.mark.parametrize("fields, match", [
    (dict(quant=QuantConfig(bits=2), weights=None, step_lr_scale=0.5), "learns none; add --learn-alpha"),
    (dict(step_weight_decay=0.0, weights=WeightQuantConfig(bits=2), quant=QuantConfig(bits=2)), "learns none"),
    (dict(step_lr_scale=-1.0), r"step_lr_scale must be .* >= 0, got -1.0 \(--step-lr-scale\)"),
    (dict(step_weight_decay=float("nan")), r"step_weight_decay must be .*\(--step-weight-decay\)"),
])
def test_bad_step_settings_are_refused_with_the_fix(fields, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**LEARNED, **fields})


def test_an_activation_only_run_groups_its_resolutions():
    model = models.build("lenet5", QuantConfig(bits=2, learn_alpha=True))
    rest, steps = optimizer_groups(model, 0.1, 1e-4, step_lr_scale=0.1)
    assert steps["params"] and all(isinstance(p, nn.Parameter) and p.dim() == 0 for p in steps["params"])
    assert steps["weight_decay"] == 1e-4 and steps["lr"] == pytest.approx(0.01)


def test_a_resolution_driven_negative_names_the_fix_and_the_fix_works(tmp_path):
    # rate 2 on synthetic data: the classifier's learned resolution goes negative within a few steps (seeds 0-2)
    config = TrainConfig(model="lenet5", synthetic=256, batch_size=64, epochs=2, lr=2.0,
                         quant=QuantConfig(bits=2, learn_alpha=True, alpha_rule="lsq"), out=str(tmp_path / "a"))
    summary = train(config, progress=False)
    assert summary["status"] == "diverged"
    (record,) = [r for r in read_jsonl(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "diverged"]
    assert "--step-lr-scale 0.1" in record["reason"] and "alpha" in record["reason"]
    fixed = config.replace(step_lr_scale=0.1, out=str(tmp_path / "b"))
    assert train(fixed, progress=False)["status"] == "finished"


def test_the_title_names_a_weight_decay_other_than_the_default(tmp_path):
    """Two runs that differ only in their weight decay get different titles (the compare report lists them)."""
    for name, decay in (("default", TrainConfig().weight_decay), ("strong", 5e-4)):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "config.json", TrainConfig(weight_decay=decay, epochs=3).to_dict())
    assert "wd" not in describe_run(tmp_path / "default")
    assert describe_run(tmp_path / "strong").endswith(": lr 0.1, wd 0.0005, 3 epochs")
