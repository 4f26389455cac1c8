"""The fused operator ``stelab::quantize``: every backend (C++, Triton under its interpreter, the PyTorch reference)
against an independent numpy formula at every breakpoint and its nextafter neighbours, in every dtype and memory
format; the fallback when no compiler exists; torch.compile, autocast, and the eager/dispatcher paths agreeing."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import stelab
from stelab import kernels
from stelab.activations.ops import fused_plan
from stelab.kernels import cpu, reference

PIECEWISE = ("identity", "relu", "clipped_relu", "hardtanh", "leaky_relu(slope=0.05)")
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
HAS_CPP = cpu.available()


def np_dtype(dtype: torch.dtype) -> type:
    return np.float64 if dtype == torch.float64 else np.float32


def np_forward(x: np.ndarray, bits: int, alpha: float, forward: str) -> np.ndarray:
    """The documented forward in numpy, in the compute type of ``x`` (float64 or float32)."""
    a = x.dtype.type(alpha)
    if forward == "sign":
        return np.where(x > 0, a, np.where(np.isnan(x), x, -a))
    with np.errstate(over="ignore", invalid="ignore"):
        r = x / a - (x.dtype.type(0.5) if forward == "round" else 0)
        return a * np.clip(np.ceil(r), 0, 2**bits - 1)


def np_mu_prime(name: str, x: np.ndarray, top: float) -> np.ndarray:
    """mu'(x; top) of each piecewise STE, written out independently of stelab.ste."""
    one, zero = np.ones_like(x), np.zeros_like(x)
    table = {
        "identity": one,
        "relu": np.where(x > 0, one, zero),
        "clipped_relu": np.where((x > 0) & (x <= top), one, zero),
        "hardtanh": np.where((x > -top) & (x <= top), one, zero),
        "leaky_relu(slope=0.05)": np.where(x > 0, one, x.dtype.type(0.05) * one),
    }
    return table[name]


def edge_inputs(bits: int, alpha: float, c: type, forward: str) -> np.ndarray:
    """Every step k*a (or (k+1/2)*a), the clip levels +-L*a and 0, each with its nextafter neighbours, in the
    compute type ``c``; plus far values, infinities, NaN and random points."""
    a = c(alpha)
    k = np.arange(-1, 2**bits + 1).astype(c)
    steps = k * a + (c(0.5) * a if forward == "round" else c(0))
    top = c(2**bits - 1) * a
    edges = np.concatenate([steps, [0.0, top, -top, a, -a, 1e30, -1e30]]).astype(c)
    rng = np.random.default_rng(bits)
    return np.concatenate([edges, np.nextafter(edges, c(np.inf)), np.nextafter(edges, c(-np.inf)),
                           [np.inf, -np.inf, np.nan, -0.0], (rng.standard_normal(500) * float(top)).astype(c)])


