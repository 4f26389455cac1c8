"""Forward quantizers against independent numpy implementations, exact at every boundary, plus properties."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import stelab
from stelab import quantizers

ALPHAS = (0.6511, 0.1, 1.0 / 3.0, 2.5)


def np_staircase(x: np.ndarray, bits: int, a: float) -> np.ndarray:
    """alpha * clip(ceil(x / alpha), 0, L) in float64. Exact for float32 inputs: a grid alpha makes x = k*alpha an
    exact quotient, and any other float32 x is at least 2**-24 (relative) away from it, far above float64's ulp."""
    return a * np.clip(np.ceil(x.astype(np.float64) / a), 0, 2**bits - 1)


def np_round(x: np.ndarray, bits: int, a: float) -> np.ndarray:
    """alpha * clip(round-half-down(x / alpha), 0, L), i.e. ceil(x/alpha - 1/2); exact as above."""
    return a * np.clip(np.ceil(x.astype(np.float64) / a - 0.5), 0, 2**bits - 1)


def boundary_inputs(bits: int, a: float, dtype: np.dtype) -> np.ndarray:
    """0, every k*alpha and (k+1/2)*alpha, their float neighbours, far values, and random points."""
    k = np.arange(2**bits + 1, dtype=np.float64)
    exact = np.concatenate([k * a, (k + 0.5) * a, -k * a, [0.0, 1e30, -1e30, np.inf, -np.inf]]).astype(dtype)
    rng = np.random.default_rng(bits)
    noise = (rng.standard_normal(4000) * a * 2**bits / 2).astype(dtype)
    return np.concatenate([exact, np.nextafter(exact, dtype(np.inf)), np.nextafter(exact, dtype(-np.inf)), noise])


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("forward", ["staircase", "round"])
def test_forward_matches_numpy_float32(bits, forward):
    reference = np_staircase if forward == "staircase" else np_round
    for alpha in ALPHAS:
        a = quantizers.grid_alpha(alpha, bits)
        x = boundary_inputs(bits, a, np.float32)
        got = quantizers.get(forward)(torch.from_numpy(x), bits, alpha).numpy()
        np.testing.assert_array_equal(got.astype(np.float64), reference(x, bits, a))


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("forward", ["staircase", "round"])
def test_forward_matches_comparison_count_float64(bits, forward):
    # float64 inputs next to a boundary can round x/alpha onto it, so the reference counts thresholds instead.
    a = quantizers.grid_alpha(0.6511 / 2 ** (bits - 1), bits)
    k = np.arange(2**bits - 1, dtype=np.float64)
    thresholds = k * a if forward == "staircase" else (k + 0.5) * a
    x = boundary_inputs(min(bits, 10), a, np.float64)
    count = np.searchsorted(thresholds, x, side="left")  # number of thresholds strictly below x
    got = quantizers.get(forward)(torch.from_numpy(x), bits, a).numpy()
    np.testing.assert_array_equal(got, count * a)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("forward", ["staircase", "round"])
def test_half_precision_uses_rounded_table(dtype, forward):
    bits, a = 2, quantizers.grid_alpha(0.6511, 2)
    fq = quantizers.get(forward)
    thresholds = fq.thresholds(bits, a).to(dtype).float().numpy()
    levels = fq.levels(bits, a).to(dtype).float().numpy()
    x = torch.cat([torch.randn(2000) * 2, fq.thresholds(bits, a).float(), fq.levels(bits, a).float()]).to(dtype)
    got = fq(x, bits, a)
    assert got.dtype == dtype
    xf = x.float().numpy()  # every half value is exact in float32
    expected = levels[(xf[:, None] > thresholds[None, :]).sum(axis=1)]
    np.testing.assert_array_equal(got.float().numpy(), expected)
    np.testing.assert_array_equal(fq(got, bits, a).float().numpy(), got.float().numpy())  # idempotent


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_sign_forward(dtype):
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 0.5, 3.0], dtype=dtype)
    got = quantizers.get("sign")(x, 1, 0.75)
    expected = np.where(x.float().numpy() > 0, 0.75, -0.75)
    np.testing.assert_array_equal(got.float().numpy(), expected)
    assert got.dtype == dtype


