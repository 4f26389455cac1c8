"""WeightQuantConfig (JSON, validation), QuantLinear/QuantConv2d (state dicts, from_float), quantize_weights and
weight_summary."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from stelab.weights import (
    QuantConv2d,
    QuantLinear,
    WeightQuantConfig,
    model_size_bits,
    quantize_weight,
    quantize_weights,
    weight_layer_names,
    weight_summary,
)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([{"quantizer": "binary"}, {"quantizer": "ternary", "scale_rule": "lsq"},
                        {"quantizer": "uniform", "bits": 3}, {"bits": 8, "scale": 0.125}]),
       st.sampled_from(["identity", "hardtanh", "approx_sign", "leaky_relu(slope=0.05)"]),
       st.sampled_from(["tensor", "channel"]))
def test_config_json_round_trip(fields, ste, granularity):
    cfg = WeightQuantConfig(ste=ste, granularity=granularity, **fields)
    assert WeightQuantConfig.from_json(cfg.to_json()) == cfg


def test_config_defaults_and_derived_fields():
    assert (WeightQuantConfig().effective_bits, WeightQuantConfig().rule) == (4, "max")
    assert (WeightQuantConfig(quantizer="binary").effective_bits, WeightQuantConfig(quantizer="binary").rule) == (1,
                                                                                                              "mean")
    assert WeightQuantConfig(scale=0.5).rule == "fixed" and WeightQuantConfig(scale_rule="lsq").learned


@pytest.mark.parametrize("fields, message", [
    ({"quantizer": "octal"}, "valid choices: binary, midrise, ternary, uniform"),
    ({"quantizer": "binary", "bits": 2}, "takes bits 1, got 2"),
    ({"bits": 1}, "takes bits 2..16, got 1"),
    ({"bits": 2.0}, "bits must be an int"),
    ({"granularity": "row"}, "valid choices: channel, tensor"),
    ({"scale_rule": "median"}, "valid choices: fixed, lsq, max, mean"),
    ({"quantizer": "binary", "scale_rule": "max"}, "valid choices for it: mean, fixed, lsq"),
    ({"scale_rule": "fixed"}, "needs a scale"),
    ({"scale_rule": "max", "scale": 0.1}, "a scale is given only with scale_rule 'fixed' or 'lsq'"),
    ({"scale": -1.0}, "positive finite"),
    ({"ste": "relu"}, "valid choices for weights: approx_sign"),
    ({"ste": "nope"}, "unknown STE 'nope'; valid choices"),
])
def test_bad_config_values_raise_listing_the_valid_ones(fields, message):
    with pytest.raises((ValueError, TypeError), match=message):
        WeightQuantConfig(**fields)


def test_unknown_field_lists_the_fields():
    with pytest.raises(ValueError, match="valid fields: quantizer, bits, ste, granularity, scale_rule, scale"):
        WeightQuantConfig.merged(bitz=2)
    with pytest.raises(ValueError, match="valid fields"):
        WeightQuantConfig.from_json('{"quantiser": "binary"}')


def test_forward_uses_quantized_weights():
    torch.manual_seed(0)
    lin, conv = nn.Linear(6, 3), nn.Conv2d(2, 4, 3, padding=1, bias=False)
    qlin, qconv = QuantLinear.from_float(lin, quantizer="ternary"), QuantConv2d.from_float(conv, bits=3)
    x, img = torch.randn(5, 6), torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(qlin(x), F.linear(x, quantize_weight(lin.weight, quantizer="ternary"), lin.bias))
    torch.testing.assert_close(qconv(img), F.conv2d(img, quantize_weight(conv.weight, bits=3), None, padding=1))
    assert torch.equal(qlin.weight, lin.weight) and qlin.weight is not lin.weight  # latent weights copied


@pytest.mark.parametrize("make", [lambda: nn.Linear(6, 3), lambda: nn.Conv2d(2, 4, 3)])
def test_state_dict_round_trip_float_and_quantized(make):
    torch.manual_seed(1)
    float_layer = make()
    cls = QuantLinear if isinstance(float_layer, nn.Linear) else QuantConv2d
    fixed = cls.from_float(float_layer, quantizer="binary")
    assert list(fixed.state_dict()) == list(float_layer.state_dict())
    other = make()
    other.load_state_dict(fixed.state_dict())  # quantized -> float, strict
    assert torch.equal(other.weight, float_layer.weight)
    learned = cls.from_float(float_layer, bits=3, scale_rule="lsq")
    assert set(learned.state_dict()) == set(float_layer.state_dict()) | {"weight_scale"}
    assert learned.weight_scale.shape == (learned.weight.shape[0],)
    fresh = make()
    learned.load_state_dict(fresh.state_dict())  # float -> learned, strict: the step is refitted to the new weights
    expected = cls.from_float(fresh, bits=3, scale_rule="lsq").weight_scale
    torch.testing.assert_close(learned.weight_scale.detach(), expected.detach())
    buffer = io.BytesIO()
    torch.save(learned.state_dict(), buffer)
    buffer.seek(0)
    again = cls.from_float(make(), bits=3, scale_rule="lsq")
    again.load_state_dict(torch.load(buffer))
    assert torch.equal(again.weight_scale, learned.weight_scale)


def small_net() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def test_quantize_weights_swaps_and_keeps_keys():
    model = small_net()
    q = quantize_weights(model, quantizer="binary", exclude=["0", "5"])
    assert [type(m).__name__ for m in q] == ["Conv2d", "ReLU", "Flatten", "QuantLinear", "ReLU", "Linear"]
    assert type(model[3]) is nn.Linear  # a copy by default
    assert list(q.state_dict()) == list(model.state_dict())
    only = quantize_weights(model, include="[05]", bits=2)
    assert [type(m).__name__ for m in only][::5] == ["QuantConv2d", "QuantLinear"] and type(only[3]) is nn.Linear
    same = quantize_weights(model, inplace=True)
    assert same is model and isinstance(model[0], QuantConv2d)
    assert weight_layer_names(model) == []  # nothing left to swap
    out = copy.deepcopy(model)(torch.randn(2, 1, 6, 6))
    assert out.shape == (2, 3)


def test_unmatched_pattern_lists_candidates():
    with pytest.raises(ValueError, match=r"exclude pattern 'fc\*' matches no Linear/Conv2d layer; the candidates "
                                         r"are: 0, 3, 5"):
        quantize_weights(small_net(), exclude="fc*")
    with pytest.raises(ValueError, match="include pattern"):
        quantize_weights(small_net(), include=["3", "9"])


def test_summary_and_model_size():
    model = small_net()
    q = quantize_weights(model, include=["0", "3"], quantizer="ternary", granularity="channel")
    # conv: 18 weights at 2 bits + 2 scales; linear: 256 weights at 2 bits + 8 scales; the rest 32-bit floats.
    rest = 2 + 8 + 8 * 3 + 3
    assert model_size_bits(q) == 2 * (18 + 256) + 32 * (2 + 8) + 32 * rest
    text = weight_summary(q)
    assert "| 0 | ternary | 2 | channel | mean | identity | 18 |" in text
    assert f"{model_size_bits(q)} bits" in text and f"{32 * sum(p.numel() for p in model.parameters())} bits" in text
    learned = quantize_weights(model, bits=4, scale_rule="lsq", granularity="tensor")
    floats = 32 * sum(p.numel() for p in model.parameters())
    assert model_size_bits(learned) == floats - 28 * (18 + 256 + 24) + 32 * 3  # steps counted once, as scales
    assert weight_summary(nn.Linear(2, 2)).startswith("no quantized weights")


def test_layer_gradient_uses_its_ste_and_pickles():
    torch.manual_seed(3)
    layer = QuantLinear(5, 4, quantizer="uniform", bits=2, ste="hardtanh", granularity="tensor")
    x = torch.randn(7, 5)
    layer(x).sum().backward()
    w = layer.weight.detach().clone().requires_grad_(True)
    F.linear(x, quantize_weight(w, bits=2, ste="hardtanh", granularity="tensor"), layer.bias).sum().backward()
    torch.testing.assert_close(layer.weight.grad, w.grad)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert again.weight_ste is layer.weight_ste and torch.equal(again(x), layer(x))
