"""Every registered STE's backward against an independent numpy formula of mu', in several dtypes and compiled."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

import stelab
from stelab import ste as ste_registry
from stelab.activations import quantizers
from stelab.activations.ops import fused_plan


def _swish_sign(x, top, beta=5.0):
    # d/dx of 2*sigmoid(b u)(1 + b u (1 - sigmoid(b u))) - 1, u = x/top, by the product rule with s = sigmoid(b u),
    # s' = b s (1 - s): f'(u) = 2 b s (1 - s) (2 - b u (2 s - 1)), with 2s - 1 = tanh(b u / 2). expit(v)expit(-v)
    # is s(1 - s) without the cancellation of 1 - s in the tails.
    bu = beta * x / top
    return 2 * beta * expit(bu) * expit(-bu) * (2 - bu * np.tanh(bu / 2))


def _ede(x, top, t=1.0):
    return max(1 / t, 1.0) * t / np.cosh(t * x / top) ** 2  # 1 - tanh^2 = sech^2


def _reste(x, top, o=3.0, t=1.5, m=0.1):
    a = np.abs(x / top)
    with np.errstate(divide="ignore"):
        power = np.power(a, (1 - o) / o) / o
    return np.where(a <= m, m ** (1 / o) / m, np.where(a <= t, power, 0.0))


def _dsq(x, top, shape=0.2, levels=3):
    a = top / levels  # the step; the staircase jumps at j a (j = 0..L-1), cell j = (j a - a/2, j a + a/2]
    k, s = np.log(2 / shape - 1) / a, 1 / (1 - shape)
    jump = np.clip(np.ceil(x / a - 0.5), 0, levels - 1) * a
    inside = (x / top * levels > -0.5) & (x / top * levels <= levels - 0.5)
    return np.where(inside, a / 2 * s * k / np.cosh(k * (x - jump)) ** 2, 0.0)


def _gaussian_smoothed(x, top, width=0.25, levels=3):
    from scipy.stats import norm

    a = top / levels
    return sum(norm.pdf(x, loc=k * a, scale=width * a) * a for k in range(levels))


NUMPY_DERIVATIVES = {
    "identity": lambda x, top: np.ones_like(x),
    "relu": lambda x, top: (x > 0).astype(float),
    "clipped_relu": lambda x, top: ((x > 0) & (x <= top)).astype(float),
    "leaky_relu": lambda x, top, slope=0.1: np.where(x > 0, 1.0, slope),
    "log_tailed_relu": lambda x, top: np.where(x <= 0, 0.0, np.where(x <= top, 1.0, 1.0 / (x - top + 1.0))),
    "hardtanh": lambda x, top: ((x > -top) & (x <= top)).astype(float),
    "swish_sign": _swish_sign,
    "approx_sign": lambda x, top: np.maximum(0.0, 2.0 - 2.0 * np.abs(x / top)),
    "hat": lambda x, top: np.where((x > 0) & (x <= top), 1.0, np.where((x > top) & (x <= 2 * top), -1.0, 0.0)),
    "half_hat": lambda x, top: np.where((x > 0) & (x <= top / 2), 1.0, np.where((x > top / 2) & (x <= top), -1.0, 0.0)),
    "ede": _ede, "reste": _reste, "dsq": _dsq, "gaussian_smoothed": _gaussian_smoothed,
}
BUILTINS = sorted(NUMPY_DERIVATIVES)
DECLARED = {  # (monotone, zero_below, scale_invariant), from the math
    "identity": (True, False, True), "relu": (True, True, True), "clipped_relu": (True, True, False),
    "leaky_relu": (True, False, True), "log_tailed_relu": (True, True, False), "hardtanh": (True, False, False),
    "swish_sign": (False, False, False), "approx_sign": (True, False, False),
    "hat": (False, True, False), "half_hat": (False, True, False),
    "ede": (True, False, False), "reste": (True, False, False), "dsq": (True, False, False),
    "gaussian_smoothed": (True, False, False),
}
SIGN_STES = {"hardtanh", "swish_sign", "approx_sign", "ede", "reste"}
# Where a smooth mu' jumps or has a kink, in units of top (the edges below add 0, +-1/2, +-1, +-2 for every STE).
SMOOTH_KINKS = {"reste": [-1.5, -0.1, 0.1, 1.5], "dsq": [-1 / 6, 1 / 6, 1 / 2, 5 / 6], "log_tailed_relu": [],
                "approx_sign": []}
BITS, ALPHA = 2, quantizers.grid_alpha(0.6511, 2)
TOP = 3 * ALPHA


def _setup(name):
    """Inputs (every breakpoint, its float neighbours and random points), forward, bits, alpha and top for an STE."""
    forward, bits, alpha = ("sign", 1, 0.75) if name in SIGN_STES else ("staircase", BITS, ALPHA)
    top = quantizers.get(forward).top(bits, alpha)
    kinks = [0.0, 1.0, -1.0, 0.5, 2.0, -2.0] + SMOOTH_KINKS.get(name, [])
    edges = np.array([b * top for b in kinks], dtype=np.float32)
    rng = np.random.default_rng(0)
    x = np.concatenate([edges, np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(-np.inf)),
                        (rng.standard_normal(3000) * 2 * top).astype(np.float32)])
    return x, forward, bits, alpha, top


UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8}


def _tolerance(name, dtype):
    """(atol, rtol) for grad * mu' computed in ``dtype`` against float64 numpy."""
    u = UNIT_ROUNDOFF[dtype]
    shape = stelab.ste.get(name).piecewise
    if shape is not None:
        # A mask or region code is exact; grad * value is one rounding (two when the value is itself rounded).
        return 0.0, (0.0 if set(shape.values) <= {0.0, 1.0} else 2 * u)
    # mu' evaluated in the dtype: a few dozen roundings on values of order beta (swish_sign) at most.
    return 64 * u * 10, 64 * u


