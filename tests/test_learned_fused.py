"""The fused learned-resolution op (C++ forward, one backward pass for dx and d alpha) against the unfused path it
replaces (``_QuantizeLearned``), at every rule, forward and kind of STE table, on inputs at every breakpoint and its
float neighbours: y and dx equal bit for bit, d alpha to the rounding of a sum taken in another order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stelab
from stelab import ste as ste_registry
from stelab.activations import ops
from stelab.kernels import cpu

pytestmark = pytest.mark.skipif(not cpu.available(), reason="no C++ compiler: the fused op does not exist here")

STES = ["identity", "relu", "clipped_relu", "leaky_relu(slope=0.1)", "hat", "hardtanh"]


def inputs(alpha, levels, breaks, top, dtype, n=4000):
    edges = [0.0, top, -top] + [k * alpha for k in range(levels + 2)] + [(k + 0.5) * alpha for k in range(levels + 1)]
    edges += [b * top for b in breaks]
    e = np.array(edges, dtype=np.float64).astype(dtype)
    rng = np.random.default_rng(0)
    x = np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf),
                        (rng.standard_normal(n) * top).astype(dtype)])
    return torch.from_numpy(x)


def run(fn, x, alpha, forward, bits, ste, rule, grad):
    x = x.clone().requires_grad_(True)
    a = alpha.clone().requires_grad_(True)
    y = fn.apply(x, a, forward, bits, ste, rule)
    y.backward(grad)
    return y.detach(), x.grad, a.grad


# sign takes the ae rule only (config.check_learned)
RULES = ("mean", "ae", "pact", "min", "lsq")
FORWARD_RULES = [(f, r) for f in ("staircase", "round") for r in RULES] + [("sign", "ae")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("forward, rule", FORWARD_RULES)
@pytest.mark.parametrize("spec", STES)
def test_fused_equals_unfused(spec, forward, rule, dtype):
    bits = 1 if forward == "sign" else 2
    ste = ste_registry.get(spec)
    alpha = torch.tensor(0.6 if forward == "sign" else 0.6511, dtype=torch.float32)
    levels = 2**bits - 1
    top = float(alpha) * (1 if forward == "sign" else levels)
    x = inputs(float(alpha), levels, ste.piecewise.breaks, top, np.float64 if dtype == torch.float64 else np.float32)
    grad = torch.linspace(-2, 3, x.numel(), dtype=dtype)
    fused = run(ops._QuantizeLearnedFused, x, alpha, forward, bits, ste, rule, grad)
    plain = run(ops._QuantizeLearned, x, alpha, forward, bits, ste, rule, grad)
    assert torch.equal(fused[0], plain[0]) and torch.equal(fused[1], plain[1])
    # d alpha: one sum over ~4,000 products, taken in double (fused) or in the dtype in another order (unfused)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fused[2], plain[2], rtol=tol, atol=tol * float(grad.abs().sum()))


def test_the_layer_takes_the_fused_path_on_the_cpu_and_matches_in_channels_last(monkeypatch):
    layer = stelab.QuantReLU(bits=2, ste="clipped_relu", learn_alpha=True, alpha_rule="lsq", check_nan=False)
    x = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = layer(x)
    assert type(y.grad_fn).__name__ == "_QuantizeLearnedFusedBackward"
    y.backward(torch.ones_like(y))
    fused = (x.grad.clone(), layer.alpha.grad.clone())
    x.grad, layer.alpha.grad = None, None
    monkeypatch.setattr(ops, "_learned_fused", lambda x, ste: False)
    layer(x).backward(torch.ones_like(y))
    assert torch.equal(fused[0], x.grad)
    torch.testing.assert_close(fused[1], layer.alpha.grad, rtol=1e-5, atol=1e-6)
    smooth = stelab.QuantReLU(bits=2, ste="log_tailed_relu", learn_alpha=True, check_nan=False)
    assert type(smooth(x).grad_fn).__name__ == "_QuantizeLearnedBackward"  # a smooth mu': the general path


def triton_learned_check() -> int:
    """Run in a fresh interpreter with TRITON_INTERPRET=1: the Triton learned backward (dx and the per-block d alpha
    summed on the device) against the unfused path, every rule and forward, STE tables up to the kernel's 4 breaks."""
    from stelab.kernels import triton_quant

    checked = from_state = 0
    for dtype in (torch.float64, torch.float32):
        for forward, rule in FORWARD_RULES:
            for spec in ("identity", "clipped_relu", "hat", "leaky_relu(slope=0.1)"):
                bits = 1 if forward == "sign" else 2
                ste = ste_registry.get(spec)
                alpha = torch.tensor(0.6 if forward == "sign" else 0.6511, dtype=torch.float32)
                levels = 2**bits - 1
                top = float(alpha) * (1 if forward == "sign" else levels)
                x = inputs(float(alpha), levels, ste.piecewise.breaks, top,
                           np.float64 if dtype == torch.float64 else np.float32, n=3000)
                grad = torch.linspace(-2, 3, x.numel(), dtype=dtype)
                _, dx_ref, da_ref = run(ops._QuantizeLearned, x, alpha, forward, bits, ste, rule, grad)
                dx = torch.empty_like(x)
                mode = stelab.kernels.MODES[forward]
                scale = ops.lsq_grad_scale(x, levels) if rule == "lsq" else 1.0
                total = triton_quant.learned_backward(x, grad, dx, alpha, levels, bits, mode,
                                                      list(ste.piecewise.breaks), list(ste.piecewise.values), rule,
                                                      scale)
                assert isinstance(total, torch.Tensor) and total.dtype == torch.float64  # a device value, no sync
                assert torch.equal(dx, dx_ref), (dtype, forward, rule, spec)
                tol = 1e-12 if dtype == torch.float64 else 1e-5
                torch.testing.assert_close(total.to(da_ref.dtype), da_ref.reshape(()), rtol=tol,
                                           atol=tol * float(grad.abs().sum()))
                checked += 1
                plan = ops.state_plan(ste.piecewise.breaks, ste.piecewise.values, rule, bits)
                if plan is None or len(plan[0]) > triton_quant.MAX_BREAKS:
                    continue
                # the three-valued rules from the forward's state: y, dx and d alpha as the unfused path
                y, state = triton_quant.forward(x, alpha, levels, mode, plan[0], -1)
                assert torch.equal(y, run(ops._QuantizeLearned, x, alpha, forward, bits, ste, rule, grad)[0])
                dx = torch.empty_like(x)
                total = triton_quant.learned_state_backward(grad, state, dx, plan[1], plan[2])
                assert total.dtype == torch.float64 and torch.equal(dx, dx_ref), (dtype, forward, rule, spec)
                torch.testing.assert_close(total.to(da_ref.dtype), da_ref.reshape(()), rtol=tol,
                                           atol=tol * float(grad.abs().sum()))
                from_state += 1
    return checked, from_state


