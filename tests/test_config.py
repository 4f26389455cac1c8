"""QuantConfig: JSON round trip, strict keys, validation."""

import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stelab import JsonConfig, QuantConfig


@settings(max_examples=50, deadline=None)
@given(bits=st.integers(1, 16), ste=st.sampled_from(["relu", "clipped_relu", "leaky_relu(slope=0.05)", "identity"]),
       forward=st.sampled_from(["staircase", "round"]), alpha=st.none() | st.floats(1e-4, 1e4),
       learn_alpha=st.booleans(), alpha_rule=st.sampled_from(["mean", "ae", "pact", "min"]),
       check_nan=st.booleans())
def test_json_round_trip(bits, ste, forward, alpha, learn_alpha, alpha_rule, check_nan):
    config = QuantConfig(bits, ste, forward, alpha, learn_alpha, alpha_rule, check_nan)
    assert QuantConfig.from_json(config.to_json()) == config
    assert QuantConfig.from_dict(json.loads(config.to_json(indent=None))) == config


def test_sign_config_round_trip_and_replace():
    config = QuantConfig(bits=1, forward="sign", ste="hardtanh", learn_alpha=True, alpha_rule="ae")
    assert QuantConfig.from_json(config.to_json()) == config
    assert config.replace(learn_alpha=False, alpha_rule="mean").alpha_rule == "mean"
    with pytest.raises(ValueError, match="alpha_rule 'ae'"):
        config.replace(alpha_rule="mean")


def test_unknown_keys_are_rejected_with_valid_fields():
    with pytest.raises(ValueError, match=r"unknown QuantConfig field\(s\) \['bit'\]; valid fields: bits, ste, "):
        QuantConfig.from_dict({"bit": 2})


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"bits": 0}, ValueError, "bits must be in 1..16"),
    ({"bits": 2.0}, TypeError, "bits must be an int"),
    ({"ste": "nope"}, ValueError, "unknown STE 'nope'; valid choices"),
    ({"ste": None}, TypeError, "registered name"),
    ({"forward": "ceil"}, ValueError, "valid choices: round, sign, staircase"),
    ({"forward": "sign"}, ValueError, "supports bits 1..1"),
    ({"alpha": -0.5}, ValueError, "positive finite"),
    ({"alpha": float("nan")}, ValueError, "positive finite"),
    ({"alpha_rule": "max"}, ValueError, "valid choices: ae, lsq, mean, min, pact"),
    ({"learn_alpha": 1}, TypeError, "learn_alpha must be a bool"),
    ({"check_nan": "yes"}, TypeError, "check_nan must be a bool"),
])
def test_invalid_values(changes, error, message):
    with pytest.raises(error, match=message):
        QuantConfig(**changes)


def test_alpha_is_stored_as_float():
    assert QuantConfig(alpha=1).alpha == 1.0 and isinstance(QuantConfig(alpha=1).alpha, float)


def test_json_config_mixin_for_other_dataclasses():
    @dataclass(frozen=True)
    class Toy(JsonConfig):
        steps: int = 3
        name: str = "x"

    assert Toy.from_json(Toy(5, "y").to_json()) == Toy(5, "y")


def test_an_ste_built_on_the_levels_must_match_the_bits():
    """dsq and gaussian_smoothed take the staircase's level count; a mismatch with the bits is refused, with the fix."""
    assert QuantConfig(bits=2, ste="dsq").ste == "dsq"
    assert QuantConfig(bits=4, ste="gaussian_smoothed(levels=15)").bits == 4
    with pytest.raises(ValueError, match=r"give levels=15 in the STE \(e.g. 'dsq\(levels=15\)'\)"):
        QuantConfig(bits=4, ste="dsq")
