"""The CPU kernel for learned-step weights (uniform and midrise codes, LSQ's step gradient, identity STE) against the
tensor-operation path it replaces: the output and the weights' gradient bit for bit, the step's gradient to
rounding, at every breakpoint and beside it, in both layouts; where it must not run, it does not."""

import numpy as np
import pytest
import torch

from stelab.errors import ResolutionError
from stelab.kernels import cpu
from stelab.weights import QuantConv2d, quantize_weight
from stelab.weights import ops as wops

pytestmark = pytest.mark.skipif(not cpu.available(), reason="the C++ CPU kernel cannot be built here")


def breakpoint_weights(quantizer: str, bits: int, step: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per output channel, w / s at every threshold of the codes (uniform: j + 1/2; midrise: even integers), at the
    clip +-q, one ulp-ish either side, and in between: shape (C, 4, 3, 3) after padding with random values."""
    q = 2 ** (bits - 1) - 1 if quantizer == "uniform" else 2**bits - 1
    base = np.arange(-q - 1, q + 1) + 0.5 if quantizer == "uniform" else np.arange(-q - 1, q + 2, 2.0)
    u = np.concatenate([base, base - 1e-6, base + 1e-6, [-q, q, -q - 3.0, q + 3.0, 0.0]])
    gen = torch.Generator().manual_seed(bits)
    out = torch.empty(step.numel() if step.dim() else 4, 36, dtype=dtype)
    for c in range(out.shape[0]):
        fill = torch.randn(36, generator=gen, dtype=torch.float64) * q
        fill[: min(36, len(u))] = torch.from_numpy(u[:36])
        s = float(step[c]) if step.dim() else float(step)
        out[c] = (fill * s).to(dtype)
    return out.reshape(-1, 4, 3, 3)


def both_paths(w, step, g, **fields):
    results = []
    for fused in (True, False):
        w1, s1 = w.clone().requires_grad_(), step.clone().requires_grad_()
        with pytest.MonkeyPatch.context() as mp:
            if not fused:
                mp.setattr(wops, "_runs_fused", lambda *a: False)
            y = quantize_weight(w1, step=s1, scale_rule="lsq", **fields)
        y.backward(g)
        results.append((y.detach(), w1.grad, s1.grad, type(y.grad_fn).__name__))
    return results


@pytest.mark.parametrize("quantizer, bits", [("uniform", 2), ("uniform", 4), ("midrise", 2), ("midrise", 3)])
@pytest.mark.parametrize("granularity", ["channel", "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_kernel_equals_the_tensor_operations(quantizer, bits, granularity, dtype, channels_last):
    step = (torch.tensor([0.03, 0.125, 0.5, 1.7, 0.0071, 0.25], dtype=dtype) if granularity == "channel"
            else torch.tensor(0.0625, dtype=dtype))
    w = breakpoint_weights(quantizer, bits, step, dtype)
    if channels_last:
        w = w.to(memory_format=torch.channels_last)
    g = torch.randn(w.shape, generator=torch.Generator().manual_seed(9), dtype=dtype)
    (y, gw, gs, name), (y0, gw0, gs0, name0) = both_paths(w, step, g, quantizer=quantizer, bits=bits,
                                                         granularity=granularity)
    assert (name, name0) == ("_FusedStepWeightBackward", "ScaledCodesBackward")
    assert torch.equal(y, y0) and y.stride() == y0.stride()
    assert torch.equal(gw, gw0)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(gs, gs0, rtol=tol, atol=tol * float(g.abs().sum()))


def test_the_kernel_step_gradient_against_numpy():
    """Independently of both paths: the midrise step's gradient, sum g * (k - u) inside, +-Q_P outside, times
    1/(4 sqrt(N 3/2)) (docs/weights.md), in float64."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(5, 2, 3, 3, generator=gen, dtype=torch.float64)
    step = torch.tensor([0.2, 0.4, 0.8, 1.0, 0.3], dtype=torch.float64, requires_grad=True)
    g = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    y = quantize_weight(w, quantizer="midrise", bits=2, scale_rule="lsq", step=step)
    assert type(y.grad_fn).__name__ == "_FusedStepWeightBackward"
    y.backward(g)
    u = w.numpy().reshape(5, -1) / step.detach().numpy()[:, None]
    k = np.clip(2 * np.ceil(u / 2) - 1, -3, 3)
    f = np.where(u <= -3, -3, np.where(u >= 3, 3, k - u))
    expected = (g.numpy().reshape(5, -1) * f).sum(1) / (4 * np.sqrt(18 * 1.5))
    np.testing.assert_allclose(step.grad.numpy(), expected, rtol=1e-12)
    np.testing.assert_array_equal(y.detach().numpy().reshape(5, -1), step.detach().numpy()[:, None] * k)


def test_where_the_kernel_does_not_run_the_tensor_operations_do():
    w = torch.randn(4, 3, 3, 3)
    step = torch.full((4,), 0.1, requires_grad=True)
    for fields in ({"ste": "hardtanh"}, {"quantizer": "ternary", "bits": 2}):
        y = quantize_weight(w, step=step, scale_rule="lsq", **fields)
        assert type(y.grad_fn).__name__ == "ScaledCodesBackward", fields
    half = quantize_weight(w.bfloat16(), step=step.detach().bfloat16().requires_grad_(), scale_rule="lsq", bits=2)
    assert type(half.grad_fn).__name__ == "ScaledCodesBackward"
    strided = quantize_weight(w[:, :, ::2], step=step, scale_rule="lsq", bits=2)
    assert type(strided.grad_fn).__name__ == "ScaledCodesBackward"


def test_a_layer_takes_the_kernel_in_both_layouts():
    layer = QuantConv2d(3, 4, 3, bits=2, scale_rule="lsq")
    assert type(layer.quantized_weight().grad_fn).__name__ == "_FusedStepWeightBackward"
    layer = layer.to(memory_format=torch.channels_last)
    assert type(layer.quantized_weight().grad_fn).__name__ == "_FusedStepWeightBackward"


def test_a_bad_step_and_nan_weights_through_the_kernel():
    layer = QuantConv2d(3, 4, 3, bits=2, scale_rule="lsq")
    with torch.no_grad():
        layer.weight_scale[2] = -0.5
    with pytest.raises(ResolutionError, match="became -0.5, non-positive"):
        layer(torch.randn(1, 3, 5, 5))
    w = torch.randn(4, 3, 3, 3)
    w[1, 0, 0, 0] = float("nan")
    y = quantize_weight(w, step=torch.full((4,), 0.2), scale_rule="lsq", bits=4)
    # a learned step does not come from the weights: the NaN weight alone turns NaN, as on the tensor path
    assert torch.isnan(y[1, 0, 0, 0]) and int(torch.isfinite(y).sum()) == y.numel() - 1
