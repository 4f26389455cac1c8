"""Scale symmetry (Gongyo & Ishikawa 2021): invariances, clipped-ReLU limits, the stationary set, descent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.optimize import brentq

from stelab.theory.symmetry import (
    WeightedData,
    coarse_descent,
    coarse_grad_w,
    loss,
    misspecified_labels,
    radial_tangential,
    sample_inputs,
)
from stelab.theory.symmetry_exact import AngularModel, crelu_scaling, loglog_slope
from stelab.theory.symmetry_stationary import (
    enumeration_gap,
    ray_behaviour,
    stationary_points_analytic,
    stationary_points_numeric,
)

F64 = torch.float64
V2 = torch.tensor([0.7, -0.4], dtype=F64)
W2 = torch.tensor([[0.8, 0.3], [-0.5, 0.9]], dtype=F64)


def _random_problem(seed: int, m: int, d: int, n: int = 400):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=F64)
    y = torch.rand(n, generator=gen, dtype=F64) * 2 - 1  # arbitrary labels
    v = torch.randn(m, generator=gen, dtype=F64)
    W = torch.randn(m, d, generator=gen, dtype=F64)
    return WeightedData.empirical(x, y), v, W


# --- exact invariances -------------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 4), d=st.integers(2, 5),
       log_c=st.lists(st.floats(-3, 3), min_size=4, max_size=4))
def test_loss_and_scale_invariant_coarse_gradients_are_exactly_invariant(seed, m, d, log_c):
    data, v, W = _random_problem(seed, m, d)
    c = torch.tensor([10.0 ** e for e in log_c[:m]], dtype=F64).unsqueeze(1)
    assert abs(loss(v, c * W, data) - loss(v, W, data)) <= 1e-12
    for name in ("identity", "relu", "leaky_relu"):
        g, g_scaled = coarse_grad_w(v, W, data, name), coarse_grad_w(v, c * W, data, name)
        assert torch.allclose(g_scaled, g, rtol=0, atol=1e-12), name


def test_clipped_relu_coarse_gradient_is_not_invariant():
    data, v, W = _random_problem(0, 2, 3)
    g1, g10 = coarse_grad_w(v, W, data, "clipped_relu"), coarse_grad_w(v, 10 * W, data, "clipped_relu")
    assert (g1 - g10).norm() > 0.5 * g1.norm() > 0


@settings(max_examples=6, deadline=None)
@given(log_c=st.floats(-2, 3), theta=st.floats(-math.pi, math.pi))
def test_exact_model_loss_is_invariant_along_rays(log_c, theta):
    model = AngularModel(tilt=0.3, b=0.5)
    W = torch.tensor([[math.cos(theta), math.sin(theta)], [0.3, -1.1]], dtype=F64)
    c = torch.tensor([[10.0 ** log_c], [1.0]], dtype=F64)
    assert abs(model.loss(V2, c * W) - model.loss(V2, W)) <= 1e-12
    for name in ("identity", "relu"):
        assert torch.allclose(model.coarse_grad_w(V2, c * W, name), model.coarse_grad_w(V2, W, name), atol=1e-12)


# --- the exact model against independent computations ----------------------------------------------------------

def test_quadrature_matches_monte_carlo_within_standard_errors():
    model = AngularModel(tilt=0.4, b=0.5)
    gen = np.random.default_rng(0)
    n = 400_000
    # angles from (1 + tilt cos phi)/(2 pi) by rejection, radii uniform on the disk
    phi = gen.uniform(-np.pi, np.pi, 3 * n)
    phi = phi[gen.uniform(0, 1 + model.tilt, 3 * n) < 1 + model.tilt * np.cos(phi)][:n]
    r = np.sqrt(gen.uniform(0, 1, n))
    x = torch.from_numpy(np.stack([r * np.cos(phi), r * np.sin(phi)], 1))
    y = torch.from_numpy(model.label(phi))
    from stelab.theory.symmetry import network_output

    for quantity in ("loss", "crelu_grad"):
        res = network_output(V2, 2 * W2, x) - y
        if quantity == "loss":
            samples = 0.5 * res**2
            exact = model.loss(V2, 2 * W2)
        else:  # first coordinate of the clipped-ReLU coarse gradient of unit 0
            z = x @ (2 * W2[0])
            samples = res * V2[0] * ((z > 0) & (z <= 1)).to(F64) * x[:, 0]
            exact = float(model.coarse_grad_w(V2, 2 * W2, "clipped_relu")[0, 0])
        se = float(samples.std()) / math.sqrt(len(samples))
        assert abs(float(samples.mean()) - exact) < 4 * se, quantity


def test_true_gradient_formula_matches_finite_differences():
    model = AngularModel(tilt=0.4, b=0.5)
    grad, h = model.true_grad_w(V2, W2), 1e-6
    fd = torch.zeros_like(W2)
    for i in range(2):
        for j in range(2):
            e = torch.zeros_like(W2)
            e[i, j] = h
            fd[i, j] = (model.loss(V2, W2 + e) - model.loss(V2, W2 - e)) / (2 * h)
    assert torch.allclose(grad, fd, atol=1e-8)
    # Euler: the loss has degree 0 in each w_j, so its gradient is orthogonal to w_j
    assert (grad * W2).sum(dim=1).abs().max() < 1e-15


# --- limits of the clipped ReLU coarse gradient --------------------------------------------------------------------

def test_clipped_relu_tends_to_relu_as_c_goes_to_zero():
    model = AngularModel(tilt=0.4)
    relu = model.coarse_grad_w(V2, W2, "relu")
    c_max = 1 / float(W2.norm(dim=1).max())  # below it every |w_j . x| <= 1 on the unit disk
    for c in (0.01, 0.5 * c_max, c_max):
        assert torch.allclose(model.coarse_grad_w(V2, c * W2, "clipped_relu"), relu, atol=1e-14)
    # on unbounded (Gaussian) samples the convergence is only asymptotic
    x = sample_inputs("gaussian", 4000, seed=1)
    data = WeightedData.empirical(x, misspecified_labels(x))
    relu = coarse_grad_w(V2, W2, data, "relu")
    gaps = [float((coarse_grad_w(V2, c * W2, data, "clipped_relu") - relu).norm()) for c in (1.0, 0.3, 0.1, 0.03)]
    assert gaps[0] > 1e-2 and all(a >= b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-12


@pytest.mark.parametrize("tilt", [0.4, 0.0])
def test_clipped_relu_large_c_limit_and_decay_rates(tilt):
    model = AngularModel(tilt=tilt)
    cs = np.geomspace(30, 3000, 7)
    sc = crelu_scaling(model, V2, W2, cs)
    assert sc["large_c_gap"][-1] < 1e-4
    assert -1.1 < loglog_slope(cs, sc["large_c_gap"]) < -0.85  # c g(cW) - limit = O(1/c)
    assert -2.1 < loglog_slope(cs, sc["radial"]) < -1.85
    assert -1.03 < loglog_slope(cs, sc["tangential"]) < -0.97
    term = model.symmetry_breaking_term(V2, W2)
    if tilt == 0:
        assert float(term.norm()) == 0.0  # symmetric inputs: the limit is the true gradient
    else:
        assert float(term.norm()) > 1e-3
        # so the limit is *not* the true gradient: c g(cW) stays away from it
        c = 3000.0
        gap = (c * model.coarse_grad_w(V2, c * W2, "clipped_relu") - model.true_grad_w(V2, W2)).norm()
        assert abs(float(gap) - float(term.norm())) < 1e-3


# --- the stationary set ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("b", [0.0, 1.0])
def test_stationary_points_two_methods_agree(b):
    model = AngularModel(b=b)
    analytic, numeric = stationary_points_analytic(model), stationary_points_numeric(model, grid=120)
    assert len(analytic) == (4 if b == 0 else 8)
    assert enumeration_gap(analytic, numeric) < 1e-8
    for p in analytic:
        q = min(numeric, key=lambda q: abs(math.remainder(p.theta - q.theta, 2 * math.pi)))
        assert p.kind == q.kind
    assert sum(p.kind == "global minimum" for p in analytic) == (1 if b == 0 else 2)


def _crelu_zero_norm(theta_point: float, radial: str) -> float:
    """Independent 1-D computation of the norm where the clipped-ReLU radial part vanishes at theta = 0 (b = 0):
    with v - y(psi) = 2/pi - cos(psi) on the active half, the radial part is proportional to
    int_0^{pi/2} (2/pi - cos) cos * E_R[R^k 1{s R cos <= 1}] dpsi."""
    def radial_part(s):
        a = math.acos(1 / s)
        if radial == "circle":
            return quad(lambda p: (2 / math.pi - math.cos(p)) * math.cos(p), a, math.pi / 2)[0]
        return quad(lambda p: (2 / math.pi - math.cos(p)) * math.cos(p) * min(1.0, 1 / (s * math.cos(p))) ** 3,
                    0, math.pi / 2, points=[a], limit=200)[0]
    return brentq(radial_part, 1.0001, 50, xtol=1e-13)


@pytest.mark.parametrize("radial", ["disk", "circle"])
def test_every_stationary_point_is_a_clipped_relu_zero_but_not_an_identity_or_relu_zero(radial):
    model = AngularModel(radial=radial)
    s_star = _crelu_zero_norm(0.0, radial)
    for p in stationary_points_analytic(model):
        rays = {s: ray_behaviour(model, p, s, np.geomspace(0.25, 100, 25)) for s in ("identity", "relu",
                                                                                      "clipped_relu")}
        if abs(p.v) < 1e-12:  # v = 0: every coarse gradient carries the factor v
            assert all(r.norm_at_1 < 1e-12 for r in rays.values())
            continue
        assert rays["identity"].norm_at_1 > 1e-2 and rays["relu"].norm_at_1 > 1e-2
        assert abs(rays["relu"].radial_at_1) > 1e-2  # relu moves ||w|| at a constant rate along the whole ray
        crelu = rays["clipped_relu"]
        assert len(crelu.zero_norms) == 1 and crelu.grad_norm_at_zero[0] < 1e-12
        assert abs(crelu.zero_norms[0] - s_star) < 1e-9


def test_stationary_points_off_symmetry_axes_are_clipped_relu_zeros_only_at_infinity():
    model = AngularModel(b=1.0)
    p = next(p for p in stationary_points_analytic(model) if p.kind == "global minimum")
    assert abs(abs(p.theta) - math.pi / 4) < 1e-12
    crelu = ray_behaviour(model, p, "clipped_relu", np.geomspace(0.25, 100, 25))
    assert crelu.zero_norms and min(crelu.grad_norm_at_zero) > 1e-3  # radial part vanishes, tangential does not
    v = torch.tensor([p.v], dtype=F64)
    norms = [float(model.coarse_grad_w(v, p.w(s), "clipped_relu").norm()) for s in (100.0, 1000.0)]
    assert norms[1] < norms[0] / 50  # ... but the whole gradient decays faster than 1/||w||


# --- coarse gradient descent and errors ----------------------------------------------------------------------------

def test_identity_and_relu_drift_while_clipped_relu_settles():
    x = sample_inputs("uniform_square", 3000, seed=0)
    data = WeightedData.empirical(x, misspecified_labels(x))
    runs = {s: coarse_descent([0.5], [[1.0, 0.3]], data, s, lr=0.5, steps=1200, record_every=10)
            for s in ("identity", "relu", "clipped_relu")}
    for name in ("identity", "relu"):
        norms = runs[name].w_norm[:, 0]
        half = norms[len(norms) // 2]
        assert norms[-1] - half > 0.3 * half and norms[-1] > 5  # keeps growing at a constant rate: no rest point
    crelu = runs["clipped_relu"].w_norm[:, 0]
    assert abs(crelu[-1] - crelu[len(crelu) // 2]) < 1e-3 * crelu[-1] and crelu[-1] < 3
    r, t = radial_tangential(torch.from_numpy(runs["clipped_relu"].W),
                             coarse_grad_w(runs["clipped_relu"].v, runs["clipped_relu"].W, data, "clipped_relu"))
    assert abs(float(r[0])) < 1e-4


@pytest.mark.parametrize("call, match", [
    (lambda: coarse_grad_w(V2, W2, WeightedData.empirical(torch.ones(3, 2), torch.ones(3)), "nope"), "clipped_relu"),
    (lambda: AngularModel(radial="sphere"), "disk"),
    (lambda: AngularModel(tilt=1.0), "tilt"),
    (lambda: coarse_grad_w(V2, W2[:1], WeightedData.empirical(torch.ones(3, 2), torch.ones(3))), "same m"),
    (lambda: sample_inputs("cauchy", 10), "uniform_square"),
    (lambda: stationary_points_analytic(AngularModel(tilt=0.2)), "tilt"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_exact_descent_settles_where_the_ray_analysis_says():
    from stelab.theory.symmetry_exact import exact_descent

    for b, expect_theta in ((0.0, 0.0), (1.0, 0.0)):
        model = AngularModel(b=b)
        start = next(p for p in stationary_points_analytic(model) if p.kind == "global minimum")
        v, W, g = exact_descent(model, torch.tensor([start.v], dtype=F64), start.w(1.0), "clipped_relu", lr=3.0,
                                steps=400)
        assert g < 1e-6 and abs(math.atan2(float(W[0, 1]), float(W[0, 0])) - expect_theta) < 1e-3
        if b == 0:  # stays on the minimum's ray and stops at the norm of the independent 1-D computation
            assert abs(float(W.norm()) - _crelu_zero_norm(0.0, "disk")) < 1e-5
        else:  # leaves the global minimum (theta = -pi/4, not a symmetry axis) for the saddle at theta = 0
            assert model.loss(v, W) > start.loss + 0.05
    # the true gradient does not move away from a stationary point
    v, W, g = exact_descent(model, torch.tensor([start.v], dtype=F64), start.w(1.0), None, lr=1.0, steps=5)
    assert g < 1e-12 and torch.allclose(W, start.w(1.0), atol=1e-12)


def test_true_gradient_and_large_c_limit_for_a_generic_3d_density():
    """Away from the angular model: a non-symmetric Gaussian mixture in 3-D, labels depending on x smoothly."""
    from stelab.theory.symmetry import GaussianMixture, hyperplane_gradients

    mix = GaussianMixture(torch.tensor([[0.8, 0.2, 0.0], [-0.3, 0.6, 0.4]], dtype=F64),
                          torch.tensor([0.7, 0.5], dtype=F64), torch.tensor([0.6, 0.4], dtype=F64))

    def label(x):
        return 0.3 + torch.tanh(x[:, 0] - 0.5 * x[:, 2])

    v = torch.tensor([0.9, -0.5], dtype=F64)
    W = torch.tensor([[1.0, 0.4, -0.3], [-0.2, 1.1, 0.5]], dtype=F64)
    grad, breaking = hyperplane_gradients(v, W, mix, label, n=200_000, seed=1)
    x = mix.sample(2_000_000, seed=3)
    y = label(x)
    data = WeightedData.empirical(x, y)

    def per_sample(Wc, ste_mask):  # per-sample terms whose mean is the coarse gradient of unit 0
        z = x @ Wc.T
        r = (z > 0).to(F64) @ v - y
        return (r * v[0] * ste_mask(z[:, 0])).unsqueeze(1) * x

    # 1) the hyperplane formula is the gradient: central differences of the sample loss (common random numbers)
    h = 0.02
    for k in range(3):
        e = torch.zeros_like(W)
        e[0, k] = h
        terms = [0.5 * ((((x @ Wk.T) > 0).to(F64) @ v - y) ** 2) for Wk in (W + e, W - e)]
        fd = (terms[0] - terms[1]) / (2 * h)
        assert abs(float(fd.mean()) - float(grad[0, k])) < 4 * float(fd.std()) / math.sqrt(len(x)) + 1e-3 * h

    # 2) c g_crelu(cW) -> grad + breaking: remove the O(1/c) and O(1/c^2) terms by Richardson extrapolation
    def crelu_terms(c):
        return c * per_sample(c * W, lambda z: ((z > 0) & (z <= 1)).to(F64))

    t8, t16, t32 = crelu_terms(8.0), crelu_terms(16.0), crelu_terms(32.0)
    assert torch.allclose(t32.mean(0), 32 * coarse_grad_w(v, 32 * W, data, "clipped_relu")[0], atol=1e-12)
    extrapolated = (8 * t32 - 6 * t16 + t8) / 3
    mean, se = extrapolated.mean(0), extrapolated.std(0) / math.sqrt(len(x))
    assert bool(((mean - (grad + breaking)[0]).abs() < 4 * se).all())
    assert float((breaking[0].abs() / se).max()) > 8  # the breaking term is resolved: the limit is not grad alone
