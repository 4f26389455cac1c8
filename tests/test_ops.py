"""The autograd op: learned-alpha rules against hand-computed gradients, saved state, and every bad input."""

import math

import numpy as np
import pytest
import torch

import stelab

# bits = 2, alpha = 0.5: L = 3, top = 1.5, 2^(b-1) = 2. Steps: (0, .5] -> 1, (.5, 1] -> 2, (1, 1.5] -> 3, above -> 3.
X = [-1.0, 0.0, 0.1, 0.5, 0.6, 1.0, 1.2, 1.5, 1.6, 3.0]
HAND_DQ_DALPHA = {  # per element of X, read off the rule definitions by hand
    "mean": [0, 0, 2, 2, 2, 2, 2, 2, 3, 3],
    "ae": [0, 0, 1, 1, 2, 2, 3, 3, 3, 3],
    "pact": [0, 0, 0, 0, 0, 0, 0, 0, 3, 3],
    "min": [0, 0, 1, 1, 1, 1, 1, 1, 0, 0],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rule", sorted(HAND_DQ_DALPHA))
def test_learned_alpha_gradient_matches_hand_computation(rule, dtype):
    x = torch.tensor(X, dtype=dtype, requires_grad=True)
    alpha = torch.tensor(0.5, requires_grad=True)
    upstream = torch.arange(1, len(X) + 1, dtype=dtype)
    y = stelab.quantize(x, bits=2, alpha=alpha, ste="clipped_relu", alpha_rule=rule)
    assert y.tolist() == [0, 0, 0.5, 0.5, 1.0, 1.0, 1.5, 1.5, 1.5, 1.5]
    y.backward(upstream)
    expected = sum(g * d for g, d in zip(range(1, len(X) + 1), HAND_DQ_DALPHA[rule]))
    assert alpha.grad.item() == expected
    assert x.grad.tolist() == [0, 0, 3, 4, 5, 6, 7, 8, 0, 0]  # clipped relu: 1{0 < x <= 1.5}


def test_mean_rule_scales_with_bits():
    x = torch.tensor([0.1, 0.25, 1.0, 5.0])  # bits 3, alpha .25: top 1.75; 2^(b-1) = 4 inside, L = 7 above
    alpha = torch.tensor(0.25, requires_grad=True)
    stelab.quantize(x, bits=3, alpha=alpha, alpha_rule="mean").sum().backward()
    assert alpha.grad.item() == 4 + 4 + 4 + 7


def test_learned_sign_uses_plus_minus_one():
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 4.0])
    alpha = torch.tensor(0.75, requires_grad=True)
    y = stelab.quantize(x, bits=1, alpha=alpha, ste="hardtanh", forward="sign", alpha_rule="ae")
    assert y.tolist() == [-0.75, -0.75, -0.75, 0.75, 0.75]
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert alpha.grad.item() == -1 - 2 - 3 + 4 + 5
    with pytest.raises(ValueError, match="needs alpha_rule 'ae'"):
        stelab.quantize(x, bits=1, alpha=alpha, forward="sign", alpha_rule="mean")


