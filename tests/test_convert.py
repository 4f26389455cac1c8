"""quantize_activations: a small CNN keeps its outputs at 16 bits, state dicts load both ways, patterns select."""

import re

import pytest
import torch
from torch import nn

import stelab

ALPHA16 = 2.0**-14  # 16 bits: top = 65535 * 2^-14 ~ 4, above every activation below


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU6(),
        nn.Flatten(), nn.Linear(6 * 8 * 8, 10), nn.Hardtanh(), nn.Linear(10, 3),
    )
    return model.eval()


def _inf_norm(layer: nn.Module) -> float:
    """Largest sum of |weights| into one output: how much an input perturbation (max-norm) can grow."""
    return float(layer.weight.detach().abs().flatten(1).sum(1).max())


def test_sixteen_bits_keeps_outputs():
    model = small_cnn()[:7]  # up to the first linear layer (the Hardtanh would become a sign)
    quant = stelab.quantize_activations(model, bits=16, ste="clipped_relu", alpha=ALPHA16)
    assert [n for n, _ in stelab.quantized_modules(quant)] == ["2", "4"]
    x = torch.randn(4, 3, 8, 8) * 0.5
    with torch.no_grad():
        reference, got = model(x), quant(x)
        assert max(float(model[:5](x).max()), float(model[:3](x).max())) < 65535 * ALPHA16  # below the top level
    # Each staircase moves an activation up by less than alpha; propagate that bound through the weights.
    bound = ALPHA16 * _inf_norm(model[6]) * (1 + _inf_norm(model[3]))
    assert (reference - got).abs().max() <= bound
    assert bound < 0.05 * reference.abs().max()  # the bound is tight enough to mean something


def test_state_dict_loads_both_ways():
    model = small_cnn()
    quant = stelab.quantize_activations(model, bits=2)
    assert quant.state_dict().keys() == model.state_dict().keys()
    fresh_quant = stelab.quantize_activations(small_cnn(), bits=2)
    fresh_quant.load_state_dict(model.state_dict(), strict=True)
    fresh_float = small_cnn()
    fresh_float.load_state_dict(quant.state_dict(), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh_quant.state_dict()[key], value)


def test_learned_alpha_model_loads_a_float_state_dict():
    quant = stelab.quantize_activations(small_cnn(), bits=2, learn_alpha=True)
    quant.load_state_dict(small_cnn().state_dict(), strict=True)
    assert {k for k in quant.state_dict() if k.endswith("alpha")} == {"2.alpha", "4.alpha", "7.alpha"}


def test_copy_by_default_and_inplace():
    model = small_cnn()
    quant = stelab.quantize_activations(model, bits=2)
    assert isinstance(model[2], nn.ReLU) and isinstance(quant[2], stelab.QuantReLU)
    same = stelab.quantize_activations(model, bits=2, inplace=True)
    assert same is model and isinstance(model[2], stelab.QuantReLU)


def test_hardtanh_becomes_sign_and_patterns_select():
    quant = stelab.quantize_activations(small_cnn(), bits=2, ste="relu", include=["2", "7"],
                                        overrides={"2": {"bits": 4, "ste": "clipped_relu"}})
    assert isinstance(quant[4], nn.ReLU6)
    assert (quant[2].bits, quant[2].ste.name) == (4, "clipped_relu")
    assert (quant[7].config.forward, quant[7].ste.name, quant[7].current_alpha()) == ("sign", "hardtanh", 1.0)
    quant = stelab.quantize_activations(small_cnn(), bits=2, exclude="7")
    assert [n for n, _ in stelab.quantized_modules(quant)] == ["2", "4"]
    config = stelab.QuantConfig(bits=3, ste="identity")
    quant = stelab.quantize_activations(small_cnn(), overrides={"[24]": config}, exclude="7")
    assert all(m.config == config for _, m in stelab.quantized_modules(quant))


def test_summary_lists_every_quantized_activation():
    quant = stelab.quantize_activations(small_cnn(), bits=2, learn_alpha=True)
    text = stelab.summary(quant)
    assert "| name | bits | forward | alpha | STE | alpha mode |" in text
    alpha = f"{stelab.lloyd_alpha(2):.4f}"
    assert f"| 2 | 2 | staircase | {alpha} | clipped_relu | learned (mean) |" in text
    assert "| 7 | 1 | sign | 1.0000 | hardtanh | learned (ae) |" in text
    assert stelab.summary(small_cnn()).startswith("no quantized activations\n")  # then the weights (float here)
    assert stelab.activation_names(small_cnn()) == ["2", "4", "7"]


def test_conversion_errors():
    with pytest.raises(ValueError, match=r"matched no activation module; candidates: \['2', '4', '7'\]"):
        stelab.quantize_activations(small_cnn(), include="features.*")
    with pytest.raises(ValueError, match="unknown STE"):
        stelab.quantize_activations(small_cnn(), ste="nope")
    with pytest.raises(ValueError, match="not symmetric"):
        stelab.quantize_activations(nn.Sequential(nn.Hardtanh(0.0, 1.0)))
    with pytest.raises(ValueError, match="bits must be in 1..16"):
        stelab.quantize_activations(small_cnn(), overrides={"2": {"bits": 32}})


@pytest.mark.parametrize("kwargs, kind, pattern", [
    ({"exclude": "8"}, "exclude", "8"),  # the Linear after the Hardtanh, not an activation
    ({"exclude": ["2", "feature.*"]}, "exclude", "feature.*"),
    ({"overrides": {"layer3.*": {"bits": 4}}}, "overrides", "layer3.*"),
])
def test_patterns_that_match_no_activation_raise_with_the_names(kwargs, kind, pattern):
    with pytest.raises(ValueError, match=rf"{kind} pattern '{re.escape(pattern)}' matches no activation") as err:
        stelab.quantize_activations(small_cnn(), **kwargs)
    assert "are: 2, 4, 7" in str(err.value)


def test_fields_are_quant_config_fields():
    config = stelab.QuantConfig(bits=3, ste="relu")
    by_config = stelab.quantize_activations(small_cnn(), config, exclude="7")
    by_fields = stelab.quantize_activations(small_cnn(), bits=3, ste="relu", exclude="7")
    assert [m.config for _, m in stelab.quantized_modules(by_config)] == [config, config]
    assert [m.config for _, m in stelab.quantized_modules(by_fields)] == [config, config]
    mixed = stelab.quantize_activations(small_cnn(), config, bits=4, exclude="7")
    assert {m.config for _, m in stelab.quantized_modules(mixed)} == {config.replace(bits=4)}
    with pytest.raises(ValueError, match=r"unknown QuantConfig field\(s\) \['bitz'\]; valid fields: bits, ste"):
        stelab.quantize_activations(small_cnn(), bitz=4)
    with pytest.raises(TypeError, match="config must be a stelab.QuantConfig"):
        stelab.quantize_activations(small_cnn(), 2)


def test_an_unknown_override_key_lists_the_fields():
    with pytest.raises(ValueError, match=r"unknown QuantConfig field\(s\) \['bitz'\]; valid fields: bits, ste"):
        stelab.quantize_activations(small_cnn(), overrides={"2": {"bitz": 4}})
    with pytest.raises(TypeError, match="must be a QuantConfig or a mapping"):
        stelab.quantize_activations(small_cnn(), overrides={"2": 4})


def test_pattern_generators_are_not_used_up_by_the_checks():
    quant = stelab.quantize_activations(small_cnn(), exclude=(p for p in ["7"]))
    assert [n for n, _ in stelab.quantized_modules(quant)] == ["2", "4"]