def test_every_builtin_has_a_reference():
    assert set(BUILTINS) <= set(ste_registry.names())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", BUILTINS)
def test_backward_matches_numpy_derivative(name, dtype):
    x_np, forward, bits, alpha, top = _setup(name)
    x = torch.from_numpy(x_np).to(dtype).requires_grad_(True)
    grad_out = torch.linspace(-2, 3, x.numel(), dtype=torch.float64).to(dtype)
    stelab.quantize(x, bits=bits, alpha=alpha, ste=name, forward=forward).backward(grad_out)
    xs = x.detach().double().numpy()  # the values the op actually saw
    expected = grad_out.double().numpy() * NUMPY_DERIVATIVES[name](xs, top)
    atol, rtol = _tolerance(name, dtype)
    assert x.grad.dtype == dtype
    if stelab.ste.get(name).piecewise is not None and rtol == 0:
        expected = torch.from_numpy(expected).to(dtype).double().numpy()  # grad * {0, 1}: exact in the dtype
    np.testing.assert_allclose(x.grad.double().numpy(), expected, atol=atol, rtol=rtol)


def test_ede_keeps_its_relative_precision_in_the_tails():
    # 1 - tanh^2 cancels to 0 in float32 for |t u| > 9; the derivative there is tiny but not 0 (t = 10: down to 1e-25)
    x = torch.linspace(-3, 3, 601)
    got = stelab.ste.get("ede(t=10)").derivative(x, 1.0).double().numpy()
    np.testing.assert_allclose(got, _ede(x.double().numpy(), 1.0, t=10.0), rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", BUILTINS)
def test_derivative_is_the_derivative_of_the_proxy(name):
    ste = ste_registry.get(name)
    x = torch.linspace(-3, 3, 1201, dtype=torch.float64)
    x = x[(x.abs() - 1.0).abs() > 1e-9]  # off the kinks at +-top (and 0 is not on this grid)
    for kink in SMOOTH_KINKS.get(name, []):
        x = x[(x - kink).abs() > 1e-9]
    x = x[x.abs() > 1e-9].requires_grad_(True)
    (auto,) = torch.autograd.grad(ste.proxy(x, 1.0).sum(), x)
    torch.testing.assert_close(auto, ste.derivative(x.detach(), 1.0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BUILTINS)
def test_declared_properties_are_measured(name):
    ste = ste_registry.get(name)
    assert (ste.monotone, ste.zero_below, ste.scale_invariant) == DECLARED[name]
    assert ste_registry.measure_properties(ste) == dict(zip(["monotone", "zero_below", "scale_invariant"],
                                                           DECLARED[name]))


def test_parameterised_flags_follow_the_parameter():
    assert not ste_registry.get("leaky_relu(slope=-0.1)").monotone
    assert ste_registry.get("leaky_relu", slope=0.0).zero_below
    assert ste_registry.get("leaky_relu(slope=0.05)").label == "leaky_relu(slope=0.05)"
    assert ste_registry.get("swish_sign(beta=2)").params == {"beta": 2.0}


# Piecewise STEs are defined by their table alone. Their kinks are written here independently of the table (in units
# of top), and mu' is checked against the numpy formulas above exactly, at every kink, its float neighbours on both
# sides and random points, for several tops, in float32 and float64.
KINKS = {"identity": [], "relu": [0], "clipped_relu": [0, 1], "leaky_relu": [0], "hardtanh": [-1, 1],
         "hat": [0, 1, 2], "half_hat": [0, 0.5, 1]}
PIECEWISE_SPECS = ["identity", "relu", "clipped_relu", "hardtanh", "hat", "half_hat", "leaky_relu",
                   "leaky_relu(slope=0.05)", "leaky_relu(slope=0.0)", "leaky_relu(slope=-0.3)"]


def _math_flags(spec):
    """(monotone, zero_below, scale_invariant) of each piecewise STE, from its formula."""
    ste = ste_registry.get(spec)
    if ste.name == "leaky_relu":
        slope = ste.params["slope"]
        return slope >= 0, slope == 0, True
    return DECLARED[ste.name]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", PIECEWISE_SPECS)
def test_piecewise_derivative_is_the_formula_at_every_breakpoint(spec, dtype):
    ste = ste_registry.get(spec)
    assert ste.piecewise is not None and ste.derivative_fn is None  # the table is the only definition
    assert set(ste.piecewise.breaks) <= set(map(float, KINKS[ste.name]))
    rng = np.random.default_rng(1)
    for top in (0.25, 1.0, 3 * 0.6508, 7.3):
        t = dtype(top)  # a top the dtype holds, so that b * t is exact for these b (0, +-1/2, +-1, 2)
        edges = np.array([dtype(b) * t for b in KINKS[ste.name]] + [0.0], dtype=dtype)
        x = np.concatenate([edges, np.nextafter(edges, dtype(np.inf)), np.nextafter(edges, dtype(-np.inf)),
                            (rng.standard_normal(2000) * 3 * t).astype(dtype), [dtype(1e30), dtype(-1e30)]])
        got = ste.derivative(torch.from_numpy(x), float(t))
        assert got.dtype == torch.from_numpy(x).dtype
        expected = NUMPY_DERIVATIVES[ste.name](x, t, **ste.params).astype(dtype)
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{spec}, top={top}")


@pytest.mark.parametrize("spec", PIECEWISE_SPECS)
def test_piecewise_flags_are_derived_from_the_table_and_equal_the_math(spec):
    ste = ste_registry.get(spec)
    flags = (ste.monotone, ste.zero_below, ste.scale_invariant)
    assert flags == _math_flags(spec)
    assert flags == tuple(ste.piecewise.flags().values())
    assert ste_registry.measure_properties(ste) == dict(zip(["monotone", "zero_below", "scale_invariant"], flags))


def test_piecewise_table_rules():
    P = ste_registry.Piecewise
    assert P((-1.0, 0.0), (0.0, 0.0, 1.0)).zero_below  # both regions reaching x <= 0 are 0
    assert not P((-1.0, 0.5), (0.0, 1.0, 0.0)).zero_below
    assert P((0.0,), (2.0, 3.0)).scale_invariant and not P((0.5,), (0.0, 1.0)).scale_invariant
    assert not P((0.0, 1.0), (0.0, -1.0, 0.0)).monotone
    for bad in (((1.0, 0.0), (0.0, 1.0, 0.0)), ((0.0,), (1.0,)), ((0.0,), (math.nan, 1.0))):
        with pytest.raises(ValueError):
            P(*bad)


def test_user_ste_by_table_runs_the_fused_op(registry):
    registry("step_down", piecewise=ste_registry.Piecewise((0.0, 0.5), (0.0, 2.0, 1.0)),
             proxy=lambda x, top: x)
    ste = ste_registry.get("step_down")
    assert (ste.monotone, ste.zero_below, ste.scale_invariant) == (True, True, False)
    assert fused_plan("staircase", 2, 0.5, ste) is not None
    x = torch.tensor([-1.0, 0.0, 0.5, 0.75, 0.76, 3.0], requires_grad=True)
    stelab.quantize(x, bits=2, alpha=0.5, ste="step_down").sum().backward()  # top 1.5: kink at 0.75
    assert x.grad.tolist() == [0.0, 0.0, 2.0, 2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="Piecewise table defines"):
        ste_registry.register("both", lambda x, top: x, piecewise=ste_registry.Piecewise((), (1.0,)))


# torch.compile: one small test per way the op saves state (mask, uint8 code, input). aot_eager traces the op
# through dynamo and AOTAutograd (what can fail for an autograd.Function) without inductor's C++ build time.
@pytest.mark.parametrize("name", ["clipped_relu", "leaky_relu", "approx_sign"])
def test_backward_under_torch_compile(name):
    x_np, forward, bits, alpha, top = _setup(name)
    x = torch.from_numpy(x_np).requires_grad_(True)
    weights = torch.linspace(-1, 1, x.numel())

    def loss(inp):
        return (stelab.quantize(inp, bits=bits, alpha=alpha, ste=name, forward=forward) * weights).sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    value = compiled(x)
    value.backward()
    expected = weights.double().numpy() * NUMPY_DERIVATIVES[name](x_np.astype(np.float64), top)
    np.testing.assert_allclose(x.grad.double().numpy(), expected, rtol=1e-6, atol=1e-6)
    assert float(value.detach()) == pytest.approx(float(loss(x.detach())), rel=1e-6)


def _coarse_grad(x, name):
    x = x.clone().requires_grad_(True)
    stelab.quantize(x, bits=2, alpha=0.5, ste=name).backward(torch.ones_like(x))
    return x.grad


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-10, 10).filter(lambda v: v == 0 or abs(v) > 1e-200), min_size=1, max_size=32),
       st.floats(1e-3, 1e3),
       st.sampled_from(["identity", "relu", "leaky_relu"]))
