"""The compiled backward of smooth STEs (:mod:`stelab.ste.compiled`): ``grad * mu'(x; top)`` compiled by Inductor
agrees with the eager product to a few ulps at every breakpoint and its neighbours, for built-in and user STEs; it is
used only where it pays (float32/bf16, large tensors), falls back to eager with one warning when compiling fails, and
``STELAB_COMPILE_STE=0`` turns it off. The rest of the suite runs with it off (tests/conftest.py): each compile costs
seconds."""

from __future__ import annotations

import warnings

import pytest
import torch

import stelab
from stelab import ste as ste_registry
from stelab.ste import compiled

pytestmark = pytest.mark.slow


@pytest.fixture
def on(monkeypatch):
    monkeypatch.setenv(compiled.ENV, "1")


def _points(top: float, breaks: tuple[float, ...], dtype: torch.dtype) -> torch.Tensor:
    """Every breakpoint and its float neighbours in ``dtype``, then a spread of values up to MIN_NUMEL elements."""
    xs = []
    for b in breaks:
        b_t = torch.tensor(b, dtype=dtype)
        xs += [torch.nextafter(b_t, torch.tensor(-1e9, dtype=dtype)), b_t,
               torch.nextafter(b_t, torch.tensor(1e9, dtype=dtype))] if dtype == torch.float32 else [b_t]
    spread = torch.linspace(-3 * top, 4 * top, compiled.MIN_NUMEL, dtype=dtype)
    return torch.cat([torch.stack(xs), spread])


def _op_grad(x: torch.Tensor, ste: str, alpha: float, seed: int = 0) -> torch.Tensor:
    x = x.detach().clone().requires_grad_(True)
    y = stelab.quantize(x, bits=2, ste=ste, alpha=alpha)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.dtype)
    y.backward(g)
    return x.grad, g


def _register_user_ste():
    def soft_window(x, top, width=0.3):
        return torch.sigmoid((x + width) / width) * torch.sigmoid((top - x) / width)

    ste_registry.register("soft_window_c", soft_window, monotone=False, zero_below=False, scale_invariant=False,
                          overwrite=True)


@pytest.mark.parametrize("ste, breaks", [("log_tailed_relu", (0.0, 1.5)), ("ede(t=2.0)", (0.0,)),
                                         ("dsq", (0.0, 0.5, 1.0, 1.5)), ("soft_window_c", (0.0, 1.5))])
def test_the_compiled_product_agrees_with_eager_at_every_breakpoint(on, ste, breaks):
    _register_user_ste()
    try:
        x = _points(1.5, breaks, torch.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a fallback warns: here it must not
            grad, g = _op_grad(x, ste, alpha=0.5)
        est = ste_registry.get(ste)
        assert compiled._ste_key(est) not in compiled._FAILED  # compiled, not fallen back
        eager = compiled.eager_product(est, g, x, 1.5)
        # Elementwise: a few ulps of the product, or of its largest value where mu' cancels (ede's 1 - tanh^2 in
        # the tails: an absolute error of order eps times its peak, in either path).
        eps, scale = torch.finfo(torch.float32).eps, eager.abs().max().item()
        torch.testing.assert_close(grad, eager, rtol=4 * eps, atol=8 * eps * scale)
        # and as accurate as eager against the formula in float64, at the same points
        ref = g.double() * est.derivative(x.double(), 1.5)
        err_compiled, err_eager = ((t.double() - ref).abs().max().item() for t in (grad, eager))
        assert err_compiled <= 2 * err_eager + eps * scale, (err_compiled, err_eager)
    finally:
        ste_registry.unregister("soft_window_c")


def test_bf16_and_channels_last_take_the_compiled_product_too(on):
    x = torch.randn(8, 32, 16, 16).to(memory_format=torch.channels_last)
    for dtype in (torch.bfloat16, torch.float32):
        xd = x.to(dtype)
        grad, g = _op_grad(xd, "ede", alpha=0.5, seed=1)
        eager = compiled.eager_product(ste_registry.get("ede"), g, xd, 1.5)
        eps = torch.finfo(dtype).eps
        torch.testing.assert_close(grad, eager, rtol=4 * eps, atol=4 * eps)


def test_float64_small_tensors_and_the_switch_stay_eager(on, monkeypatch):
    monkeypatch.setattr(compiled, "_compiled", lambda ste, x: pytest.fail("compiled where it should not be"))
    _op_grad(torch.randn(compiled.MIN_NUMEL, dtype=torch.float64), "ede", 0.5)
    _op_grad(torch.randn(compiled.MIN_NUMEL - 1), "ede", 0.5)
    monkeypatch.setenv(compiled.ENV, "0")
    _op_grad(torch.randn(compiled.MIN_NUMEL), "ede", 0.5)


def test_a_failing_compile_warns_once_and_gives_the_eager_numbers(on, monkeypatch):
    est = ste_registry.get("ede(t=3.0)")

    def broken(grad, x, top):
        raise RuntimeError("no C++ compiler found\nlong details")

    monkeypatch.setattr(compiled, "_compiled", lambda ste, x: broken)
    monkeypatch.setattr(compiled, "_FAILED", set())
    x = torch.randn(compiled.MIN_NUMEL)
    with pytest.warns(RuntimeWarning, match=r"'ede\(t=3.0\)'.*no C\+\+ compiler found\).*STELAB_COMPILE_STE=0"):
        grad, g = _op_grad(x, "ede(t=3.0)", 0.5)
    assert torch.equal(grad, compiled.eager_product(est, g, x, 1.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # once: the STE is marked, no second one
        _op_grad(x, "ede(t=3.0)", 0.5)


def test_each_ste_dtype_and_thread_count_compiles_its_own_code(on):
    """Dynamo keeps at most 8 variants per code object and then runs it eagerly without a word; the STEs, dtypes and
    thread counts of one process must not share one (the benchmark's grid alone is 8 variants of one STE)."""
    x = torch.randn(compiled.MIN_NUMEL)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for ste in ("ede", "log_tailed_relu"):
                for dtype in (torch.float32, torch.bfloat16):
                    _op_grad(x.to(dtype), ste, 0.5)
    finally:
        torch.set_num_threads(threads)
    keys = [k for k in compiled._COMPILED if k[0] in ("ede(t=1.0)", "log_tailed_relu")]
    assert len(keys) == 8
    codes = {id(compiled._COMPILED[k]._torchdynamo_orig_callable.__code__) for k in keys}  # distinct objects
    assert len(codes) == 8