def test_learned_and_fixed_paths_agree():
    x = torch.randn(2000, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    alpha = torch.tensor(0.37, dtype=torch.float64, requires_grad=True)
    for ste in ("clipped_relu", "log_tailed_relu"):
        x.grad = x2.grad = None
        y1 = stelab.quantize(x, bits=3, alpha=alpha, ste=ste)
        y2 = stelab.quantize(x2, bits=3, alpha=0.37, ste=ste)
        assert torch.equal(y1, y2)
        (y1 * x.detach()).sum().backward()
        (y2 * x.detach()).sum().backward()
        assert torch.equal(x.grad, x2.grad)


def test_alpha_none_is_lloyd_as_given():
    y = stelab.quantize(torch.tensor([100.0]), bits=2)
    a = np.float32(stelab.lloyd_alpha(2))
    assert y.item() == np.float32(3) * a  # the top level L * alpha, computed in float32


def _saved_bytes_per_element(fn, n=4096, **kwargs):
    saved = []

    def pack(t):
        saved.append(t.element_size() * t.numel())
        return t

    x = torch.randn(n, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x, **kwargs)
    return sum(saved) / n


@pytest.mark.parametrize(("ste", "expected"), [("identity", 0), ("relu", 1), ("clipped_relu", 1), ("leaky_relu", 1),
                                               ("log_tailed_relu", 4)])
def test_saved_state_per_element(ste, expected):
    assert _saved_bytes_per_element(stelab.quantize, bits=2, alpha=0.5, ste=ste) == expected


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_op(dtype):
    x = torch.randn(500).to(dtype).requires_grad_(True)
    y = stelab.quantize(x, bits=2, alpha=0.5, ste="clipped_relu")
    y.sum().backward()
    assert y.dtype == x.grad.dtype == dtype
    xf = x.detach().float()
    assert torch.equal(y.float(), torch.clamp(torch.ceil(xf / 0.5), 0, 3) * 0.5)  # 0.5 is a power of two: exact
    assert torch.equal(x.grad.float(), ((xf > 0) & (xf <= 1.5)).float())


# --- bad input: every error names what was wrong and lists what is valid ---

@pytest.mark.parametrize("bits", [0, 17, -1])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits must be in 1..16"):
        stelab.quantize(torch.zeros(3), bits=bits)


@pytest.mark.parametrize("bits", [2.0, True, "2", None])
def test_bits_wrong_type(bits):
    with pytest.raises(TypeError, match="bits must be an int in 1..16"):
        stelab.quantize(torch.zeros(3), bits=bits)


@pytest.mark.parametrize("alpha", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_bad_alpha_value(alpha):
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        stelab.quantize(torch.zeros(3), alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        stelab.quantize(torch.zeros(3), alpha=torch.tensor(alpha, requires_grad=True))
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        stelab.QuantReLU(alpha=alpha)


def test_bad_alpha_type_and_shape():
    with pytest.raises(TypeError, match="alpha must be a positive finite number"):
        stelab.quantize(torch.zeros(3), alpha="big")
    with pytest.raises(ValueError, match="one element"):
        stelab.quantize(torch.zeros(3), alpha=torch.ones(2, requires_grad=True))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64])
def test_non_float_tensors_are_rejected(dtype):
    with pytest.raises(TypeError, match="floating-point tensor .*float32.*got torch"):
        stelab.quantize(torch.zeros(3, dtype=dtype))
    with pytest.raises(TypeError, match="floating-point tensor"):
        stelab.QuantReLU()(torch.zeros(3, dtype=dtype))


def test_non_tensor_is_rejected():
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        stelab.quantize([1.0, 2.0])


def test_nan_input_raises_unless_disabled():
    x = torch.tensor([0.3, math.nan])
    with pytest.raises(ValueError, match="contains NaN"):
        stelab.quantize(x)
    with pytest.raises(ValueError, match="contains NaN"):
        stelab.QuantReLU()(x)
    assert torch.isnan(stelab.QuantReLU(check_nan=False)(x)[1])
    infinities = torch.tensor([math.inf, -math.inf, 1.0])  # their sum is NaN, but there is no NaN to report
    assert stelab.quantize(infinities, bits=2, alpha=0.5).tolist() == [1.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="contains NaN"):
        stelab.quantize(torch.tensor([math.inf, -math.inf, math.nan]))


def test_unknown_names_list_valid_choices():
    with pytest.raises(ValueError, match="unknown forward quantizer 'ceil'; valid choices: round, sign, staircase"):
        stelab.quantize(torch.zeros(3), forward="ceil")
    with pytest.raises(ValueError, match="unknown STE 'magic'; valid choices: .*identity"):
        stelab.quantize(torch.zeros(3), ste="magic")
    with pytest.raises(ValueError, match="unknown alpha rule 'max'; valid choices: ae, lsq, mean, min, pact"):
        stelab.quantize(torch.zeros(3), alpha_rule="max")
    with pytest.raises(ValueError, match="forward 'sign' supports bits 1..1"):
        stelab.quantize(torch.zeros(3), forward="sign")


@pytest.mark.slow
def test_inductor_compiled_module_matches_eager():
    # The default torch.compile backend (inductor) once, on the common case: a QuantReLU with the clipped relu STE.
    layer = stelab.QuantReLU(bits=2, ste="clipped_relu", alpha=0.5)
    x = torch.linspace(-1, 3, 257, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True)
    y = compiled(x)
    y.backward(torch.ones_like(y))
    xs = x.detach()
    assert torch.equal(y.detach(), torch.clamp(torch.ceil(xs / 0.5), 0, 3) * 0.5)
    assert torch.equal(x.grad, ((xs > 0) & (xs <= 1.5)).float())


def test_learned_alpha_module_under_torch_compile():
    x = torch.linspace(-1, 3, 101, requires_grad=True)
    eager, compiled_layer = (stelab.QuantReLU(bits=2, learn_alpha=True, alpha=0.5) for _ in range(2))
    torch._dynamo.reset()
    compiled = torch.compile(compiled_layer, backend="aot_eager", fullgraph=True)  # the NaN check steps aside
    y = compiled(x)
    y.sum().backward()
    assert torch.equal(y, eager(x.detach()))
    eager(x.detach()).sum().backward()
    assert compiled_layer.alpha.grad.item() == eager.alpha.grad.item() > 0


def test_quantize_takes_quant_config_fields():
    x = torch.randn(50, dtype=torch.float64)
    config = stelab.QuantConfig(bits=3, ste="relu", alpha=0.3)
    assert torch.equal(stelab.quantize(x, config), stelab.quantize(x, bits=3, ste="relu", alpha=0.3))
    assert torch.equal(stelab.quantize(x, config, bits=2), stelab.quantize(x, bits=2, ste="relu", alpha=0.3))
    with pytest.raises(ValueError, match=r"unknown QuantConfig field\(s\) \['bitz'\]"):
        stelab.quantize(x, bitz=2)
    with pytest.raises(ValueError, match="tensor that requires grad"):
        stelab.quantize(x, learn_alpha=True)
    alpha = torch.tensor(0.3, requires_grad=True)  # the functional form of learn_alpha=True
    stelab.quantize(x, bits=3, alpha=alpha, ste="relu").sum().backward()
    assert alpha.grad is not None
    ste = stelab.ste.get("relu")  # an STE object is used as it is
    assert torch.equal(stelab.quantize(x, bits=3, alpha=0.3, ste=ste), stelab.quantize(x, config))
