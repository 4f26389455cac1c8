"""quantize_model (activations and weights in one call, each with include/exclude/overrides), the combined summary,
per-layer weight overrides, and W2A2 state dicts that load into the float model and back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import stelab
from stelab.weights import QuantConv2d, QuantLinear, model_size_bits, weight_quantized_modules


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 8 * 8, 10), nn.ReLU(), nn.Linear(10, 3),
    )


def w2a2(model: nn.Module) -> nn.Module:
    return stelab.quantize_model(model, activations={"bits": 2, "ste": "clipped_relu", "exclude": "2"},
                                 weights={"bits": 2, "exclude": ["0", "8"], "overrides": {"6": {"bits": 4}}})


def test_quantize_model_with_dicts_patterns_and_overrides():
    model = small_cnn()
    q = w2a2(model)
    assert q is not model and type(model[3]) is nn.Conv2d  # a copy; the float model is untouched
    assert [n for n, _ in stelab.quantized_modules(q)] == ["4", "7"]  # "2" excluded
    assert isinstance(q[2], nn.ReLU) and q[4].config.ste == "clipped_relu"
    layers = dict(weight_quantized_modules(q))
    assert list(layers) == ["3", "6"]  # the first and last layers' weights excluded
    assert isinstance(layers["3"], QuantConv2d) and isinstance(layers["6"], QuantLinear)
    assert (layers["3"].bits, layers["6"].bits) == (2, 4)
    # configs work as well as dicts, and None leaves that side float
    same = stelab.quantize_model(model, activations=stelab.QuantConfig(bits=4),
                                 weights=stelab.WeightQuantConfig(quantizer="ternary"))
    assert {m.bits for _, m in stelab.quantized_modules(same)} == {4}
    assert {m.weight_config.quantizer for _, m in weight_quantized_modules(same)} == {"ternary"}
    assert stelab.quantized_modules(stelab.quantize_model(model, weights={"bits": 8})) == []
    inplace = stelab.quantize_model(model, weights={"bits": 3}, inplace=True)
    assert inplace is model and isinstance(model[0], QuantConv2d)


def test_quantize_model_errors_list_the_valid_keys():
    with pytest.raises(ValueError, match=r"weights: unknown key\(s\) \['bitz'\]; valid keys: quantizer, bits, .*"
                                         r"include, exclude, overrides"):
        stelab.quantize_model(small_cnn(), weights={"bitz": 2})
    with pytest.raises(ValueError, match=r"activations: unknown key\(s\) \['stee'\]"):
        stelab.quantize_model(small_cnn(), activations={"stee": "relu"})
    with pytest.raises(TypeError, match="weights must be a WeightQuantConfig, a mapping"):
        stelab.quantize_model(small_cnn(), weights=2)
    with pytest.raises(ValueError, match="overrides pattern 'fc' matches no Linear/Conv2d layer; the candidates "
                                         "are: 0, 3, 6, 8"):
        stelab.quantize_model(small_cnn(), weights={"overrides": {"fc": {"bits": 4}}})
    with pytest.raises(ValueError, match=r"overrides\['6'\]: unknown WeightQuantConfig field"):
        stelab.quantize_weights(small_cnn(), overrides={"6": {"bitz": 4}})
    with pytest.raises(TypeError, match=r"overrides\['6'\] must be a WeightQuantConfig or a mapping"):
        stelab.quantize_weights(small_cnn(), overrides={"6": 4})


def test_weight_overrides_apply_in_order_and_take_whole_configs():
    q = stelab.quantize_weights(small_cnn(), bits=2, overrides={"[36]": {"bits": 4}, "6": {"granularity": "tensor"},
                                                                "8": stelab.WeightQuantConfig(quantizer="binary")})
    configs = {n: m.weight_config for n, m in weight_quantized_modules(q)}
    assert configs["0"] == stelab.WeightQuantConfig(bits=2)
    assert configs["3"] == stelab.WeightQuantConfig(bits=4)
    assert configs["6"] == stelab.WeightQuantConfig(bits=4, granularity="tensor")  # later patterns win, field-wise
    assert configs["8"] == stelab.WeightQuantConfig(quantizer="binary")


def test_summary_shows_activations_weights_and_model_size():
    q = w2a2(small_cnn())
    text = stelab.summary(q)
    assert "| name | bits | forward | alpha | STE | alpha mode |" in text
    assert f"| 4 | 2 | staircase | {stelab.lloyd_alpha(2):.4f} | clipped_relu | fixed |" in text
    assert "| name | quantizer | bits | granularity | scale | STE | weights |" in text
    assert "| 3 | uniform | 2 | channel | max | identity | 216 |" in text
    assert "| 6 | uniform | 4 | channel | max | identity | 3840 |" in text
    # sizes: quantized weights at 2 and 4 bits plus one 32-bit scale per output channel; the rest at 32 bits
    n_params = sum(p.numel() for p in q.parameters())
    size = 32 * (n_params - 216 - 3840) + 2 * 216 + 32 * 6 + 4 * 3840 + 32 * 10
    assert model_size_bits(q) == size
    assert f"model size: {size} bits" in text and f"vs {32 * n_params} bits" in text
    assert text == stelab.activation_summary(q) + "\n" + stelab.weight_summary(q)  # one source for each part
    plain = stelab.summary(small_cnn())
    assert plain.startswith("no quantized activations\n") and "no quantized weights" in plain


def test_w2a2_state_dict_loads_into_the_float_model_and_back():
    model = small_cnn()
    q = w2a2(model)
    assert set(q.state_dict()) == set(model.state_dict())
    float_twin = small_cnn()
    for p in float_twin.parameters():
        nn.init.zeros_(p)
    float_twin.load_state_dict(q.state_dict())  # strict
    for key, value in model.state_dict().items():
        assert torch.equal(float_twin.state_dict()[key], value), key
    q2 = w2a2(small_cnn())
    q2.load_state_dict(float_twin.state_dict())
    x = torch.randn(2, 3, 8, 8)
    q.eval(), q2.eval()
    assert torch.equal(q(x), q2(x))
    # a learned weight step (LSQ) adds weight_scale; the float model loads the rest, the quantized one all of it
    lsq = stelab.quantize_model(model, weights={"bits": 2, "scale_rule": "lsq"})
    assert {k for k in lsq.state_dict() if k not in model.state_dict()} == {"0.weight_scale", "3.weight_scale",
                                                                             "6.weight_scale", "8.weight_scale"}
