"""Closed forms of the two-linear-layer model (Yin et al. 2019) against independent computations: Monte Carlo with
the core STE objects, central differences, the general integration recipe, and the paper's identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stelab import ste as ste_registry
from stelab.theory import two_layer as tl
from stelab.theory.two_layer import standard_error_ok

THREE = ("identity", "relu", "clipped_relu")


def point(seed: int, m: int, n: int, norm: float = 1.0, theta: float | None = None):
    """A random teacher (unit w*) and a random (v, w) with ||w|| = norm (and angle theta, if given)."""
    rng = np.random.default_rng(seed)
    v_star, v = rng.standard_normal(m), rng.standard_normal(m)
    w_star = rng.standard_normal(n)
    w_star /= np.linalg.norm(w_star)
    if theta is None:
        w = rng.standard_normal(n)
    else:
        perp = rng.standard_normal(n)
        perp -= (perp @ w_star) * w_star
        w = math.cos(theta) * w_star + math.sin(theta) * perp / np.linalg.norm(perp)
    return v, norm * w / np.linalg.norm(w), v_star, w_star


problems = st.tuples(st.integers(0, 10**6), st.integers(1, 7), st.integers(2, 9), st.floats(-2.5, 2.5),
                     st.floats(0.01, math.pi - 0.01))


# ---------------------------------------------------------------------------------------------------------------------
# Monte Carlo (the same STE objects as training) against the closed forms and the integration recipe
# ---------------------------------------------------------------------------------------------------------------------
MC_POINTS = [  # (seed, m, n, ||w||, theta or None for random, clip)
    (1, 5, 8, 1.0, None, 1.0),
    (2, 3, 4, 0.3, None, 1.0),
    (3, 7, 6, 3.0, None, 1.0),
    (4, 1, 3, 1.5, 0.2, 1.0),
    (5, 4, 5, 0.8, math.pi - 0.15, 1.0),
    (6, 6, 7, 2.0, None, 0.5),
    (7, 2, 2, 0.6, 1.2, 2.0),
]


@pytest.mark.parametrize("seed,m,n,norm,theta,clip", MC_POINTS)
def test_every_expectation_matches_monte_carlo_within_4_standard_errors(seed, m, n, norm, theta, clip):
    v, w, v_star, w_star = point(seed, m, n, norm, theta)
    stes = ste_registry.names()
    mc = tl.sample_coarse_grads(v, w, v_star, w_star, stes, clip=clip, samples=60_000, seed=seed)
    grad_v, _ = tl.population_grad(v, w, v_star, w_star)
    for name in stes:
        est = mc[name]
        assert abs(est.loss - tl.population_loss(v, w, v_star, w_star)) <= 4 * est.loss_se
        assert standard_error_ok(est.grad_v, est.grad_v_se, grad_v), "E[sample v-gradient] != df/dv"
        exact = tl.expected_coarse_grad(v, w, v_star, w_star, name, clip=clip)
        assert standard_error_ok(est.grad_w, est.grad_w_se, exact), (name, est.grad_w, exact, est.grad_w_se)
        assert np.linalg.norm(exact) > 0


@settings(deadline=None, max_examples=40)
@given(problems, st.floats(0.2, 3.0))
def test_closed_forms_equal_the_integration_recipe(prob, clip):
    seed, m, n, log_norm, theta = prob
    v, w, v_star, w_star = point(seed, m, n, math.exp(log_norm), theta)
    for name in THREE:
        closed = tl.expected_coarse_grad(v, w, v_star, w_star, name, clip=clip, method="closed")
        integrated = tl.expected_coarse_grad(v, w, v_star, w_star, name, clip=clip, method="integrate")
        np.testing.assert_allclose(integrated, closed, rtol=0, atol=1e-10 * (1 + np.abs(closed).max()))


@settings(deadline=None, max_examples=25)
@given(problems, st.sampled_from(["identity", "relu", "leaky_relu", "leaky_relu(slope=-0.3)"]), st.floats(0.05, 20))
def test_scale_invariant_stes_give_scale_invariant_expectations(prob, name, scale):
    # mu'(c x) = mu'(x) for c > 0, so E[z mu'(z.w) ...] cannot depend on ||w||.
    seed, m, n, log_norm, theta = prob
    v, w, v_star, w_star = point(seed, m, n, math.exp(log_norm), theta)
    a = tl.expected_coarse_grad(v, w, v_star, w_star, name)
    b = tl.expected_coarse_grad(v, scale * w, v_star, w_star, name)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-10 * (1 + np.abs(a).max()))


@settings(deadline=None, max_examples=25)
@given(problems, st.sampled_from(["clipped_relu", "hardtanh", "approx_sign", "swish_sign"]), st.floats(0.1, 10))
def test_clip_level_acts_as_a_rescaling_of_w(prob, name, clip):
    # These proxies are defined in units of top: mu'(x; c) = mu'(x/c; 1), so E g(w; clip c) = E g(w/c; 1).
    # (log_tailed_relu is not: its tail 1/(x - top + 1) has a fixed unit scale.)
    seed, m, n, log_norm, theta = prob
    v, w, v_star, w_star = point(seed, m, n, math.exp(log_norm), theta)
    a = tl.expected_coarse_grad(v, w, v_star, w_star, name, clip=clip)
    b = tl.expected_coarse_grad(v, w / clip, v_star, w_star, name, clip=1.0)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * (1 + np.abs(a).max()))


# ---------------------------------------------------------------------------------------------------------------------
# Population gradient, correlation identities
# ---------------------------------------------------------------------------------------------------------------------
@settings(deadline=None, max_examples=40)
@given(problems)
def test_population_gradient_matches_central_differences(prob):
    seed, m, n, log_norm, theta = prob
    theta = min(max(theta, 0.05), math.pi - 0.05)  # f has kinks at theta = 0 and pi
    v, w, v_star, w_star = point(seed, m, n, math.exp(log_norm / 2), theta)
    grad_v, grad_w = tl.population_grad(v, w, v_star, w_star)
    h = 1e-6 * np.linalg.norm(w)
    numeric_w = np.array([(tl.population_loss(v, w + h * e, v_star, w_star)
                           - tl.population_loss(v, w - h * e, v_star, w_star)) / (2 * h) for e in np.eye(n)])
    numeric_v = np.array([(tl.population_loss(v + 1e-5 * e, w, v_star, w_star)
                           - tl.population_loss(v - 1e-5 * e, w, v_star, w_star)) / 2e-5 for e in np.eye(m)])
    # Round-off of a central difference is ~ eps |f| / h; truncation ~ h^2 |f'''| is far smaller here.
    f = tl.population_loss(v, w, v_star, w_star)
    np.testing.assert_allclose(numeric_w, grad_w, rtol=0, atol=1e-8 * (1 + f) / np.linalg.norm(w))
    np.testing.assert_allclose(numeric_v, grad_v, rtol=0, atol=1e-8 * (1 + np.abs(grad_v).max()))


@settings(deadline=None, max_examples=60)
@given(problems)
def test_correlation_identities(prob):
    seed, m, n, log_norm, theta = prob
    v, w, v_star, w_star = point(seed, m, n, math.exp(log_norm), theta)
    got = {name: tl.correlation(v, w, v_star, w_star, name) for name in THREE}
    relu = math.sin(theta) * float(v @ v_star) ** 2 / (2 * (2 * math.pi) ** 1.5 * np.linalg.norm(w))
    # Relative 1e-10, plus the round-off floor of an inner product, ~ n eps ||E g|| ||df/dw|| (E g is mostly along
    # w_hat, orthogonal to df/dw, so at small angles the inner product cancels).
    _, grad_w = tl.population_grad(v, w, v_star, w_star)
    big = max(np.linalg.norm(tl.expected_coarse_grad(v, w, v_star, w_star, name)) for name in THREE)
    tol = 1e-10 * relu + 1e-13 * n * big * np.linalg.norm(grad_w)
    assert got["relu"] >= 0
    assert abs(got["relu"] - relu) <= tol
    assert abs(got["identity"] - 2 * relu) <= 2 * tol
    from scipy.stats import norm as normal

    factor = 2 * (normal.cdf(1 / (np.linalg.norm(w) * math.sin(theta))) - 0.5)
    assert abs(got["clipped_relu"] - relu * factor) <= tol
    for name in THREE:
        assert abs(got[name] - tl.correlation_formula(v, w, v_star, w_star, name)) <= 2 * tol


def test_loss_depends_on_w_only_through_theta_and_on_the_direction_of_w_star():
    v, w, v_star, w_star = point(11, 4, 5)
    f = tl.population_loss(v, w, v_star, w_star)
    assert tl.population_loss(v, 7 * w, v_star, 3 * w_star) == pytest.approx(f, abs=1e-14)
    assert tl.population_loss(v_star, w_star, v_star, w_star) == pytest.approx(0, abs=1e-14)


# ---------------------------------------------------------------------------------------------------------------------
# Critical points
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_critical_points_have_the_claimed_gradients(seed):
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(2, 8)), int(rng.integers(2, 8))
    _, _, v_star, w_star = point(seed, m, n)
    s, ss = v_star.sum(), v_star @ v_star
    points = {p.kind: p for p in tl.critical_points(v_star, w_star)}
    assert set(points) == ({"global_min", "saddle", "spurious_min"} if s * s < (m + 1) / 2 * ss else {"global_min"})
    for p in points.values():
        grad_v, grad_w = tl.population_grad(p.v, 2.5 * p.w, v_star, w_star)
        assert np.abs(grad_v).max() < 1e-12 and np.abs(grad_w).max() < 1e-12
        assert tl.angle(p.w, w_star) == pytest.approx(p.theta, abs=1e-12)
        # relu and clipped relu coarse gradients vanish at every critical point (h = 0 when v'v* = 0).
        for name in ("relu", "clipped_relu"):
            assert np.abs(tl.expected_coarse_grad(p.v, 2.5 * p.w, v_star, w_star, name)).max() < 1e-12
    if "spurious_min" in points:
        p = points["spurious_min"]
        assert p.theta == math.pi
        claimed = 2 * (m - 1) * s * s / (math.sqrt(2 * math.pi) * (m + 1) ** 2)
        assert np.linalg.norm(tl.expected_coarse_grad(p.v, p.w, v_star, w_star, "identity")) == pytest.approx(
            claimed, rel=1e-12)
        # The kink is a cone: f rises with slope -(v'v*)/(2 pi ||w||) > 0 in every direction orthogonal to w*.
        perp = rng.standard_normal(n)
        perp -= (perp @ w_star) * w_star
        perp /= np.linalg.norm(perp)
        f0, t = tl.population_loss(p.v, p.w, v_star, w_star), 1e-7
        slope = (tl.population_loss(p.v, p.w + t * perp, v_star, w_star) - f0) / t
        assert slope == pytest.approx(-(p.v @ v_star) / (2 * math.pi), rel=1e-5)
        assert slope > 0
        sad = points["saddle"]
        assert sad.theta == pytest.approx(math.pi / 2 * (m + 1) * ss / ((m + 1) * ss - s * s), rel=1e-14)
        assert 0 < sad.theta < math.pi


def test_descent_ratio_blows_up_for_identity_and_vanishes_for_relu_near_the_spurious_minimizer():
    _, _, v_star, w_star = point(3, 5, 6)
    p = next(p for p in tl.critical_points(v_star, w_star) if p.kind == "spurious_min")
    perp = tl.unit_at_angle(w_star, math.pi / 2)
    ratios = {name: [tl.descent_ratio(p.v + e, math.cos(math.pi - e) * w_star + math.sin(math.pi - e) * perp,
                                      v_star, w_star, name) for e in (1e-2, 1e-3, 1e-4)] for name in THREE}
    # identity: numerator -> ||E g_id||^2 > 0 while the denominator -> 0 like eps, so the ratio grows like 1/eps.
    assert ratios["identity"][-1] > 50 * ratios["identity"][0] and ratios["identity"][-1] > 1
    for name in ("relu", "clipped_relu"):
        assert ratios[name][-1] < 2e-2 * ratios[name][0]


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------
def test_bad_input_raises_clear_errors():
    v, w, v_star, w_star = point(0, 3, 4)
    with pytest.raises(ValueError, match="m >= 1|non-empty"):
        tl.population_loss([], w, [], w_star)
    with pytest.raises(ValueError, match="w must be nonzero"):
        tl.expected_coarse_grad(v, np.zeros(4), v_star, w_star)
    with pytest.raises(ValueError, match="same length"):
        tl.population_grad(v, w, v_star[:2], w_star)
    with pytest.raises(ValueError, match="same length"):
        tl.sample_coarse_grad(v, w[:3], v_star, w_star)
    with pytest.raises(ValueError, match="valid choices: .*clipped_relu.*relu"):
        tl.expected_coarse_grad(v, w, v_star, w_star, "no_such_ste")
    with pytest.raises(ValueError, match="no closed form"):
        tl.expected_coarse_grad(v, w, v_star, w_star, "hardtanh", method="closed")
    with pytest.raises(ValueError, match="valid choices"):
        tl.expected_coarse_grad(v, w, v_star, w_star, method="exact")
    with pytest.raises(ValueError, match="clip"):
        tl.expected_coarse_grad(v, w, v_star, w_star, "clipped_relu", clip=0.0)
    with pytest.raises(ValueError, match="finite"):
        tl.population_loss([np.nan, 1, 2], w, v_star, w_star)
    with pytest.raises(ValueError, match="w_star must be nonzero"):
        tl.population_loss(v, w, v_star, np.zeros(4))


# ---------------------------------------------------------------------------------------------------------------------
# One source of truth: the theory's coarse gradient is what training's autograd op computes
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ste_registry.names())
def test_sample_coarse_gradient_equals_autograd_through_the_training_op(name):
    import stelab
    from stelab.theory.two_layer import standard_normal_inputs

    v, w, v_star, w_star = (torch.from_numpy(a) for a in point(21, 4, 5, norm=0.7))
    z = standard_normal_inputs(256, 4, 5, seed=3)
    # sigma(x) = 1{x > 0} is the 1-bit staircase with alpha = 1, whose top level (the STE's clip) is 1.
    w_leaf, v_leaf = w.clone().requires_grad_(True), v.clone().requires_grad_(True)
    # an STE built on the staircase's levels (dsq, gaussian_smoothed) is given the 1-bit staircase's one level
    name = f"{name}(levels=1)" if "levels" in ste_registry.get(name).params else name
    hidden = stelab.quantize(z @ w_leaf, bits=1, alpha=1.0, ste=name)
    np.testing.assert_array_equal(hidden.detach().numpy(), (z @ w > 0).double().numpy())
    residual = hidden @ v_leaf - (z @ w_star > 0).double() @ v_star
    (residual**2 / 2).sum().backward()
    terms = tl.sample_terms(z, v, w, v_star, w_star, name, clip=1.0)
    np.testing.assert_allclose(w_leaf.grad.numpy(), terms.grad_w.sum(0).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v_leaf.grad.numpy(), terms.grad_v.sum(0).numpy(), rtol=1e-12, atol=1e-12)


def test_integration_handles_near_collinear_angles_and_user_kinks():
    v, _, v_star, w_star = point(8, 4, 5)
    for theta in (1e-9, 1e-6, 1e-3, math.pi - 1e-6, math.pi - 1e-9):
        w = 1.3 * tl.unit_at_angle(w_star, theta)
        for name in THREE:
            closed = tl.expected_coarse_grad(v, w, v_star, w_star, name, method="closed")
            integrated = tl.expected_coarse_grad(v, w, v_star, w_star, name, method="integrate")
            np.testing.assert_allclose(integrated, closed, rtol=0, atol=1e-10 * (1 + np.abs(closed).max()))
    # A user STE with a kink the library cannot know about: 1{0 < x <= 0.3 top}, i.e. clipped relu at clip 0.3.
    user = ste_registry.STE("clip03", lambda x, top: ((x > 0) & (x <= 0.3 * top)).to(x.dtype))
    w = 0.9 * tl.unit_at_angle(w_star, 1.0)
    want = tl.expected_coarse_grad(v, w, v_star, w_star, "clipped_relu", clip=0.3)
    got = tl.expected_coarse_grad(v, w, v_star, w_star, user, extra_breaks=(0.3,))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * (1 + np.abs(want).max()))
