"""The diagnostics on the two-layer Gaussian model of Yin et al. (2019) agree with the theory's closed forms."""

import importlib.util
import math

import numpy as np
import pytest

from stelab.diagnostics.two_layer_check import (
    _frame,
    cross_check,
    default_problem,
    expected_coarse_grad_quadrature,
    true_grad_w,
)

STES = ("identity", "relu", "clipped_relu")
PROBLEMS = {"theta=1.0": default_problem(theta=1.0), "theta=2.0": default_problem(theta=2.0, seed=1)}


def _brief_closed_forms(v, w, v_star, w_star):
    """E g for identity and relu, and grad f, as written in Yin et al. (2019) (typed in independently)."""
    w_hat, u, theta, norm_w = _frame(w, w_star)
    r = math.sqrt(2 * math.pi)
    vv = v @ v_star
    identity = (v @ v * w_hat - vv * w_star) / r
    h = v @ v + v.sum() ** 2 - v.sum() * v_star.sum() + vv
    relu = (h - (1 + math.cos(theta)) * vv) / (2 * r) * w_hat - math.sin(theta) * vv / (2 * r) * u
    return {"identity": identity, "relu": relu}, -vv / (2 * math.pi * norm_w) * u


@pytest.mark.parametrize("problem", PROBLEMS)
def test_quadrature_reproduces_the_papers_closed_forms(problem):
    v, w, vs, ws = PROBLEMS[problem]
    expected, grad = _brief_closed_forms(v, w, vs, ws)
    for name, value in expected.items():
        assert np.allclose(expected_coarse_grad_quadrature(v, w, vs, ws, name), value, atol=1e-10)
    assert np.allclose(true_grad_w(v, w, vs, ws), grad, atol=1e-14)


@pytest.mark.skipif(importlib.util.find_spec("stelab.theory.two_layer") is None, reason="theory module absent")
@pytest.mark.parametrize("problem", PROBLEMS)
def test_theory_module_agrees_with_independent_quadrature(problem):
    from stelab.theory import two_layer

    v, w, vs, ws = PROBLEMS[problem]
    for name in STES:
        theory = np.asarray(two_layer.expected_coarse_grad(v, w, vs, ws, ste=name, clip=1.0))
        assert np.allclose(theory, expected_coarse_grad_quadrature(v, w, vs, ws, name), atol=1e-9), name
    assert np.allclose(np.asarray(two_layer.population_grad(v, w, vs, ws)[1]), true_grad_w(v, w, vs, ws), atol=1e-12)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_diagnostic_cosine_matches_closed_form_within_monte_carlo_error(problem):
    v, w, vs, ws = PROBLEMS[problem]
    report = cross_check(v, w, vs, ws, STES, widths=(0.1, 0.05), batch_size=1000, n_batches=40, seed=3)
    rows = {(r["ste"], r["reference"]): r for r in report["rows"]}
    theory = {name: rows[(name, "extrapolated(s->0)")]["closed_form_cosine"] for name in STES}
    for name in STES:
        row = rows[(name, "extrapolated(s->0)")]
        # 6 comparisons in this file: |z| < 4 has a false-alarm rate of ~4e-4
        assert abs(row["z_score"]) < 4.0, row
        assert row["diagnostic_se"] < 0.02  # and the check has teeth
    # the diagnostic separates STEs whose closed forms differ (clipped relu vs identity differ by >= 0.07 here)
    crelu = rows[("clipped_relu", "extrapolated(s->0)")]
    assert abs(crelu["diagnostic_cosine"] - theory["identity"]) > 6 * crelu["diagnostic_se"]
