"""Weight backward = the STE's mu'(w; top) (numpy), STEs that cannot train weights, and LSQ's step gradient by hand."""

import math

import numpy as np
import pytest
import torch

from stelab.weights import WeightQuantConfig, lsq_quantize, quantize_weight, weight_ste_names
from stelab.weights import quantizers as wq

NP_MU = {  # mu'(x; top) in numpy, written from the registry's docstrings
    "identity": lambda x, top: np.ones_like(x),
    "hardtanh": lambda x, top: ((x > -top) & (x <= top)).astype(x.dtype),
    "approx_sign": lambda x, top: np.maximum(0.0, 2 - 2 * np.abs(x / top)),
    "leaky_relu(slope=0.05)": lambda x, top: np.where(x > 0, 1.0, 0.05),
}


@pytest.mark.parametrize("ste", sorted(NP_MU))
@pytest.mark.parametrize("name, bits, granularity", [("binary", 1, "channel"), ("ternary", 2, "tensor"),
                                                     ("uniform", 3, "channel"), ("uniform", 4, "tensor"),
                                                     ("midrise", 2, "channel")])
def test_weight_gradient_is_upstream_times_mu_prime(ste, name, bits, granularity):
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    upstream = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    quantize_weight(w, quantizer=name, bits=bits, granularity=granularity, ste=ste).backward(upstream)
    q = wq.get(name)
    top = (q.data_scale(w, bits, granularity, q.default_rule) * q.q_max(bits)).numpy()
    expected = upstream.numpy() * NP_MU[ste](w.detach().numpy(), top)
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12, atol=0)


def test_top_is_the_largest_level():
    # hardtanh passes exactly the weights in (-top, top]: with a fixed scale 0.5 at 3 bits, top = 3 * 0.5.
    w = torch.tensor([-1.6, -1.5, -1.4, 0.0, 1.5, 1.6], requires_grad=True)
    quantize_weight(w, bits=3, scale=0.5, ste="hardtanh", granularity="tensor").sum().backward()
    assert w.grad.tolist() == [0, 0, 1, 1, 1, 0]


@pytest.mark.parametrize("ste", ["relu", "clipped_relu", "log_tailed_relu", "leaky_relu(slope=0)"])
def test_stes_zero_below_zero_are_rejected_for_weights(ste):
    with pytest.raises(ValueError, match="no negative or zero weight would ever get a gradient; valid choices"):
        WeightQuantConfig(ste=ste)
    assert "hardtanh" in weight_ste_names() and "relu" not in weight_ste_names()


def test_lsq_step_gradient_by_hand():
    # u = v / s with s = 0.5, Q_N = Q_P = 3 (3-bit symmetric). Codes (ties toward 0) and dq/ds, by hand:
    # u:     -4   -1.6  -0.5  0.3   1.5   2.4   3.0  5.0
    # k:     -3   -2     0    0     1     2     3    3
    # dq/ds: -3   -0.4   0.5 -0.3  -0.5  -0.4   3    3     (-Q_N | k - u | Q_P)
    u = torch.tensor([-4, -1.6, -0.5, 0.3, 1.5, 2.4, 3.0, 5.0], dtype=torch.float64)
    v = (u * 0.5).requires_grad_(True)
    s = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([1, -1, 2, 1, 1, 3, 1, 0.5], dtype=torch.float64)
    out = lsq_quantize(v, s, 3, 3)
    assert (out / 0.5).tolist() == [-3, -2, 0, 0, 1, 2, 3, 3]
    out.backward(upstream)
    hand = -3 * 1 + -0.4 * -1 + 0.5 * 2 + -0.3 * 1 + -0.5 * 1 + -0.4 * 3 + 3 * 1 + 3 * 0.5  # = 0.9
    assert s.grad.item() == pytest.approx(hand / math.sqrt(8 * 3), rel=1e-12)  # g = 1/sqrt(N Q_P), N = 8
    assert v.grad.tolist() == [0, -1, 2, 1, 1, 3, 1, 0]  # LSQ's pass-through 1{-Q_N <= u <= Q_P}


def test_lsq_for_activations_by_hand():
    # Unsigned 2-bit activation: Q_N = 0, Q_P = 3, s = 0.5, an explicit gradient scale 0.5.
    # u: -2 -> k 0, dq/ds 0 (clip at -Q_N = 0); 0.4 -> 0, -0.4; 1.5 -> 1, -0.5; 2.6 -> 3, 0.4; 4 -> 3, 3.
    u = torch.tensor([-2, 0.4, 1.5, 2.6, 4.0], dtype=torch.float64)
    s = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    out = lsq_quantize(u * 0.5, s, 0, 3, grad_scale_value=0.5)
    assert (out / 0.5).tolist() == [0, 0, 1, 3, 3]
    out.sum().backward()
    assert s.grad.item() == pytest.approx((0 - 0.4 - 0.5 + 0.4 + 3) * 0.5, rel=1e-12)


@pytest.mark.parametrize("name, bits", [("uniform", 3), ("binary", 1)])
def test_learned_per_channel_step_gradient(name, bits):
    # Per channel: N = elements of one channel; uniform uses LSQ's factor, binary/ternary dq/ds = k (codes fixed).
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    step = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    quantize_weight(w, quantizer=name, bits=bits, scale_rule="lsq", step=step).backward(upstream)
    q_p = 2 ** (bits - 1) - 1 if name == "uniform" else 1
    u = w.numpy() / step.detach().numpy()[:, None]
    k = np.clip(np.sign(u) * np.ceil(np.abs(u) - 0.5), -q_p, q_p) if name == "uniform" else np.where(u > 0, 1, -1)
    factor = np.where(u <= -q_p, -q_p, np.where(u >= q_p, q_p, k - u)) if name == "uniform" else k
    expected = (upstream.numpy() * factor).sum(1) / math.sqrt(5 * q_p)
    np.testing.assert_allclose(step.grad.numpy(), expected, rtol=1e-12)


def test_learned_step_needs_a_positive_step():
    w = torch.randn(4, 4)
    with pytest.raises(ValueError, match="pass the step tensor"):
        quantize_weight(w, scale_rule="lsq")
    with pytest.raises(ValueError, match="non-positive"):
        quantize_weight(w, scale_rule="lsq", step=torch.tensor([0.1, -0.1, 0.1, 0.1]))
