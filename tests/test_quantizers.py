"""Forward quantizers against independent numpy implementations, exact at every boundary, plus properties."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import stelab
from stelab.activations import quantizers

ALPHAS = (0.6511, 0.1, 1.0 / 3.0, 2.5)


def np_formula(x: np.ndarray, bits: int, alpha: float, forward: str) -> np.ndarray:
    """The documented formula evaluated by numpy in x's own dtype: a = alpha rounded to it, every operation rounded
    to it. staircase: a * clip(ceil(x / a), 0, L); round (ties down): a * clip(ceil(x / a - 1/2), 0, L)."""
    a = x.dtype.type(alpha)
    with np.errstate(over="ignore"):
        r = x / a
    if forward == "round":
        r = r - x.dtype.type(0.5)
    return a * np.clip(np.ceil(r), 0, 2**bits - 1)


def boundary_inputs(bits: int, alpha: float, dtype: type) -> np.ndarray:
    """0, every k*a and (k+1/2)*a computed in dtype (what a user re-quantizing levels passes), their nextafter
    neighbours on both sides, far values, and random points."""
    a = dtype(alpha)
    k = np.arange(-2, 2**bits + 2).astype(dtype)
    steps = np.concatenate([k * a, (k + dtype(0.5)) * a, np.array([0.0, 1e30, -1e30, np.inf, -np.inf], dtype)])
    rng = np.random.default_rng(bits)
    noise = (rng.standard_normal(2000) * float(a) * 2**bits / 2).astype(dtype)
    return np.concatenate([steps, np.nextafter(steps, dtype(np.inf)), np.nextafter(steps, dtype(-np.inf)), noise])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("forward", ["staircase", "round"])
def test_forward_is_the_formula_bit_for_bit(dtype, bits, forward):
    for alpha in (*ALPHAS, 0.37, stelab.lloyd_alpha(min(bits, 8))):
        x = boundary_inputs(bits, alpha, dtype)
        got = quantizers.get(forward)(torch.from_numpy(x), bits, alpha).numpy()
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, np_formula(x, bits, alpha, forward))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("forward", ["staircase", "round"])
def test_half_precision_is_the_float32_formula_rounded_once(dtype, forward):
    fq = quantizers.get(forward)
    for bits, alpha in ((2, 0.6511), (4, 0.1946), (3, 0.37)):
        x32 = boundary_inputs(bits, alpha, np.float32)
        x = torch.from_numpy(x32).to(dtype)
        got = fq(x, bits, alpha)
        assert got.dtype == dtype
        expected = torch.from_numpy(np_formula(x.float().numpy(), bits, alpha, forward)).to(dtype)
        assert torch.equal(got, expected) or bool(((got == expected) | (got.isnan() & expected.isnan())).all())


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


def test_alpha_is_used_as_given_not_snapped():
    # The user's alpha, not a nearby grid value: the level is exactly alpha rounded to float32.
    y = stelab.staircase(torch.tensor([0.3]), 2, 0.37)
    assert y.item() == np.float32(0.37) and 0.37 != quantizers.grid_alpha(0.37, 2)
    assert quantizers.get("staircase").resolution(2, 0.37) == 0.37


def test_tables_and_top():
    fq = quantizers.get("staircase")
    a = quantizers.grid_alpha(0.5, 2)
    assert fq.levels(2, a).tolist() == [0.0, 0.5, 1.0, 1.5]
    assert fq.thresholds(2, a).tolist() == [0.0, 0.5, 1.0]
    assert quantizers.get("round").thresholds(2, a).tolist() == [0.25, 0.75, 1.25]
    assert fq.top(2, a) == 1.5 and quantizers.get("sign").top(1, 0.75) == 0.75
    assert quantizers.get("sign").levels(1, 0.75).tolist() == [-0.75, 0.75]
    assert fq.default_alpha(2) == stelab.lloyd_alpha(2) and quantizers.get("sign").default_alpha(1) == 1.0
    assert torch.equal(stelab.staircase(torch.tensor([0.3]), 2), torch.tensor([stelab.lloyd_alpha(2)],
                                                                               dtype=torch.float32))


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
def test_output_lies_on_levels_and_grid_alpha_makes_it_idempotent(values, bits, alpha, forward):
    # Levels are k * alpha rounded to float32. Re-quantizing them gives them back for a grid alpha, where k*alpha is
    # exact; for any alpha fl(fl(k a) / a) can exceed k by an ulp and ceil then moves up a level, as the formula says.
    fq = quantizers.get(forward)
    x = torch.tensor(values, dtype=torch.float32)
    y = fq(x, bits, alpha)
    levels = (torch.arange(2**bits, dtype=torch.float32) * np.float32(alpha))
    assert torch.isin(y, levels).all()
    a = quantizers.grid_alpha(alpha, bits)
    y = fq(x, bits, a)
    assert torch.equal(fq(y, bits, a), y)


@array_settings
@given(xs, st.integers(1, 8), st.floats(1e-3, 10), st.sampled_from(["staircase", "round", "sign"]))
def test_forward_is_monotone(values, bits, alpha, forward):
    bits = 1 if forward == "sign" else bits
    x = torch.tensor(sorted(values), dtype=torch.float32)
    y = quantizers.get(forward)(x, bits, alpha)
    assert (y[1:] >= y[:-1]).all()


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_the_staircase_is_round_shifted_by_half_a_step(bits):
    """staircase(x) = round(x + alpha/2) except at the thresholds k alpha (docs/quantizers.md): a BatchNorm bias can
    turn one into the other. Checked on a dense grid, at every threshold and beside it."""
    alpha = 0.75  # exact in binary: x + alpha/2 and k alpha are exact
    L = 2**bits - 1
    ties = torch.arange(0, L, dtype=torch.float64) * alpha
    x = torch.cat([torch.linspace(-2, (L + 2) * alpha, 4001, dtype=torch.float64), ties - 1e-9, ties + 1e-9])
    stair = quantizers.get("staircase")(x, bits, alpha)
    rnd = quantizers.get("round")(x + alpha / 2, bits, alpha)
    off_ties = ~torch.isin(x, ties)
    assert torch.equal(stair[off_ties], rnd[off_ties])
