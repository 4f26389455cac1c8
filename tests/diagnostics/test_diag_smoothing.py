import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from torch import nn

import stelab
from stelab.activations import quantizers
from stelab.diagnostics import smoothed, smoothed_quantizer, smoothed_quantizer_derivative, switchable_ste
from stelab.diagnostics.smoothing import STESelector


def _tables(forward, bits, alpha):
    q = quantizers.get(forward)
    return q.thresholds(bits, alpha).to(torch.float64), q.levels(bits, alpha).to(torch.float64)


def _quad_smoothed(x, forward, bits, alpha, s):
    """E q(x + s xi) by numerical integration of the real quantizer against the Gaussian density."""
    thresholds, _ = _tables(forward, bits, alpha)
    q = quantizers.get(forward)

    def integrand(xi):
        return float(q(torch.tensor([x + s * xi], dtype=torch.float64), bits, alpha)[0]) * math.exp(-xi * xi / 2)

    breaks = sorted(float((t - x) / s) for t in thresholds if -12 < (t - x) / s < 12)
    return integrate.quad(integrand, -12, 12, points=breaks or None, limit=200)[0] / math.sqrt(2 * math.pi)


@settings(max_examples=25, deadline=None)
@given(x=st.floats(-1.0, 3.5), s=st.floats(0.02, 1.0), bits=st.integers(1, 3),
       forward=st.sampled_from(["staircase", "round", "sign"]))
def test_smoothed_quantizer_is_gaussian_average_of_quantizer(x, s, bits, forward):
    bits = 1 if forward == "sign" else bits
    alpha = 0.6508
    thresholds, levels = _tables(forward, bits, alpha)
    got = float(smoothed_quantizer(torch.tensor([x], dtype=torch.float64), thresholds, levels, s)[0])
    assert got == pytest.approx(_quad_smoothed(x, forward, bits, alpha, s), abs=1e-8)


@settings(max_examples=10, deadline=None)
@given(x=st.floats(-1.0, 3.5), s=st.floats(0.1, 1.0), bits=st.integers(1, 4))
def test_smoothed_derivative_matches_autograd_and_integrated_density(x, s, bits):
    thresholds, levels = _tables("staircase", bits, 0.5)
    leaf = torch.tensor([x], dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(smoothed_quantizer(leaf, thresholds, levels, s).sum(), leaf)
    closed = float(smoothed_quantizer_derivative(leaf.detach(), thresholds, levels, s)[0])
    assert float(auto[0]) == pytest.approx(closed, rel=1e-12, abs=1e-14)
    # q_s' integrates back to q_s: q_s(x) - q_s(x0) = int_{x0}^{x} q_s'
    x0 = -1.5

    grid = torch.linspace(x0, x, 20_001, dtype=torch.float64)  # Simpson on a grid far finer than s >= 0.1
    area = integrate.simpson(smoothed_quantizer_derivative(grid, thresholds, levels, s).numpy(), x=grid.numpy())
    q = smoothed_quantizer(torch.tensor([x0, x], dtype=torch.float64), thresholds, levels, s)
    assert float(q[1] - q[0]) == pytest.approx(area, abs=1e-8)


def test_smoothed_quantizer_tends_to_staircase_away_from_thresholds():
    thresholds, levels = _tables("staircase", 2, 0.5)
    x = torch.linspace(-1, 2.5, 701, dtype=torch.float64)
    distance = (x[:, None] - thresholds[None]).abs().min(1).values
    far = distance > 0.05
    out = smoothed_quantizer(x, thresholds, levels, 0.005)
    assert torch.allclose(out[far], stelab.staircase(x, 2, 0.5)[far], atol=1e-12)


def test_bad_width_is_an_error():
    thresholds, levels = _tables("staircase", 2, 0.5)
    with pytest.raises(ValueError, match="positive"):
        smoothed_quantizer(torch.zeros(3), thresholds, levels, 0.0)
    model = stelab.quantize_activations(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(ValueError, match="positive"):
        with smoothed(model, -1.0):
            pass


def _float_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def _model():
    return stelab.quantize_activations(_float_model(), bits=2)


def test_smoothed_context_changes_forward_only_inside_and_restores():
    model, x = _model(), torch.randn(64, 6, dtype=torch.float64)
    before = model(x)
    with smoothed(model, 1e-4):
        narrow = model(x)
    with smoothed(model, 1.0):
        wide = model(x)
    assert torch.equal(model(x), before)  # hooks removed
    assert torch.allclose(narrow, before, atol=1e-6)  # no pre-activation sits within 1e-4 alpha of a threshold
    assert not torch.allclose(wide, before, atol=1e-3)


@pytest.mark.parametrize("name", ["identity", "relu", "clipped_relu", "leaky_relu(slope=0.2)", "approx_sign"])
def test_switchable_ste_gives_each_ste_gradient_from_one_forward(name):
    model, x = _model(), torch.randn(32, 6, dtype=torch.float64)
    selector = STESelector()
    with switchable_ste(model, selector):
        loss = model(x).square().sum()
    selector.ste = stelab.ste.get(name)
    got = torch.autograd.grad(loss, list(model.parameters()))
    reference = stelab.quantize_activations(_float_model(), bits=2, ste=name)  # the library's own backward
    want = torch.autograd.grad(reference(x).square().sum(), list(reference.parameters()))
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-12)
    assert np.isfinite(float(loss.detach()))
