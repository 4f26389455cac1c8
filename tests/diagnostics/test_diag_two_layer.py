"""The diagnostics on the two-layer Gaussian model of Yin et al. (2019) agree with the theory's closed forms (the
closed forms themselves are checked against the paper and an independent quadrature in
tests/theory/test_two_layer_closed_forms.py)."""

import numpy as np
import pytest

from stelab.diagnostics.two_layer_check import closed_form, cross_check, default_problem, gaussian_batches
from stelab.theory import two_layer

STES = ("identity", "relu", "clipped_relu")
PROBLEMS = {"theta=1.0": default_problem(theta=1.0), "theta=2.0": default_problem(theta=2.0, seed=1)}


def test_the_check_uses_the_theory_and_refuses_collinear_problems():
    v, w, vs, ws = PROBLEMS["theta=1.0"]
    expected, true, source = closed_form(v, w, vs, ws, "relu")
    assert source == "stelab.theory.two_layer"
    np.testing.assert_array_equal(expected, two_layer.expected_coarse_grad(v, w, vs, ws, "relu"))
    np.testing.assert_array_equal(true, two_layer.population_grad(v, w, vs, ws)[1])
    assert abs(two_layer.angle(w, ws) - 1.0) < 1e-12 and abs(np.linalg.norm(w) - 1.3) < 1e-12
    with pytest.raises(ValueError, match="parallel"):
        closed_form(v, ws, vs, ws, "relu")
    z, y = next(gaussian_batches(vs, ws, 5, 1))
    np.testing.assert_allclose(y.numpy(), ((z.numpy() @ ws) > 0) @ vs, rtol=1e-14)


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