def test_scale_invariant_stes_ignore_input_scale(values, c, name):
    # (inputs within 1e-200 of 0 are left out: c * x would underflow to 0, a floating-point artefact)
    x = torch.tensor(values, dtype=torch.float64)
    assert torch.equal(_coarse_grad(c * x, name), _coarse_grad(x, name))


def test_clipped_relu_is_not_scale_invariant():
    x = torch.tensor([1.0], dtype=torch.float64)  # inside the clip level 1.5, outside after scaling by 2
    assert not torch.equal(_coarse_grad(2 * x, "clipped_relu"), _coarse_grad(x, "clipped_relu"))


@pytest.fixture
def registry():
    added = []

    def register(name, *args, **kwargs):
        ste_registry.register(name, *args, **kwargs)
        added.append(name)

    yield register
    for name in added:
        ste_registry.unregister(name)


def test_user_ste_by_derivative(registry):
    def triangle(x, top, width=1.0):
        """mu'(x) = max(0, 1 - |x / top - 1/2| / width)."""
        return torch.clamp(1 - (x / top - 0.5).abs() / width, min=0)

    registry("triangle", triangle)
    ste = ste_registry.get("triangle(width=0.5)")
    assert ste.monotone and ste.zero_below and not ste.scale_invariant
    assert "triangle" in ste_registry.names() and ste.params == {"width": 0.5}
    x = torch.linspace(-2, 3, 501, dtype=torch.float64, requires_grad=True)
    stelab.quantize(x, bits=2, alpha=0.5, ste="triangle(width=0.5)").sum().backward()
    xs = x.detach().numpy()
    np.testing.assert_allclose(x.grad.numpy(), np.maximum(0, 1 - np.abs(xs / 1.5 - 0.5) / 0.5), atol=1e-12)
    with pytest.raises(ValueError, match="already registered"):
        ste_registry.register("triangle", triangle)


