"""Weight quantizers where a silent wrong result used to hide: non-finite weights, NaN steps, 16-bit storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stelab.errors import ResolutionError
from stelab.quant.lsq import check_step
from stelab.weights import QuantLinear, WeightQuantConfig, quantize_weight, quantize_weights
from stelab.weights import quantizers as wq


@pytest.mark.parametrize("name", ["binary", "ternary", "uniform"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_weight_makes_its_channel_non_finite_in_every_quantizer(name, bad):
    w = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    w[1, 2] = bad
    q = quantize_weight(w, quantizer=name, granularity="channel")
    assert not bool(torch.isfinite(q[1]).any()), f"{name}: channel 1 turned finite ({q[1]})"
    assert bool(torch.isfinite(q[[0, 2]]).all())  # the other channels are untouched
    whole = quantize_weight(w, quantizer=name, granularity="tensor")
    assert not bool(torch.isfinite(whole).all())


@pytest.mark.parametrize("value", [float("nan"), 0.0, -1.0, float("inf")])
def test_a_bad_learned_step_is_caught_and_names_the_layer(value):
    check_step(torch.tensor([0.5, 1.0]))  # a good one passes
    with pytest.raises(ResolutionError, match="non-positive or not finite"):
        check_step(torch.tensor([0.5, value]))
    model = quantize_weights(torch.nn.Sequential(torch.nn.Linear(4, 4)), scale_rule="lsq", bits=4)
    with torch.no_grad():
        model[0].weight_scale.fill_(value)
    with pytest.raises(ResolutionError, match="of layer 0 became"):
        model(torch.randn(2, 4))


def test_the_error_does_not_suggest_a_clamp_stelab_does_not_have():
    with pytest.raises(ResolutionError) as err:
        check_step(torch.tensor(-1.0))
    assert "clamp" not in str(err.value) and "--lr" in str(err.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bits", [4, 8])
def test_16_bit_weights_get_exact_codes(dtype, bits):
    # Trained-like weights stored in 16 bits; the codes must be the exact rounding of w / s for these very values
    # (computed in float64 here), which a 16-bit division w / s missed for 10 % of 8-bit codes.
    g = torch.Generator().manual_seed(3)
    w = (torch.randn(16, 64, generator=g) * 0.05).to(dtype)
    q = wq.get("uniform")
    scale = q.data_scale(w, bits, "channel", "max")
    codes = q.codes(w, scale, bits, "channel")
    u = w.double().numpy() / scale.double().numpy()
    exact = np.clip(np.sign(u) * np.ceil(np.abs(u) - 0.5), -q.q_max(bits), q.q_max(bits)) + 0.0
    np.testing.assert_array_equal(codes.double().numpy(), exact)
    out = quantize_weight(w, bits=bits, granularity="channel")
    assert out.dtype == dtype
    # s k rounded once to the storage dtype (s k is exact in float64: s has 8-11 significant bits, k at most 8)
    expected = torch.from_numpy(scale.double().numpy() * exact).to(dtype)
    np.testing.assert_array_equal(out.double().numpy(), expected.double().numpy())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_lsq_step_gradient_matches_float64(dtype):
    g = torch.Generator().manual_seed(4)
    layer = QuantLinear(32, 8, config=WeightQuantConfig(bits=4, scale_rule="lsq", granularity="channel"))
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, 32, generator=g) * 0.1)
        layer.weight_scale.copy_(layer._initial_step())
    layer = layer.to(dtype)
    grad_out = torch.randn(8, 32, generator=g).to(dtype)
    w_hat = layer.quantized_weight()
    w_hat.backward(grad_out)
    # float64 reference of LSQ's step gradient for the same stored w, s and upstream gradient
    w, s = layer.weight.detach().double(), layer.weight_scale.detach().double()[:, None]
    u = w / s
    k = torch.clamp(torch.sign(u) * torch.ceil(u.abs() - 0.5), -7, 7)
    factor = torch.where(u <= -7, -7.0, torch.where(u >= 7, 7.0, k - u))
    expected = (grad_out.double() * factor).sum(1) / np.sqrt(32 * 7)
    got = layer.weight_scale.grad.double()
    # the only rounding left is the final cast of the gradient to the 16-bit parameter's dtype
    np.testing.assert_allclose(got.numpy(), expected.to(dtype).double().numpy(), rtol=0, atol=0)
