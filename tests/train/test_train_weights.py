"""Quantized weights in training: TrainConfig.weights and the optimizer wrappers (JSON, legacy files, names, errors),
which layers are quantized, init from float and quantized runs, BCGD/BinaryRelax runs, and an interrupted
BinaryRelax run resumed bit-identically (its lambda and step count included)."""

from __future__ import annotations

import math

import pytest
import torch

from stelab.activations.config import QuantConfig
from stelab.io import read_jsonl
from stelab.models import build
from stelab.train import TrainConfig, load_checkpoint, load_model_from_run, train
from stelab.train.quant_weights import binaryrelax_schedule, deployed_weights, float_layers, quantize_run_weights
from stelab.weights import WeightQuantConfig, weight_quantized_modules

W2 = WeightQuantConfig(bits=2)
BASE = TrainConfig(model="lenet5", dataset="mnist", synthetic=320, batch_size=64, epochs=3, lr=0.05, augment=True,
                   seed=7, quant=QuantConfig(bits=2, ste="clipped_relu"), weights=W2, optimizer="binaryrelax",
                   relax_hard_at=0.6)


def test_weights_nest_in_json_and_legacy_files_load():
    config = TrainConfig(weights=WeightQuantConfig(quantizer="ternary", ste="hardtanh"), optimizer="bcgd",
                         bcgd_rho=1e-3, weight_first_last=True)
    data = config.to_dict()
    assert data["weights"]["weights"] == config.weights.to_dict() and data["optimizer"]["optimizer"] == "bcgd"
    assert TrainConfig.from_json(config.to_json()) == config
    old = {k: v for k, v in TrainConfig().flat_dict().items()
           if k not in ("weights", "weight_first_last", "optimizer", "bcgd_rho", "relax_lam", "relax_growth",
                        "relax_hard_at")}
    legacy = TrainConfig.from_dict(old)  # a config.json written before the weights existed
    assert legacy.weights is None and legacy.optimizer == "sgd" and legacy == TrainConfig()


def test_run_names_of_activation_only_runs_are_unchanged():
    assert TrainConfig().run_name() == "lenet5-mnist-2bit-clipped_relu-seed0"
    assert TrainConfig(quant=None).run_name() == "lenet5-mnist-float-seed0"
    r20 = TrainConfig(model="resnet20", dataset="cifar10", weights=W2)
    assert r20.run_name() == "resnet20-cifar10-w2a2-clipped_relu-seed0"
    assert r20.replace(optimizer="bcgd").run_name() == "resnet20-cifar10-w2a2-clipped_relu-bcgd-seed0"
    assert r20.replace(weights=WeightQuantConfig(quantizer="binary"), quant=None).run_name() == \
        "resnet20-cifar10-w1a32-seed0"
    assert r20.replace(weights=WeightQuantConfig(quantizer="ternary")).run_name() == \
        "resnet20-cifar10-w2ta2-clipped_relu-seed0"


@pytest.mark.parametrize("fields, message", [
    ({"optimizer": "bcgd"}, "optimizer 'bcgd' moves quantized weights, but the weights are float; quantize them "
                            r"\(--weight-bits B"),
    ({"optimizer": "adam", "weights": W2}, "unknown optimizer 'adam'; valid choices: bcgd, binaryrelax, sgd"),
    ({"weight_first_last": True}, "give --weight-bits B too"),
    ({"weights": W2, "bcgd_rho": 2.0}, r"bcgd_rho must be in \[0, 1\]"),
    ({"weights": W2, "relax_growth": 0.5}, "relax_growth must be a finite number >= 1"),
    ({"weights": W2, "relax_hard_at": 0.0}, r"relax_hard_at .* in \(0, 1\]"),
])
def test_config_errors(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)
    with pytest.raises(TypeError, match="weights must be a stelab.weights.WeightQuantConfig or None"):
        TrainConfig(weights=2)


def test_first_and_last_layers_stay_float_by_default():
    config = TrainConfig(model="resnet20", dataset="cifar10", weights=W2)
    model = quantize_run_weights(build("resnet20"), config)
    names = [n for n, _ in weight_quantized_modules(model)]
    assert "stem.0" not in names and "fc" not in names and len(names) == 18
    assert float_layers(build("lenet5"), TrainConfig(weights=W2)) == ["features.0.0", "classifier.7"]
    every = quantize_run_weights(build("resnet20"), config.replace(weight_first_last=True))
    assert len(weight_quantized_modules(every)) == 20
    plain = build("lenet5")
    assert quantize_run_weights(plain, TrainConfig()) is plain and not weight_quantized_modules(plain)