def test_triton_learned_backward_under_the_interpreter():
    import ast
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    code = f"import runpy; print(runpy.run_path({__file__!r})['triton_learned_check']())"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    checked, from_state = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert checked == 2 * len(FORWARD_RULES) * 4
    assert from_state >= 2 * 2 * 3 * 3  # two dtypes, two forwards, three rules, three STEs with few breakpoints


@pytest.mark.parametrize("rule", RULES)
def test_the_three_valued_rules_keep_one_byte_per_element_and_the_others_keep_x(rule, monkeypatch):
    """mean, pact and min keep the forward's region code (uint8) instead of x, with the same y, dx and d alpha as
    the path that keeps x, at 2 and 4 bits."""
    for bits in (2, 4):
        ste = ste_registry.get("clipped_relu")
        alpha = torch.tensor(0.37, dtype=torch.float32)
        x = inputs(0.37, 2**bits - 1, ste.piecewise.breaks, 0.37 * (2**bits - 1), np.float32)
        grad = torch.linspace(-2, 3, x.numel())
        saved: list[torch.dtype] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, saved=saved: saved.append(t.dtype) or t, lambda t: t):
            by_state = run(ops._QuantizeLearnedFused, x, alpha, "staircase", bits, ste, rule, grad)
        assert saved == ([torch.uint8] if rule in ("mean", "pact", "min") else [torch.float32]) + [torch.float32]
        monkeypatch.setattr(cpu.BACKEND, "learned_state_backward", None)
        by_x = run(ops._QuantizeLearnedFused, x, alpha, "staircase", bits, ste, rule, grad)
        monkeypatch.undo()
        assert torch.equal(by_state[0], by_x[0]) and torch.equal(by_state[1], by_x[1])
        torch.testing.assert_close(by_state[2], by_x[2], rtol=1e-6, atol=1e-6 * float(grad.abs().sum()))


def test_the_state_plan_merges_0_and_top_into_the_breakpoints_of_mu():
    relu = ste_registry.get("relu").piecewise  # mu' = 1 above 0: one breakpoint, 0
    merged, values, factors = ops.state_plan(relu.breaks, relu.values, "mean", 2)
    assert merged == [0.0, 1.0] and values == [0.0, 1.0, 1.0] and factors == [0.0, 2.0, 3.0]
    assert ops.state_plan(relu.breaks, relu.values, "pact", 3)[2] == [0.0, 0.0, 7.0]
    assert ops.state_plan(relu.breaks, relu.values, "min", 3)[2] == [0.0, 1.0, 0.0]
    assert ops.state_plan(relu.breaks, relu.values, "ae", 2) is None
    assert ops.state_plan(relu.breaks, relu.values, "lsq", 2) is None
    many = tuple(float(b) for b in np.linspace(-1, 2, 8))  # 8 breakpoints and 0 and 1 too: more than the table holds
    assert ops.state_plan(many, tuple(range(9)), "mean", 2) is None
