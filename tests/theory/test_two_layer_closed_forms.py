"""The closed forms of the two-layer model are keyed by the STE's derivative (its piecewise table), never by its name;
and they agree with the paper's formulas typed in independently and with an independent adaptive quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from stelab import ste as ste_registry
from stelab.theory import two_layer as tl

THREE = ("identity", "relu", "clipped_relu")
PROBLEMS = {"theta=1.0": tl.student_near_teacher(8, 6, theta=1.0),
            "theta=2.0": tl.student_near_teacher(8, 6, theta=2.0, seed=1)}


def _half_slope_below(x, top):
    """A different derivative under the old name: 1 above 0, 1/2 below (leaky relu with slope 1/2)."""
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, 0.5))


@pytest.fixture
def relu_entry():
    """Restores the built-in relu after a test that re-registers the name."""
    from stelab.ste import registry

    saved = registry._REGISTRY["relu"]
    yield
    registry._REGISTRY["relu"] = saved
    registry._CACHE.clear()


@pytest.mark.parametrize("how", ["derivative", "table"])
def test_re_registered_relu_does_not_use_the_old_closed_form(relu_entry, how):
    v, w, v_star, w_star = PROBLEMS["theta=1.0"]
    old = tl.expected_coarse_grad(v, w, v_star, w_star, "relu")
    if how == "derivative":
        ste_registry.register("relu", _half_slope_below, overwrite=True)
    else:  # the same derivative given by its piecewise table
        ste_registry.register("relu", piecewise=ste_registry.Piecewise((0.0,), (0.5, 1.0)), overwrite=True)
    assert tl.closed_form_for(ste_registry.get("relu")) is None
    new = tl.expected_coarse_grad(v, w, v_star, w_star, "relu")
    want = tl.expected_coarse_grad(v, w, v_star, w_star, "leaky_relu(slope=0.5)", method="integrate")
    np.testing.assert_allclose(new, want, rtol=0, atol=1e-12)
    assert np.max(np.abs(new - old)) > 1e-3  # the new derivative really gives another expectation
    with pytest.raises(ValueError, match="no closed form"):
        tl.expected_coarse_grad(v, w, v_star, w_star, "relu", method="closed")
    with pytest.raises(ValueError, match="no correlation formula"):
        tl.correlation_formula(v, w, v_star, w_star, "relu")


def test_closed_forms_follow_the_table_not_the_name():
    # leaky relu with slope 0 has relu's derivative, so relu's closed form applies to it.
    zero_slope = ste_registry.get("leaky_relu(slope=0)")
    assert tl.closed_form_for(zero_slope) is tl.closed_form_for(ste_registry.get("relu"))
    for name in THREE:
        assert tl.closed_form_for(ste_registry.get(name)).name == name
    for name in set(ste_registry.names()) - set(THREE):
        assert tl.closed_form_for(ste_registry.get(name)) is None, name


def _papers_closed_forms(v, w, v_star, w_star):
    """E g for identity and relu, and grad f, as written in Yin et al. (2019) (typed in independently)."""
    fr = tl.frame(w, w_star)
    r = math.sqrt(2 * math.pi)
    vv = v @ v_star
    identity = (v @ v * fr.w_hat - vv * w_star) / r
    h = v @ v + v.sum() ** 2 - v.sum() * v_star.sum() + vv
    relu = (h - (1 + math.cos(fr.theta)) * vv) / (2 * r) * fr.w_hat - math.sin(fr.theta) * vv / (2 * r) * fr.u
    return {"identity": identity, "relu": relu}, -vv / (2 * math.pi * fr.norm) * fr.u


def _quadrature(v, w, v_star, w_star, ste: str, top: float = 1.0) -> np.ndarray:
    """E g_w for any STE by adaptive one-dimensional quadrature (scipy.integrate.quad), independent of the theory's
    Gauss-Legendre panels: rows are independent, and with x1 = z.w_hat, x2 = z.u the second variable integrates
    out exactly (see stelab.theory.two_layer.expected.span_coefficients for the four integrals)."""
    fr = tl.frame(w, w_star)
    estimator = ste_registry.get(ste)
    cot = math.cos(fr.theta) / math.sin(fr.theta)

    def k(x: float) -> float:
        return float(estimator.derivative(torch.tensor([fr.norm * x], dtype=torch.float64), top)[0])

    points = sorted({0.0, top / fr.norm, -top / fr.norm})

    def quad(f, lo: float, hi: float) -> float:
        inner = [p for p in points if lo < p < hi]
        return integrate.quad(f, lo, hi, points=inner or None, limit=200, epsabs=1e-13, epsrel=1e-11)[0]

    a = quad(lambda x: x * norm.pdf(x) * k(x), -12.0, 12.0)
    b = quad(lambda x: x * norm.pdf(x) * k(x), 0.0, 12.0)
    c1 = quad(lambda x: x * norm.pdf(x) * norm.cdf(x * cot) * k(x), -12.0, 12.0)
    c2 = quad(lambda x: norm.pdf(x) * norm.pdf(x * cot) * k(x), -12.0, 12.0)
    one_v, one_vs, vv, vvs = v.sum(), v_star.sum(), v @ v, v @ v_star
    coef_w = a / 2 * (one_v * (one_v - one_vs) - vv + vvs) + vv * b - vvs * c1
    return coef_w * fr.w_hat - vvs * c2 * fr.u


@pytest.mark.parametrize("problem", PROBLEMS)
def test_closed_forms_are_the_papers(problem):
    v, w, vs, ws = PROBLEMS[problem]
    expected, grad = _papers_closed_forms(v, w, vs, ws)
    for name, value in expected.items():
        np.testing.assert_allclose(tl.expected_coarse_grad(v, w, vs, ws, name, method="closed"), value, atol=1e-12)
        np.testing.assert_allclose(_quadrature(v, w, vs, ws, name), value, atol=1e-10)
    np.testing.assert_allclose(tl.population_grad(v, w, vs, ws)[1], grad, atol=1e-14)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_expected_coarse_gradient_agrees_with_independent_quadrature(problem):
    v, w, vs, ws = PROBLEMS[problem]
    for name in (*THREE, "hat", "leaky_relu"):
        np.testing.assert_allclose(tl.expected_coarse_grad(v, w, vs, ws, ste=name, clip=1.0),
                                   _quadrature(v, w, vs, ws, name), atol=1e-9, err_msg=name)