def test_binaryrelax_schedule_is_a_fraction_of_the_run():
    config = TrainConfig(weights=W2, optimizer="binaryrelax", relax_growth=1e4, relax_hard_at=0.8)
    hard_after, rate = binaryrelax_schedule(config, 1000)
    assert hard_after == 800 and rate**800 == pytest.approx(1e4, rel=1e-9)
    assert binaryrelax_schedule(config, 100)[1] ** 80 == pytest.approx(1e4, rel=1e-9)  # shorter run, same shape
    assert binaryrelax_schedule(config, 1) == (1, pytest.approx(1e4))


def test_binaryrelax_run_resumes_bit_identically(tmp_path):
    class Interrupt:
        every = 1

        def __call__(self, *, step, **_):
            if step == 7:  # the 2nd step of epoch 2 (5 steps per epoch)
                raise KeyboardInterrupt

    straight = train(BASE.replace(out=str(tmp_path / "straight")), progress=False)
    broken = BASE.replace(out=str(tmp_path / "broken"))
    with pytest.raises(KeyboardInterrupt):
        train(broken, hooks=[Interrupt()], progress=False)
    saved = load_checkpoint(tmp_path / "broken" / "checkpoint.pt")["optimizer"]
    assert saved["steps"] == 5 and not saved["hard"] and saved["hard_after"] == 9  # round(0.6 * 15)
    assert saved["lam"] == pytest.approx(1e4 ** (5 / 9))
    resumed = train(broken, resume=True, progress=False)
    assert resumed["status"] == straight["status"] == "finished"
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("straight", "broken"))
    assert a["step"] == b["step"] == 15
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert {k: v for k, v in a["optimizer"].items() if k != "optimizer"} == \
        {k: v for k, v in b["optimizer"].items() if k != "optimizer"}
    assert a["optimizer"]["optimizer"]["state"].keys() == b["optimizer"]["optimizer"]["state"].keys()
    for pa, pb in zip(a["optimizer"]["optimizer"]["state"].values(), b["optimizer"]["optimizer"]["state"].values()):
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert a["optimizer"]["hard"] and a["optimizer"]["steps"] == 15

    def epochs(d):
        return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")}
                for r in read_jsonl(d / "metrics.jsonl") if r["kind"] == "epoch"]

    assert epochs(tmp_path / "straight") == epochs(tmp_path / "broken")
    assert straight["weight_bits"] == 2 and straight["optimizer"] == "binaryrelax"


def test_init_loads_a_float_run_before_quantizing_and_a_quantized_run_with_its_steps(tmp_path):
    tiny = dict(synthetic=128, batch_size=64, epochs=1, seed=1)
    float_run = tmp_path / "float"
    train(TrainConfig(quant=None, out=str(float_run), **tiny), progress=False)
    lsq = WeightQuantConfig(bits=2, scale_rule="lsq")
    from stelab.train.runs import build_model

    model = build_model(TrainConfig(weights=lsq, **tiny), init=str(float_run))
    float_state = load_checkpoint(float_run / "checkpoint.pt")["model"]
    layer = model.get_submodule("classifier.1")
    assert torch.equal(layer.weight, float_state["classifier.1.weight"])
    # the step was fitted to the loaded weights (LSQ's 2 mean|w| / sqrt(Q_P) per channel), not to the random ones
    expected = 2 * float_state["classifier.1.weight"].abs().mean(1) / math.sqrt(1)
    assert torch.allclose(layer.weight_scale.detach(), expected)
    quant_run = tmp_path / "w2-lsq"
    train(TrainConfig(weights=lsq, init=str(float_run), out=str(quant_run), **tiny), progress=False)
    steps = {k: v for k, v in load_checkpoint(quant_run / "checkpoint.pt")["model"].items() if "weight_scale" in k}
    assert len(steps) == 3  # the first and last layers stay float
    again = build_model(TrainConfig(weights=lsq, **tiny), init=str(quant_run))  # steps included
    assert all(torch.equal(again.state_dict()[k], v) for k, v in steps.items())
    loaded = load_model_from_run(quant_run)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in steps.items())


