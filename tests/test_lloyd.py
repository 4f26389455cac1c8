"""Lloyd's resolution: published constants, a fixed point, and the minimiser of an independently integrated MSE."""

import numpy as np
import pytest
from scipy import integrate, optimize
from scipy.stats import norm

import stelab
from stelab.activations.lloyd import lloyd_update

PUBLISHED = {1: 1.2221, 2: 0.6511, 4: 0.1946}  # HWGQ (Cai et al. 2017), used by Yin et al. 2019


@pytest.mark.parametrize("bits", sorted(PUBLISHED))
def test_reproduces_published_constants(bits):
    assert stelab.lloyd_alpha(bits) == pytest.approx(PUBLISHED[bits], abs=0.005)


@pytest.mark.parametrize("bits", [*range(1, 9), 16])
def test_is_a_fixed_point_of_the_lloyd_update(bits):
    alpha = stelab.lloyd_alpha(bits)
    assert 0 < alpha < 3
    assert lloyd_update(alpha, bits) == pytest.approx(alpha, rel=1e-10)


def test_decreases_with_bits():
    alphas = [stelab.lloyd_alpha(b) for b in range(1, 17)]
    assert all(a > b for a, b in zip(alphas, alphas[1:]))


def mse(alpha: float, bits: int) -> float:
    """E[(x - q(x))^2], x ~ |N(0,1)|, q round-to-nearest onto {0, alpha, .., L alpha}: adaptive quadrature per cell."""
    top = 2**bits - 1
    total = 0.0
    for k in range(top + 1):
        lo, hi = max(0.0, (k - 0.5) * alpha), (k + 0.5) * alpha if k < top else np.inf
        value, _ = integrate.quad(lambda x, k=k: (x - k * alpha) ** 2 * 2 * norm.pdf(x), lo, hi, epsabs=1e-14,
                                  epsrel=1e-12)
        total += value
    return total


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_minimises_the_integrated_mse(bits):
    alpha = stelab.lloyd_alpha(bits)
    best = optimize.minimize_scalar(mse, bracket=(alpha * 0.8, alpha, alpha * 1.2), args=(bits,),
                                    options={"xtol": 1e-10})
    # The MSE is flat at its minimum (error ~ sqrt(quadrature error)); 1e-5 is far below the 0.005 that matters.
    assert best.x == pytest.approx(alpha, abs=1e-5)
    for step in (1e-3, -1e-3):
        assert mse(alpha, bits) < mse(alpha * (1 + step), bits)


def test_rejects_bad_bits():
    with pytest.raises(ValueError, match="1..16"):
        stelab.lloyd_alpha(17)
