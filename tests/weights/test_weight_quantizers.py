"""Weight quantizers' forward against numpy formulas: both granularities, ties, zeros, signs, conv/linear shapes."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stelab.weights import WeightQuantConfig, quantize_weight
from stelab.weights import quantizers as wq

RNG = np.random.default_rng(0)
SHAPES = [(5, 7), (4, 3, 3, 3)]  # linear (out, in), conv (out, in, kh, kw)


def np_stat(w: np.ndarray, granularity: str, fn) -> np.ndarray:
    """fn(|w|) over the whole tensor (0-d) or per output channel (shape (C, 1, ...))."""
    a = np.abs(w)
    if granularity == "tensor":
        return np.asarray(fn(a))
    return fn(a.reshape(a.shape[0], -1), axis=1).reshape(-1, *([1] * (w.ndim - 1)))


def np_binary(w, granularity):
    s = np_stat(w, granularity, np.mean)  # not floored: binary does not divide by its scale
    return s * np.where(w > 0, 1.0, -1.0)


def np_ternary(w, granularity):
    delta = 0.7 * np_stat(w, granularity, np.mean)
    keep = np.abs(w) > delta
    count = np_stat(keep.astype(w.dtype), granularity, np.sum)
    total = np_stat(np.abs(w) * keep, granularity, np.sum)
    s = np.where(count > 0, total / np.maximum(count, 1), 1.0)
    return s * np.sign(w) * keep


def np_uniform(w, bits, s):
    q = 2 ** (bits - 1) - 1
    u = w / s
    return s * np.clip(np.sign(u) * np.ceil(np.abs(u) - w.dtype.type(0.5)), -q, q)


def torch_q(w: np.ndarray, **fields) -> np.ndarray:
    return quantize_weight(torch.from_numpy(w), **fields).detach().numpy()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_binary_and_ternary_match_numpy(shape, granularity):
    w = RNG.standard_normal(shape)
    np.testing.assert_allclose(torch_q(w, quantizer="binary", granularity=granularity), np_binary(w, granularity),
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(torch_q(w, quantizer="ternary", granularity=granularity), np_ternary(w, granularity),
                               rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_uniform_max_rule_matches_numpy(shape, granularity, bits):
    w = RNG.standard_normal(shape).astype(np.float32)
    s = (np_stat(w, granularity, np.max) / np.float32(2 ** (bits - 1) - 1)).astype(np.float32)
    np.testing.assert_array_equal(torch_q(w, bits=bits, granularity=granularity), np_uniform(w, bits, s))


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_uniform_fixed_scale_is_the_formula_bit_for_bit(bits):
    w = (RNG.standard_normal(3000) * 2).astype(np.float32)
    np.testing.assert_array_equal(torch_q(w, bits=bits, scale=0.3), np_uniform(w, bits, np.float32(0.3)))


def test_ties():
    # uniform: a tie |u| = j + 1/2 goes toward zero, so Q is odd; beyond Q_P it clips.
    w = np.array([0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, 10.0, -10.0, 0.0], np.float32)
    got = torch_q(w, bits=3, scale=1.0)
    np.testing.assert_array_equal(got, [0, 0, 1, -1, 2, -2, 3, 3, -3, 0])
    assert not np.signbit(got[[0, 1, 9]]).any()  # +0, never -0
    np.testing.assert_array_equal(torch_q(-w, bits=3, scale=1.0), -got)
    # binary: 0 goes to -s (the activation sign's convention); ternary: |w| = Delta goes to 0.
    np.testing.assert_array_equal(torch_q(np.array([0.0, 2.0, -2.0], np.float32), quantizer="binary",
                                          granularity="tensor"), np.float32(4 / 3) * np.array([-1, 1, -1]))
    w = np.array([[7.0, -7.0, 13.0, -13.0], [1.0, -1.0, 1.0, 1.0]], np.float32)  # mean|w| = 10: Delta = 7 exactly
    assert float(wq.ternary_threshold(torch.from_numpy(w[:1]), "tensor")) == 7.0
    np.testing.assert_array_equal(torch_q(w, quantizer="ternary")[0], [0, 0, 13, -13])
    np.testing.assert_array_equal(torch_q(w, quantizer="ternary")[1], [1, -1, 1, 1])


def test_zero_weights():
    z = np.zeros((3, 4), np.float32)
    np.testing.assert_array_equal(torch_q(z, bits=4), z)  # max rule: scale floored, codes 0
    np.testing.assert_array_equal(torch_q(z, quantizer="ternary"), z)  # nothing above Delta = 0
    # binary: scale mean|w| = 0 is not floored (binary does not divide by it), so the output is 0, in fp16 too
    np.testing.assert_array_equal(torch_q(z, quantizer="binary"), z)
    half = quantize_weight(torch.zeros(3, 4, dtype=torch.float16), quantizer="binary")
    assert half.dtype == torch.float16 and bool((half == 0).all())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["binary", "ternary", "uniform"])
def test_per_channel_is_per_tensor_of_each_channel(shape, name):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    whole = quantize_weight(w, quantizer=name, granularity="channel")
    scale = wq.get(name).data_scale(w, wq.get(name).default_bits, "channel", wq.get(name).default_rule)
    assert scale.shape == (shape[0],) + (1,) * (len(shape) - 1)
    for c in range(shape[0]):
        alone = quantize_weight(w[c:c + 1], quantizer=name, granularity="tensor")
        torch.testing.assert_close(whole[c:c + 1], alone, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name, bits, count", [("binary", 1, 2), ("ternary", 2, 3), ("uniform", 2, 3),
                                               ("uniform", 4, 15)])
def test_levels_and_storage(name, bits, count):
    assert len(wq.levels(name, bits)) == count
    assert wq.storage_bits(name, bits) == bits
    w = torch.randn(4000, generator=torch.Generator().manual_seed(2)) * 3
    q = quantize_weight(w, quantizer=name, bits=bits, scale_rule="fixed", scale=0.25)
    assert set(q.unique().tolist()) <= set(wq.levels(name, bits, 0.25))


def test_registry_errors_list_valid_names():
    with pytest.raises(ValueError, match="valid choices: binary, midrise, ternary, uniform"):
        wq.get("quaternary")
    with pytest.raises(ValueError, match="takes bits 1, got 2"):
        wq.get("binary").check_bits(2)
    with pytest.raises(ValueError, match="valid choices for it: max, fixed, lsq"):
        wq.get("uniform").check_rule("mean")
    with pytest.raises(ValueError, match="valid choices: channel, tensor"):
        wq.get("uniform")(torch.ones(2), 1.0, 4, "row")
    assert wq.names() == ["binary", "midrise", "ternary", "uniform"]


weights = st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(weights, st.sampled_from(["binary", "ternary", "uniform"]), st.integers(2, 8),
       st.floats(0.0625, 5, width=32))
def test_fixed_scale_quantization_is_idempotent(values, name, bits, scale):
    bits = {"binary": 1, "ternary": 2}.get(name, bits)
    w = torch.tensor(values, dtype=torch.float32)
    once = quantize_weight(w, quantizer=name, bits=bits, scale=scale, granularity="tensor")
    twice = quantize_weight(once, quantizer=name, bits=bits, scale=scale, granularity="tensor")
    assert torch.equal(once, twice)
    assert once.unique().numel() <= len(wq.levels(name, bits))


@settings(max_examples=40, deadline=None)
@given(weights, st.sampled_from(["binary", "ternary"]))
def test_data_rule_quantization_is_idempotent_up_to_rounding(values, name):
    w = torch.tensor(values, dtype=torch.float64)
    once = quantize_weight(w, quantizer=name, granularity="tensor")
    torch.testing.assert_close(quantize_weight(once, quantizer=name, granularity="tensor"), once, rtol=1e-12, atol=0)


@pytest.mark.parametrize("delta", [0.3, 0.5, 0.7, 1.0])
def test_ternary_takes_its_threshold_factor_as_a_parameter(delta):
    """``ternary(delta=d)``: threshold d mean|w| and the mean of the kept |w| as the scale, against numpy; the
    default d = 0.7 is plain ``ternary`` (same object, same name)."""
    import pickle

    w = torch.randn(8, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    q = wq.get(f"ternary(delta={delta})")
    a = w.numpy()
    thr = delta * np.abs(a).mean()
    codes = np.sign(a) * (np.abs(a) > thr)
    scale = np.abs(a)[np.abs(a) > thr].mean()
    s = q.data_scale(w, 2, "tensor", "mean")
    assert float(s) == pytest.approx(scale, rel=1e-12)
    assert np.array_equal(q.codes(w, s, 2, "tensor").numpy(), codes)
    assert pickle.loads(pickle.dumps(q)).params == {"delta": delta}
    assert (q.name == "ternary") == (delta == 0.7)
    assert WeightQuantConfig(quantizer=f"ternary(delta={delta})").effective_bits == 2
    with pytest.raises(ValueError, match="has no parameter\\(s\\) \\['beta'\\]; its parameters: delta"):
        wq.get("ternary(beta=1)")