def test_evaluation_uses_the_deployed_weights():
    model = quantize_run_weights(build("lenet5"), TrainConfig(weights=W2))
    layers = [m for _, m in weight_quantized_modules(model)]
    for m in layers:
        m.relax = 2.0
    with deployed_weights(model):
        assert all(m.relax is None for m in layers)
        assert all(torch.equal(m.quantized_weight(), m.project()) for m in layers)
    assert all(m.relax == 2.0 for m in layers)


def test_a_start_at_other_widths_refits_its_learned_steps(tmp_path, capsys):
    tiny = dict(synthetic=128, batch_size=64, epochs=1, seed=1)
    from stelab.train.runs import build_model

    def config(bits):
        return TrainConfig(quant=QuantConfig(bits=bits, learn_alpha=True, alpha_rule="lsq"),
                           weights=WeightQuantConfig(bits=bits, scale_rule="lsq"), **tiny)

    w4a4 = tmp_path / "w4a4"
    train(config(4).replace(out=str(w4a4)), progress=False)
    state = load_checkpoint(w4a4 / "checkpoint.pt")["model"]
    same = build_model(config(4), init=str(w4a4))
    assert all(torch.equal(same.state_dict()[k], v) for k, v in state.items())
    assert "other widths" not in capsys.readouterr().err
    # a bare state dict beside the run's config.json (how results/ keeps a network) says its widths as well
    torch.save(state, tmp_path / "model.pt")
    (tmp_path / "config.json").write_text((w4a4 / "config.json").read_text())
    for init in (w4a4, tmp_path / "model.pt"):
        w2a2 = build_model(config(2), init=str(init))
        assert "other widths" in capsys.readouterr().err
        got = w2a2.state_dict()
        alphas = [k for k in state if k.endswith(".alpha")]
        assert alphas and all(torch.allclose(got[k], state[k] * math.sqrt(15 / 3)) for k in alphas)
        layer = w2a2.get_submodule("classifier.1")
        expected = 2 * state["classifier.1.weight"].abs().mean(1) / math.sqrt(1)  # LSQ's init, Q_P = 1 at 2 bits
        assert torch.allclose(layer.weight_scale.detach(), expected)
        assert not torch.allclose(state["classifier.1.weight_scale"], expected)
        assert all(torch.equal(got[k], v) for k, v in state.items() if not k.endswith(("alpha", "weight_scale")))


def test_another_weight_grid_at_the_same_width_refits_and_an_unknown_start_says_so(tmp_path, capsys):
    from stelab.train.runs import build_model

    tiny = dict(synthetic=128, batch_size=64, epochs=1, seed=1)
    acts = QuantConfig(bits=2, learn_alpha=True, alpha_rule="lsq")
    w2 = tmp_path / "w2-uniform"
    train(TrainConfig(quant=acts, weights=WeightQuantConfig(bits=2, scale_rule="lsq"), out=str(w2), **tiny),
          progress=False)
    state = load_checkpoint(w2 / "checkpoint.pt")["model"]
    midrise = build_model(TrainConfig(quant=acts, weights=WeightQuantConfig(quantizer="midrise", bits=2,
                                                                           scale_rule="lsq"), **tiny), init=str(w2))
    assert "with another weight quantizer" in capsys.readouterr().err
    layer = midrise.get_submodule("classifier.1")
    # midrise's lsq start: mean|w| / sqrt(Q_P), Q_P = 3 at 2 bits
    assert torch.allclose(layer.weight_scale.detach(), state["classifier.1.weight"].abs().mean(1) / math.sqrt(3))
    alphas = [k for k in state if k.endswith(".alpha")]
    assert alphas and all(torch.equal(midrise.state_dict()[k], state[k]) for k in alphas)  # same activation width
    torch.save(state, tmp_path / "bare.pt")  # no config.json beside it: its widths are unknown
    kept = build_model(TrainConfig(quant=QuantConfig(bits=4, learn_alpha=True, alpha_rule="lsq"),
                                   weights=WeightQuantConfig(bits=4, scale_rule="lsq"), **tiny),
                       init=str(tmp_path / "bare.pt"))
    err = capsys.readouterr().err
    assert "widths it was trained at are unknown" in err and "not re-fitted" in err
    assert all(torch.equal(kept.state_dict()[k], v) for k, v in state.items())
