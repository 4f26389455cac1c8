"""Coarse gradient descent on the two-linear-layer model: monotone for relu/clipped relu, unstable for identity
near the spurious minimizer; plus the Monte Carlo machinery it shares (determinism, mini-batch descent)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stelab.theory import two_layer as tl
from stelab.theory.two_layer import empirical_loss_along, standard_normal_inputs


def increases(traj) -> np.ndarray:
    """Steps where f went up by more than round-off (1e-12 relative)."""
    loss = traj.array("loss")
    return np.flatnonzero(np.diff(loss) > 1e-12 * (1 + np.abs(loss[:-1])))


@pytest.mark.parametrize("ste", ["relu", "clipped_relu"])
def test_descent_is_monotone_with_large_w0_small_v0_small_eta_in_20_random_problems(ste):
    for seed in range(20):
        rng = np.random.default_rng(seed)
        m, n = int(rng.integers(1, 9)), int(rng.integers(2, 12))
        prob = tl.random_problem(m, n, seed)
        w0 = rng.standard_normal(n)
        w0 *= 10 / np.linalg.norm(w0)
        v0 = 0.01 * rng.standard_normal(m)
        traj = tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], ste, eta=0.05, steps=300)
        assert traj.stopped == ""
        assert increases(traj).size == 0, (seed, traj.array("loss")[increases(traj)[:3]])
        assert traj.records["loss"][-1] < traj.records["loss"][0]
        assert traj.array("w_norm").min() > 5  # ||w|| stays away from 0


def _near_spurious(seed: int = 0):
    prob = tl.teacher_with_spurious_minima(5, 10, seed)
    spur = next(p for p in tl.critical_points(prob["v_star"], prob["w_star"]) if p.kind == "spurious_min")
    v0 = spur.v + 0.01 * np.random.default_rng(seed).standard_normal(5)
    return prob, v0, tl.unit_at_angle(prob["w_star"], math.pi - 0.05)


def test_identity_is_not_monotone_near_the_spurious_minimizer_and_w_collapses():
    prob, v0, w0 = _near_spurious()
    ident = tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], "identity", eta=0.1, steps=300)
    assert increases(ident).size > 0
    assert np.diff(ident.array("loss")).max() > 0.1  # not round-off: f jumps up
    assert ident.array("w_norm").min() < 0.1 * ident.records["w_norm"][0]
    for ste in ("relu", "clipped_relu"):  # from the same start these stay monotone and keep ||w||
        traj = tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], ste, eta=0.1, steps=300)
        assert increases(traj).size == 0
        assert traj.array("w_norm").min() > 0.5


def test_descent_converges_to_a_critical_point():
    prob = tl.random_problem(4, 6, seed=3)
    rng = np.random.default_rng(3)
    for ste in ("relu", "clipped_relu"):
        traj = tl.coarse_gradient_descent(0.1 * rng.standard_normal(4), rng.standard_normal(6), prob["v_star"],
                                          prob["w_star"], ste, eta=0.1, steps=2000)
        r = traj.records
        grad_v, _ = tl.population_grad(traj.v, traj.w, prob["v_star"], prob["w_star"])
        assert np.linalg.norm(grad_v) < 1e-6
        # Either at a kink (theta in {0, pi}) or where df/dw vanishes (v'v* = 0): f is a cone at the kinks.
        assert min(math.sin(r["theta"][-1]), r["grad_w_norm"][-1]) < 1e-6


def test_records_are_consistent_with_the_closed_forms():
    prob = tl.random_problem(3, 4, seed=5)
    v0, w0 = np.array([0.3, -0.2, 0.1]), np.array([1.0, 2.0, -1.0, 0.5])
    traj = tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], "relu", eta=0.1, steps=3)
    assert len(traj.records["loss"]) == 4
    assert traj.records["loss"][0] == pytest.approx(tl.population_loss(v0, w0, prob["v_star"], prob["w_star"]))
    assert traj.records["theta"][0] == pytest.approx(tl.angle(w0, prob["w_star"]))
    g = tl.expected_coarse_grad(v0, w0, prob["v_star"], prob["w_star"], "relu")
    grad_v, grad_w = tl.population_grad(v0, w0, prob["v_star"], prob["w_star"])
    assert traj.records["inner"][0] == pytest.approx(grad_v @ grad_v + g @ grad_w, rel=1e-12)
    # the first step is exactly v - eta df/dv, w - eta E g
    one = tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], "relu", eta=0.1, steps=1)
    np.testing.assert_allclose(one.v, v0 - 0.1 * grad_v, rtol=1e-14)
    np.testing.assert_allclose(one.w, w0 - 0.1 * g, rtol=1e-14)


def test_mini_batch_descent_is_seeded_and_tracks_exact_descent():
    prob = tl.random_problem(4, 6, seed=1)
    rng = np.random.default_rng(1)
    v0, w0 = 0.1 * rng.standard_normal(4), rng.standard_normal(6)
    kwargs = dict(ste="relu", eta=0.05, steps=300, batch_size=64, seed=7)
    a = tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], **kwargs)
    b = tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], **kwargs)
    assert a.records["loss"] == b.records["loss"]
    exact = tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], "relu", eta=0.05, steps=300)
    f0 = exact.records["loss"][0]
    # small steps average the mini-batch noise: measured deviation ~2% of f0 over 300 steps
    assert np.abs(a.array("loss") - exact.array("loss")).max() < 0.05 * f0
    assert a.records["loss"][-1] < 0.7 * f0


def test_monte_carlo_is_deterministic_given_the_seed_and_batching_does_not_matter():
    prob = tl.random_problem(3, 4, seed=2)
    v, w = np.array([0.5, -1.0, 0.2]), np.array([0.3, 1.0, -0.7, 0.1])
    a = tl.sample_coarse_grad(v, w, prob["v_star"], prob["w_star"], "clipped_relu", samples=5000, batch_size=5000)
    b = tl.sample_coarse_grad(v, w, prob["v_star"], prob["w_star"], "clipped_relu", samples=5000, batch_size=5000)
    np.testing.assert_array_equal(a.grad_w, b.grad_w)
    # the same draws split into batches give the same mean (batches consume the generator in order)
    z = standard_normal_inputs(5000, 3, 4, seed=0)
    terms = tl.sample_terms(z, *(torch.from_numpy(x) for x in (v, w, prob["v_star"], prob["w_star"])),
                            "clipped_relu")
    np.testing.assert_allclose(terms.grad_w.mean(0).numpy(), a.grad_w, rtol=1e-12, atol=1e-15)


def test_empirical_loss_along_a_direction_matches_direct_evaluation():
    prob = tl.random_problem(3, 4, seed=4)
    v, w = np.array([0.5, -1.0, 0.2]), np.array([0.3, 1.0, -0.7, 0.1])
    d = np.array([0.2, -0.1, 0.4, 0.3])
    z = standard_normal_inputs(500, 3, 4, seed=1)
    etas = [0.0, 0.3, 1.7]
    along = empirical_loss_along(z, v, w, prob["v_star"], prob["w_star"], d, etas)
    for eta, got in zip(etas, along):
        t = tl.sample_terms(z, *(torch.from_numpy(x) for x in (v, w - eta * d, prob["v_star"], prob["w_star"])),
                            "relu")
        assert got == pytest.approx(float(t.loss.mean()), rel=1e-12)


def test_descent_rejects_bad_arguments():
    prob = tl.random_problem(2, 3)
    v0, w0 = np.zeros(2), np.ones(3)
    with pytest.raises(ValueError, match="eta"):
        tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], eta=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], batch_size=0)
    with pytest.raises(ValueError, match="valid choices"):
        tl.coarse_gradient_descent(v0, w0, prob["v_star"], prob["w_star"], ste="nope")
    with pytest.raises(ValueError, match="m and n must be >= 1"):
        tl.random_problem(0, 3)