def run_backend(name: str, x: torch.Tensor, plan, breaks) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, state)`` of the backend called ``name``, through the backend protocol alone."""
    b = next(b for b in kernels.BACKENDS if b.name == name)
    y, state, _ = b.forward(x, plan.alpha, plan.levels, plan.mode, breaks, plan.mask_bits)
    return y, state


# every backend that runs CPU tensors here (the Triton one only under its interpreter: test_triton_kernel_...)
BACKENDS = [b.name for b in kernels.BACKENDS if b.available() and (not b.devices or "cpu" in b.devices)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("forward,bits", [("staircase", 1), ("staircase", 2), ("staircase", 4), ("staircase", 8),
                                          ("staircase", 16), ("round", 2), ("round", 5), ("sign", 1)])
def test_forward_state_and_backward_against_numpy(backend, dtype, forward, bits):
    c = np_dtype(dtype)
    for alpha in (0.37, 0.6511 / 2 ** (bits - 1), 1.0 / 3.0):
        xc = edge_inputs(bits, alpha, c, forward)
        x = torch.from_numpy(xc).to(dtype)
        xc = x.to(torch.float64 if c is np.float64 else torch.float32).numpy()  # the values actually held
        expected_y = torch.from_numpy(np_forward(xc, bits, alpha, forward)).to(dtype)
        top = c(alpha) if forward == "sign" else c(2**bits - 1) * c(alpha)
        for name in PIECEWISE:
            ste = stelab.ste.get(name)
            plan = fused_plan(forward, bits, alpha, ste)
            y, state = run_backend(backend, x, plan, list(plan.breaks))
            assert y.dtype == dtype and torch.equal(y.isnan(), expected_y.isnan())
            assert torch.equal(y.nan_to_num(0.0), expected_y.nan_to_num(0.0)), (name, alpha)
            g = torch.randn(x.shape, dtype=torch.float64).to(dtype)
            if plan.breaks:
                assert state.dtype == torch.uint8 and state.shape == x.shape
                dx = reference.backward(g, state, list(plan.values))
                b = next(b for b in kernels.BACKENDS if b.name == backend)
                assert torch.equal(b.backward(g, state, list(plan.values)), dx)
            else:
                dx = g * plan.values[0]
            gc = g.to(torch.float64 if c is np.float64 else torch.float32).numpy()
            expected_dx = torch.from_numpy(gc * np_mu_prime(name, xc, top)).to(dtype)
            assert torch.equal(dx, expected_dx), (name, alpha)


@pytest.mark.skipif(not HAS_CPP, reason="no C++ compiler")
@pytest.mark.parametrize("dtype", DTYPES)
def test_memory_formats_are_kept_and_give_the_same_values(dtype):
    layer = stelab.QuantReLU(bits=2, ste="clipped_relu")
    x = (torch.randn(4, 6, 5, 7, dtype=torch.float64) * 2).to(dtype)
    layouts = {"contiguous": x.contiguous(), "channels_last": x.contiguous(memory_format=torch.channels_last),
               "permuted": x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)}
    results = {}
    for name, t in layouts.items():
        t = t.clone().requires_grad_(True)
        assert kernels.backend(t) == "cpp"
        y = layer(t)
        assert y.stride() == t.stride(), name  # same layout, no hidden copy
        y.backward(torch.ones_like(y))
        assert t.grad.stride() == t.stride()
        results[name] = (y.contiguous(), t.grad.contiguous())
    for y, g in results.values():
        assert torch.equal(y, results["contiguous"][0]) and torch.equal(g, results["contiguous"][1])


def test_non_dense_views_take_the_reference_path_with_the_same_values():
    x = torch.randn(8, 10, dtype=torch.float32) * 2
    view = x[:, ::2]
    assert kernels.backend(view) == "reference"
    y = stelab.quantize(view, bits=2, alpha=0.37)
    assert torch.equal(y, stelab.quantize(view.contiguous(), bits=2, alpha=0.37))


def _grads(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(y.dtype))
    return y.detach(), x.grad


@pytest.mark.parametrize("ste", PIECEWISE)
def test_eager_path_and_dispatcher_op_agree(ste):
    plan = fused_plan("staircase", 3, 0.41, stelab.ste.get(ste))
    args = (0.41, plan.levels, plan.mode, list(plan.breaks), plan.mask_bits, list(plan.values), False)
    x = torch.randn(64, 9) * 2
    eager = _grads(lambda t: kernels.quantize(t, *args), x)
    op = _grads(lambda t: torch.ops.stelab.quantize(t, *args)[0], x)
    assert torch.equal(eager[0], op[0]) and torch.equal(eager[1], op[1])


def test_opcheck():
    plan = fused_plan("staircase", 2, 0.6511, stelab.ste.get("clipped_relu"))
    x = (torch.randn(3, 5) * 2).requires_grad_(True)
    args = (x, 0.6511, plan.levels, plan.mode, list(plan.breaks), plan.mask_bits, list(plan.values), False)
    torch.library.opcheck(torch.ops.stelab.quantize.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


def test_torch_compile_fullgraph_matches_eager():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), stelab.QuantReLU(bits=2, ste="clipped_relu"),
                                torch.nn.Conv2d(4, 2, 1), stelab.QuantReLU(bits=2, ste="identity"))
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    y_eager, y_comp = model(x), compiled(x)
    assert torch.equal(y_eager, y_comp)
    g_eager = torch.autograd.grad(y_eager.sum(), model[0].weight)[0]
    g_comp = torch.autograd.grad(y_comp.sum(), model[0].weight)[0]
    assert torch.allclose(g_eager, g_comp, rtol=0, atol=1e-6)


def test_autocast_bfloat16_keeps_the_dtype_and_trains():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), stelab.QuantReLU(bits=2), torch.nn.Flatten(),
                                torch.nn.LazyLinear(3))
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model[1](model[0](x))
        assert hidden.dtype == torch.bfloat16
        loss = model(x).float().square().mean()
    loss.backward()
    assert model[0].weight.grad is not None and torch.isfinite(model[0].weight.grad).all()


def test_nan_check_is_done_in_the_kernel_pass():
    x = torch.tensor([0.5, float("nan"), 1.0])
    with pytest.raises(ValueError, match="contains NaN"):
        stelab.quantize(x, bits=2)
    y = stelab.quantize(x, bits=2, check_nan=False)
    assert y.isnan()[1] and not y.isnan()[0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=300),
       st.integers(1, 12), st.floats(1e-3, 100), st.sampled_from(["staircase", "round"]),
       st.sampled_from(PIECEWISE))
def test_cpp_matches_reference_bit_for_bit(values, bits, alpha, forward, ste):
    if not HAS_CPP:
        pytest.skip("no C++ compiler")
    x = torch.tensor(values, dtype=torch.float32)
    plan = fused_plan(forward, bits, alpha, stelab.ste.get(ste))
    y_ref, s_ref = run_backend("reference", x, plan, list(plan.breaks))
    y_cpp, s_cpp = run_backend("cpp", x, plan, list(plan.breaks))
    assert torch.equal(y_ref.isnan(), y_cpp.isnan())
    assert torch.equal(y_ref.nan_to_num(0.0), y_cpp.nan_to_num(0.0)) and torch.equal(s_ref, s_cpp)


def test_without_a_compiler_the_reference_path_is_used_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("STELAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    cpu.library.cache_clear()
    try:
        x = torch.randn(50) * 2
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = stelab.quantize(x, bits=2, alpha=0.37)
            stelab.quantize(x, bits=2, alpha=0.37)
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "pure-PyTorch path" in messages[0] and "g++" in messages[0]
        assert kernels.backend(x) == "reference"
        assert torch.equal(y, torch.from_numpy(np_forward(x.numpy(), 2, 0.37, "staircase")))
    finally:
        cpu.library.cache_clear()


def test_no_cpp_environment_variable_turns_the_kernel_off():
    code = ("import torch, stelab; from stelab import kernels; x = torch.randn(10);"
            "print(kernels.backend(x), stelab.quantize(x, bits=2).shape)")
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True, text=True,
                         env={**os.environ, "STELAB_NO_CPP": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "reference"


def triton_check() -> int:
    """Run in a fresh interpreter with TRITON_INTERPRET=1 (triton decides at import whether it interprets)."""
    from stelab.kernels import triton_quant

    assert "cpu" in triton_quant.BACKEND.devices  # the interpreter runs CPU tensors
    checked = 0
    for dtype in DTYPES:
        c = np_dtype(dtype)
        for forward, bits in (("staircase", 2), ("staircase", 4), ("round", 3), ("sign", 1)):
            alpha = 0.6511 / 2 ** (bits - 1)
            x = torch.from_numpy(edge_inputs(bits, alpha, c, forward)).to(dtype)
            xc = x.to(torch.float64 if c is np.float64 else torch.float32).numpy()
            expected = torch.from_numpy(np_forward(xc, bits, alpha, forward)).to(dtype)
            for name in PIECEWISE:
                plan = fused_plan(forward, bits, alpha, stelab.ste.get(name))
                args = (plan.alpha, plan.levels, plan.mode, list(plan.breaks), plan.mask_bits)
                y, state, _ = triton_quant.BACKEND.forward(x, *args)  # through the backend protocol
                assert torch.equal(y.nan_to_num(0.0), expected.nan_to_num(0.0)), (dtype, forward, name)
                assert torch.equal(y.isnan(), expected.isnan())
                _, s_ref = reference.forward(x, *args)
                assert torch.equal(state, s_ref), (dtype, forward, name)
                if plan.breaks:
                    g = torch.randn(x.shape, dtype=torch.float64).to(dtype)
                    assert torch.equal(triton_quant.BACKEND.backward(g, state, list(plan.values)),
                                       reference.backward(g, s_ref, list(plan.values)))
                checked += 1
    return checked


def test_triton_kernel_under_the_interpreter():
    pytest.importorskip("triton")
    code = f"import runpy; print(runpy.run_path({__file__!r})['triton_check']())"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) == len(DTYPES) * 4 * len(PIECEWISE)


@pytest.mark.parametrize("ste", ["identity", "clipped_relu"])
def test_dx_comes_back_in_the_input_layout_when_the_gradient_arrives_in_another(ste):
    # oneDNN's convolution backward hands NCHW gradients to a channels_last model; a batch norm before the
    # activation runs its backward much slower on mixed layouts, so dx must follow x, as relu's does.
    x = (torch.randn(4, 6, 5, 7) * 2).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = stelab.QuantReLU(bits=2, ste=ste)(x)
    g = torch.randn(y.shape)  # contiguous, not channels_last
    y.backward(g)
    assert x.grad.stride() == x.stride()
    mu = stelab.ste.get(ste).derivative(x.detach(), 3 * np.float32(stelab.lloyd_alpha(2)))
    assert torch.equal(x.grad, g * mu)


@pytest.mark.parametrize("ste", PIECEWISE)
def test_empty_inputs_pass_through_both_paths(ste):
    plan = fused_plan("staircase", 2, 0.5, stelab.ste.get(ste))
    args = (0.5, plan.levels, plan.mode, list(plan.breaks), plan.mask_bits, list(plan.values), True)
    for fn in (lambda t: kernels.quantize(t, *args), lambda t: torch.ops.stelab.quantize(t, *args)[0]):
        x = torch.zeros(0, 5, requires_grad=True)
        fn(x).sum().backward()
        assert x.grad.shape == (0, 5)


def test_every_backend_follows_the_protocol():
    """Each backend has the protocol's attributes, and selection never falls off the end (the reference takes all)."""
    from stelab.kernels.backend import Backend

    for b in kernels.BACKENDS:
        for name in ("name", "devices", "max_breaks", "finds_nan", "needs_state_layout", "learned_backward"):
            assert hasattr(b, name), (b, name)
        assert callable(b.available) and callable(b.accepts) and callable(b.forward) and callable(b.backward)
    assert kernels.BACKENDS[-1] is reference.BACKEND and not reference.BACKEND.devices
    assert kernels.select("meta", torch.int32, False, 100) is reference.BACKEND
    assert Backend.__doc__