def test_user_ste_by_proxy_uses_autograd(registry):
    def soft_clip(x, top, sharpness=4.0):
        return top * torch.tanh(sharpness * x / top) / sharpness

    registry("soft_clip", proxy=soft_clip)
    ste = ste_registry.get("soft_clip")
    assert ste.monotone and not ste.zero_below and not ste.scale_invariant
    x = torch.linspace(-3, 3, 301, dtype=torch.float64, requires_grad=True)
    stelab.quantize(x, bits=2, alpha=0.5, ste="soft_clip").sum().backward()
    expected = 1 - np.tanh(4 * x.detach().numpy() / 1.5) ** 2
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_user_ste_properties_are_measured_not_assumed(registry):
    registry("bump", lambda x, top: torch.cos(x))  # mu' = cos(x): negative on part of the grid, 1 at 0
    registry("ramp", lambda x, top: torch.relu(torch.sign(x)), scale_invariant=False)  # declared beats measured
    bump, ramp = ste_registry.get("bump"), ste_registry.get("ramp")
    assert (bump.monotone, bump.zero_below, bump.scale_invariant) == (False, False, False)
    assert (ramp.monotone, ramp.zero_below, ramp.scale_invariant) == (True, True, False)


def test_registry_errors(registry):
    with pytest.raises(ValueError, match="unknown STE 'nope'; valid choices: .*clipped_relu.*relu"):
        ste_registry.get("nope")
    with pytest.raises(ValueError, match="no parameter.*'beta'.*its parameters: slope"):
        ste_registry.get("leaky_relu(beta=1)")
    with pytest.raises(ValueError, match="must be a number"):
        ste_registry.get("leaky_relu(slope=abc)")
    with pytest.raises(ValueError, match="key=value"):
        ste_registry.get("leaky_relu(0.1)")
    with pytest.raises(ValueError, match="cannot parse"):
        ste_registry.get("leaky relu")
    with pytest.raises(TypeError, match="valid names"):
        ste_registry.get(3)
    with pytest.raises(ValueError, match="derivative"):
        ste_registry.register("empty")
    with pytest.raises(ValueError, match="identifier"):
        ste_registry.register("bad(name)", lambda x, top: x)
    with pytest.raises(ValueError, match="needs a default"):
        ste_registry.register("no_default", lambda x, top, p: x)
    with pytest.raises(ValueError, match="unknown STE"):
        ste_registry.unregister("never_registered")
    with pytest.raises(ValueError, match="slope must be finite"):
        ste_registry.get("leaky_relu", slope=math.inf).derivative(torch.zeros(1))


