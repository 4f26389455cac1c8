"""The midrise weight quantizer (2^b levels, no zero) against numpy: at every breakpoint and its neighbours, its ties,
its LSQ step gradient, its storage, and a midrise network exported and run by every runner."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stelab.weights import quantize_weight
from stelab.weights import quantizers as wq


def np_midrise_codes(u: np.ndarray, bits: int) -> np.ndarray:
    """The odd integer nearest u, an even u going down, within +-(2^b - 1): written as a search over the levels."""
    levels = np.arange(-(2**bits - 1), 2**bits, 2, dtype=np.float64)
    dist = np.abs(u[..., None] - levels)
    # argmin takes the first (lowest) of two equally near levels: the step below at a tie
    return levels[np.argmin(dist, axis=-1)]


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_codes_at_every_breakpoint_and_its_neighbours(bits):
    q = 2**bits - 1
    breaks = np.arange(-q - 1, q + 2, 2, dtype=np.float64)  # the even integers between and beyond the levels
    eps = 2.0**-20
    u = np.concatenate([breaks, breaks - eps, breaks + eps, np.arange(-q - 3, q + 4, 0.25), [-1e3, 1e3, 0.0]])
    s = 0.375  # exact in binary: u * s / s == u
    got = quantize_weight(torch.from_numpy(u * s), quantizer="midrise", bits=bits, scale=s).numpy()
    np.testing.assert_array_equal(got, s * np_midrise_codes(u, bits))
    assert set(np.unique(got / s)) == set(range(-q, q + 1, 2))  # all 2^b codes used, no zero


def test_ties_go_to_the_step_below_and_the_grid_is_odd_elsewhere():
    w = np.array([0.0, 2.0, -2.0, 0.5, -0.5, 2.5, -2.5, 9.0, -9.0], np.float32)
    got = quantize_weight(torch.from_numpy(w), quantizer="midrise", bits=2, scale=1.0).numpy()
    np.testing.assert_array_equal(got, [-1, 1, -3, 1, -1, 3, -3, 3, -3])
    off_ties = np.array([0.1, 1.3, 2.7, 5.0], np.float32)
    pos = quantize_weight(torch.from_numpy(off_ties), quantizer="midrise", bits=2, scale=1.0)
    neg = quantize_weight(torch.from_numpy(-off_ties), quantizer="midrise", bits=2, scale=1.0)
    assert torch.equal(neg, -pos)


@pytest.mark.parametrize("bits, count", [(2, 4), (3, 8), (8, 256)])
def test_levels_storage_and_tag(bits, count):
    q = wq.get("midrise")
    assert wq.levels("midrise", bits, 0.5) == [0.5 * k for k in range(-(count - 1), count, 2)]
    assert wq.storage_bits("midrise", bits) == bits and q.q_max(bits) == count - 1
    assert q.tag(bits) == f"w{bits}m" and q.default_bits == 2
    with pytest.raises(ValueError, match="takes bits 2..8, got 9"):
        q.check_bits(9)


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_data_scales(granularity):
    w = torch.randn(6, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    a = w.abs().numpy() if granularity == "tensor" else w.abs().numpy().reshape(6, -1)
    axis = None if granularity == "tensor" else 1
    q = wq.get("midrise")
    mx = q.data_scale(w, 2, granularity, "max").numpy().reshape(-1)
    np.testing.assert_allclose(mx, np.atleast_1d(a.max(axis=axis) / 3), rtol=1e-15)
    lsq = q.data_scale(w, 2, granularity, "lsq").numpy().reshape(-1)
    np.testing.assert_allclose(lsq, np.atleast_1d(a.mean(axis=axis) / math.sqrt(3)), rtol=1e-15)
    # the max rule clips nothing: the largest |w| lands on the top level
    out = quantize_weight(w, quantizer="midrise", bits=2, granularity=granularity)
    assert float(out.abs().max()) == pytest.approx(float(w.abs().max()), rel=1e-12)


def test_lsq_step_gradient_against_numpy():
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    step = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    quantize_weight(w, quantizer="midrise", bits=2, scale_rule="lsq", step=step).backward(upstream)
    u = w.numpy() / step.detach().numpy()[:, None]
    k = np_midrise_codes(u, 2)
    factor = np.where(u <= -3, -3, np.where(u >= 3, 3, k - u))  # dQ/ds: the code's distance inside, +-Q_P clipped
    # LSQ on the level spacing d = 2 s (largest code 3/2): the step's factor 1/(2^2 sqrt(N 3/2))
    g = 1 / (4 * math.sqrt(7 * 1.5))
    np.testing.assert_allclose(step.grad.numpy(), (upstream.numpy() * factor).sum(1) * g, rtol=1e-12)


def test_the_step_gradient_is_lsq_on_the_level_spacing():
    """An SGD step on s with midrise's factor moves s exactly as LSQ's step on the spacing d = 2 s (codes k/2, largest
    3/2) moves d / 2, computed independently with lsq_quantize-free numpy."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(50, generator=gen, dtype=torch.float64)
    upstream = torch.randn(50, generator=gen, dtype=torch.float64)
    s = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    quantize_weight(w, quantizer="midrise", bits=2, granularity="tensor", scale_rule="lsq", step=s).backward(upstream)
    d = 0.8
    ud = w.numpy() / d
    kd = np_midrise_codes(2 * ud, 2) / 2  # the levels in units of d: -3/2 .. 3/2
    fd = np.where(ud <= -1.5, -1.5, np.where(ud >= 1.5, 1.5, kd - ud))
    grad_d = (upstream.numpy() * fd).sum() / math.sqrt(50 * 1.5)
    lr = 0.01
    assert s.item() - lr * s.grad.item() == pytest.approx((d - lr * grad_d) / 2, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=40), st.integers(2, 8),
       st.floats(0.0625, 5, width=32))
def test_quantizing_twice_changes_nothing(values, bits, scale):
    w = torch.tensor(values, dtype=torch.float32)
    once = quantize_weight(w, quantizer="midrise", bits=bits, scale=scale, granularity="tensor")
    assert torch.equal(quantize_weight(once, quantizer="midrise", bits=bits, scale=scale, granularity="tensor"), once)
    grid = {np.float32(scale) * np.float32(k) for k in range(-(2**bits - 1), 2**bits, 2)}
    assert set(once.unique().tolist()) <= grid


def test_non_finite_weights_stay_non_finite():
    w = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    w[1, 2] = float("nan")
    q = quantize_weight(w, quantizer="midrise", granularity="channel")
    assert not bool(torch.isfinite(q[1]).any()) and bool(torch.isfinite(q[[0, 2]]).all())


@pytest.mark.parametrize("spacing", [0, -1, 1.5, True])
def test_a_registered_spacing_must_be_a_positive_int(spacing):
    q = wq.get("midrise")
    with pytest.raises(ValueError, match="spacing .* must be a positive int"):
        wq.register("odd_codes", codes=q.codes_fn, scale=q.scale_fn, code_values=q.code_values, bits=(2, 8),
                    rules=q.rules, doc="midrise again", spacing=spacing)
    assert "odd_codes" not in wq.names()