@pytest.mark.parametrize("bits", range(1, 17))
def test_grid_alpha_makes_levels_and_midpoints_exact_float32(bits):
    for alpha in (*ALPHAS, stelab.lloyd_alpha(bits), 1e-5, 123.456):
        a = quantizers.grid_alpha(alpha, bits)
        assert abs(a - alpha) <= alpha * 2.0 ** (bits - 23)
        assert quantizers.grid_alpha(a, bits) == a  # idempotent
        half_steps = np.arange(2 ** (bits + 1), dtype=np.float64) * (a / 2)  # k*a and (k+1/2)*a
        np.testing.assert_array_equal(half_steps.astype(np.float32).astype(np.float64), half_steps)
        tensor_a = quantizers.grid_alpha(torch.tensor(alpha, dtype=torch.float32), bits)
        assert float(tensor_a) == quantizers.grid_alpha(float(np.float32(alpha)), bits)


def test_tables_and_top():
    fq = quantizers.get("staircase")
    a = quantizers.grid_alpha(0.5, 2)
    assert fq.levels(2, a).tolist() == [0.0, 0.5, 1.0, 1.5]
    assert fq.thresholds(2, a).tolist() == [0.0, 0.5, 1.0]
    assert quantizers.get("round").thresholds(2, a).tolist() == [0.25, 0.75, 1.25]
    assert fq.top(2, a) == 1.5 and quantizers.get("sign").top(1, 0.75) == 0.75
    assert quantizers.get("sign").levels(1, 0.75).tolist() == [-0.75, 0.75]
    assert fq.default_alpha(2) == stelab.lloyd_alpha(2) and quantizers.get("sign").default_alpha(1) == 1.0
    assert torch.equal(stelab.staircase(torch.tensor([0.3]), 2), torch.tensor([quantizers.grid_alpha(
        stelab.lloyd_alpha(2), 2)], dtype=torch.float32))


def test_nan_propagates_without_check():
    y = stelab.quantize(torch.tensor([float("nan"), 1.0]), bits=2, alpha=0.5, check_nan=False)
    assert torch.isnan(y[0]) and y[1] == 1.0


def test_unknown_forward_lists_choices():
    with pytest.raises(ValueError, match="valid choices: round, sign, staircase"):
        quantizers.get("ceil")
    with pytest.raises(ValueError, match="supports bits 1..1"):
        quantizers.get("sign").check_bits(2)
    with pytest.raises(ValueError, match=r"alpha must be in \[2\*\*-100, 2\*\*100\]"):
        stelab.quantize(torch.zeros(2), alpha=1e-40)


array_settings = settings(max_examples=60, deadline=None)
xs = st.lists(st.floats(-50, 50, width=32), min_size=1, max_size=64)


@array_settings
@given(xs, st.integers(1, 8), st.floats(1e-3, 10), st.sampled_from(["staircase", "round"]))
def test_output_lies_on_levels_and_is_idempotent(values, bits, alpha, forward):
    fq = quantizers.get(forward)
    x = torch.tensor(values, dtype=torch.float32)
    y = fq(x, bits, alpha)
    levels = fq.levels(bits, alpha).float()
    assert torch.isin(y, levels).all()
    assert torch.equal(fq(y, bits, alpha), y)


@array_settings
@given(xs, st.integers(1, 8), st.floats(1e-3, 10), st.sampled_from(["staircase", "round", "sign"]))
def test_forward_is_monotone(values, bits, alpha, forward):
    bits = 1 if forward == "sign" else bits
    x = torch.tensor(sorted(values), dtype=torch.float32)
    y = quantizers.get(forward)(x, bits, alpha)
    assert (y[1:] >= y[:-1]).all()
