"""QuantReLU: the module form of the op, its state dict and learned resolution."""

import copy
import io

import numpy as np
import pytest
import torch

import stelab


def test_module_equals_function():
    x = torch.randn(3, 5, 7, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    layer = stelab.QuantReLU(bits=3, ste="relu", alpha=0.3)
    y1, y2 = layer(x), stelab.quantize(x2, bits=3, alpha=0.3, ste="relu")
    assert torch.equal(y1, y2)
    y1.sum().backward()
    y2.sum().backward()
    assert torch.equal(x.grad, x2.grad)


def test_fixed_alpha_has_no_persistent_state():
    layer = stelab.QuantReLU(bits=2)
    assert layer.state_dict() == {}
    assert layer.current_alpha() == stelab.lloyd_alpha(2)  # as given: nothing is snapped
    assert float(layer.alpha) == float(np.float32(layer.current_alpha()))  # the buffer holds it in float32
    assert "bits=2, forward=staircase, ste=clipped_relu, alpha=0.6508 (fixed)" in repr(layer)


def test_config_and_keywords_build_the_same_module():
    config = stelab.QuantConfig(bits=4, ste="leaky_relu(slope=0.05)", alpha=0.2)
    a, b = stelab.QuantReLU(config=config), stelab.QuantReLU(bits=4, ste="leaky_relu(slope=0.05)", alpha=0.2)
    assert a.config == b.config and a.ste == b.ste and a.bits == 4
    assert a.ste.params == {"slope": 0.05}
    c = stelab.QuantReLU(config, bits=3)  # the config with fields replaced
    assert c.config == config.replace(bits=3)
    assert stelab.QuantReLU().config == stelab.QuantConfig()  # the defaults are QuantConfig's, declared once
    assert stelab.QuantReLU().config.ste == stelab.ste.DEFAULT_STE


def test_unknown_field_or_positional_bits_is_an_error():
    with pytest.raises(ValueError, match=r"unknown QuantConfig field\(s\) \['bitz'\]; valid fields: bits, ste, "):
        stelab.QuantReLU(bitz=2)
    with pytest.raises(TypeError, match="config must be a stelab.QuantConfig.*by keyword"):
        stelab.QuantReLU(2)


def test_learned_alpha_trains_and_loads():
    torch.manual_seed(0)
    layer = stelab.QuantReLU(bits=2, learn_alpha=True, alpha_rule="pact", alpha=0.5)
    assert set(layer.state_dict()) == {"alpha"}
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01)
    x = torch.randn(1000) * 2
    before = layer.current_alpha()
    loss = (layer(x) - x.clamp(min=0)).pow(2).mean()  # targets above the top level: pact pushes alpha up
    loss.backward()
    assert layer.alpha.grad.item() < 0
    optimizer.step()
    assert layer.current_alpha() > before
    fresh = stelab.QuantReLU(bits=2, learn_alpha=True, alpha_rule="pact", alpha=0.5)
    fresh.load_state_dict(layer.state_dict())
    assert fresh.current_alpha() == layer.current_alpha()
    fresh.load_state_dict({})  # a float model's (empty) state dict loads strictly; alpha keeps its value
    assert fresh.current_alpha() == layer.current_alpha()
    assert "learned[pact]" in repr(fresh)


def test_learned_alpha_that_turned_negative_is_an_error():
    layer = stelab.QuantReLU(bits=2, learn_alpha=True)
    with torch.no_grad():
        layer.alpha.fill_(-0.1)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        layer(torch.randn(4))


def test_learned_sign_needs_ae():
    with pytest.raises(ValueError, match="alpha_rule 'ae'"):
        stelab.QuantReLU(bits=1, forward="sign", ste="hardtanh", learn_alpha=True)
    layer = stelab.QuantReLU(bits=1, forward="sign", ste="hardtanh", learn_alpha=True, alpha_rule="ae")
    assert layer(torch.tensor([-1.0, 1.0])).tolist() == [-1.0, 1.0]


def test_deepcopy_dtype_and_no_nan_check():
    layer = copy.deepcopy(stelab.QuantReLU(bits=2, alpha=0.5, check_nan=False))
    y = layer(torch.tensor([0.7, float("nan")], dtype=torch.float64))
    assert y.dtype == torch.float64 and y[0].item() == 1.0 and torch.isnan(y[1])


def test_pickle_round_trip_by_name():
    layer = stelab.QuantReLU(bits=3, ste="leaky_relu(slope=0.05)", alpha=0.25)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert loaded.ste is stelab.ste.get("leaky_relu(slope=0.05)") and loaded.config == layer.config
    x = torch.randn(100)
    assert torch.equal(loaded(x), layer(x))