def test_a_new_backend_is_one_object_in_the_list(monkeypatch):
    """A backend added to BACKENDS runs the op (forward and backward) with nothing else changed."""
    calls = []

    class Recording:
        name, devices, max_breaks, finds_nan = "rec", ("cpu",), 8, False
        needs_state_layout, learned_backward = True, None

        def available(self):
            return True

        def accepts(self, dtype, dense):
            return dense and dtype == torch.float64

        def forward(self, x, alpha, levels, mode, breaks, mask_bits):
            calls.append("forward")
            return (*reference.forward(x, alpha, levels, mode, breaks, mask_bits), None)

        def backward(self, grad, state, values):
            calls.append("backward")
            return reference.backward(grad, state, values)

    x = torch.randn(100, dtype=torch.float64, requires_grad=True)
    expected = stelab.quantize(x, bits=2, ste="clipped_relu")
    expected.sum().backward()
    expected_grad, x.grad = x.grad, None
    monkeypatch.setattr(kernels, "BACKENDS", [Recording(), *kernels.BACKENDS])
    y = stelab.quantize(x, bits=2, ste="clipped_relu")
    y.sum().backward()
    assert calls == ["forward", "backward"] and kernels.backend(x.detach()) == "rec"
    assert torch.equal(y, expected) and torch.equal(x.grad, expected_grad)