def test_gaussian_smoothed_is_the_diagnostics_reference_gradient():
    """One formula: the STE at width w equals the diagnostics' smoothed staircase derivative of a 2-bit layer."""
    from stelab.diagnostics.smoothing import module_tables, smoothed_quantizer_derivative

    layer = stelab.QuantReLU(bits=2, alpha=0.6511)
    thresholds, levels, top, alpha = module_tables(layer)
    x = torch.linspace(-1, 3, 2001, dtype=torch.float64)
    for width in (0.1, 0.25, 1.0):
        expected = smoothed_quantizer_derivative(x, thresholds, levels, width * alpha)
        got = ste_registry.get(f"gaussian_smoothed(width={width}, levels=3)").derivative(x, top)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec, message", [
    ("ede(t=0)", "ede t must be positive"), ("reste(o=0.5)", "o >= 1"), ("reste(m=2)", "0 < m < t"),
    ("dsq(shape=1.5)", "in \\(0, 1\\)"), ("dsq(levels=2.5)", "positive integer"),
    ("gaussian_smoothed(width=-1)", "width must be positive")])
def test_literature_ste_parameters_are_checked(spec, message):
    with pytest.raises(ValueError, match=message):
        ste_registry.get(spec).derivative(torch.ones(3), 1.0)


def test_dsq_integrates_to_the_step_height_over_each_cell():
    """mu' is the soft quantizer's derivative: its integral is top (L cells of a each), and the proxy ends at top."""
    ste = ste_registry.get("dsq(shape=0.3, levels=3)")
    x = torch.linspace(-1.5, 3.0, 900001, dtype=torch.float64)
    d = ste.derivative(x, 1.5)
    # The trapezoid rule's error: the two jumps at the ends of the support cost at most h * max mu' / 2 each; the
    # smooth part's O(h^2) error is far below that.
    bound = float((x[1] - x[0]) * d.max())
    assert abs(float(torch.trapezoid(d, x)) - 1.5) <= bound
    assert float(ste.proxy(torch.tensor([1.5], dtype=torch.float64), 1.5)) == pytest.approx(1.5, rel=1e-12)


def test_equal_parameters_of_another_type_do_not_share_a_cached_ste():
    """3 and 3.0 are equal and hash alike: the cache keys the types too, so a label never depends on what was asked
    first (``gaussian_smoothed(levels=3.0)`` once made ``get("gaussian_smoothed")`` say ``levels=3.0``)."""
    assert ste_registry.get("gaussian_smoothed(levels=3.0)").label == "gaussian_smoothed(levels=3.0, width=0.25)"
    assert ste_registry.get("gaussian_smoothed").label == "gaussian_smoothed(levels=3, width=0.25)"
