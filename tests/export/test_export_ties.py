"""The documented tie set of the QDQ staircase/round, checked against every float32 number near every threshold
(numpy), and onnxruntime against that emulation and against PyTorch, for bits 1-8 and both forwards."""

import numpy as np
import pytest
import torch

from stelab import QuantReLU
from stelab.export import ties

FORWARDS = [("staircase", b) for b in range(1, 9)] + [("round", b) for b in range(1, 9)]


def _floats_near(centres: np.ndarray, ulps: int) -> np.ndarray:
    """Every float32 within ``ulps`` steps of each centre (by walking the bit patterns; centres > 0), down to +0:
    below the smallest subnormal the patterns wrap to NaN, which is no input of interest."""
    c = np.asarray(centres, np.float32)
    bits = c.view(np.int32)[:, None] + np.arange(-ulps, ulps + 1, dtype=np.int32)[None, :]
    return bits[bits >= 0].view(np.float32)


def _dense_t(levels: int) -> np.ndarray:
    centres = np.arange(1, 2 * levels + 3, dtype=np.float32) / 2  # every integer and half-integer in (0, L + 1]
    tiny = np.float32(2.0) ** -np.arange(20, 150, dtype=np.float32)
    return np.concatenate([_floats_near(centres, 64), _floats_near(tiny[tiny > 0], 3), np.float32([0, -0.0, -1e-30]),
                           -_floats_near(centres[:2], 8)])


@pytest.mark.parametrize("forward, bits", FORWARDS)
def test_the_documented_set_is_exactly_where_the_float32_qdq_graph_differs(forward, bits):
    levels = 2**bits - 1
    t = _dense_t(levels)
    differs = ties.qdq_codes(t, forward, levels) != ties.exact_codes(t, forward, levels)
    np.testing.assert_array_equal(differs, ties.documented_ties(t, forward, levels))
    odd = np.arange(1, levels - 1, 2)
    expected = odd + (0.5 if forward == "round" else 0.0)
    assert set(np.unique(t[differs & (t >= 1)])) == set(expected.astype(np.float32))


def test_the_identity_in_exact_arithmetic():
    """ceil(t) = R(t + 1/2) except at odd integers, R = round half to even (float64, far from any rounding)."""
    t = np.concatenate([np.linspace(-3, 20, 100_003), np.arange(-3, 21, 0.5)])
    mask = np.rint(t + 0.5) != np.ceil(t)
    assert np.all((t[mask] % 2) == 1)
    assert set(t[mask]) == set(np.arange(-3, 21, 2.0))


def _placed_inputs(alpha: np.float32, levels: int, rng) -> np.ndarray:
    """Inputs on and next to every threshold k alpha and (k + 1/2) alpha, tiny ones, and random ones."""
    k = np.arange(0, levels + 2, dtype=np.float32)
    on = np.concatenate([k * alpha, (k + np.float32(0.5)) * alpha]).astype(np.float32)
    on = on[on > 0]
    tiny = np.float32(alpha) * np.float32([2.0**-30, 2.0**-26, 2.0**-25, 2.0**-24, 1e-40 / alpha])
    rand = rng.uniform(-1, levels + 1, 2000).astype(np.float32) * alpha
    return np.concatenate([_floats_near(on, 3), tiny.astype(np.float32), [0.0, -0.0], -on[:3], rand]).astype(np.float32)


@pytest.mark.parametrize("forward, bits", FORWARDS + [("sign", 1)])
def test_onnxruntime_qonnx_and_float_exports_of_one_activation(forward, bits, tmp_path):
    pytest.importorskip("onnxruntime")
    from stelab.export.graph import lower
    from stelab.export.onnx_export import build
    from stelab.export.verify import ort_runner, qonnx_runner

    rng = np.random.default_rng(bits)
    # alpha with 10 fractional bits: k alpha and (k + 1/2) alpha are exact in float32, so the quotients hit the ties
    # themselves (with a full 24-bit alpha the neighbours of fl(1.5 alpha) can all miss t = 1.5)
    alpha = np.float32(np.round(rng.uniform(0.05, 3.0) * 1024) / 1024)
    model = torch.nn.Sequential(QuantReLU(bits=bits, forward=forward, alpha=float(alpha))).eval()
    levels = 1 if forward == "sign" else 2**bits - 1
    x = _placed_inputs(alpha, levels, rng)[None, :]
    want = model[0].quantizer(torch.from_numpy(x), bits, float(alpha)).numpy()
    ops = lower(model)
    for fmt in ("float", "qdq", "qonnx"):
        result = build(model, torch.from_numpy(x), fmt)
        run = qonnx_runner(result, ops) if fmt == "qonnx" else ort_runner(result, ops)
        got = run(x).logits
        differs = got != want
        if fmt == "qdq" and forward != "sign":
            expected = ties.documented_ties(ties.quotient(x, alpha), forward, levels)
            np.testing.assert_array_equal(differs, expected, err_msg=f"{fmt} {forward} {bits}")
            assert differs.sum() > 0 or levels < 3  # the inputs really hit the ties
            # one step, never more: each side is fl(k alpha) with k <= L, so the difference is alpha within
            # 2 L 2^-24 alpha (two roundings of relative error 2^-24 each)
            bound = 2 * levels * 2.0**-24 * float(alpha)
            np.testing.assert_allclose(np.abs(got - want)[differs], alpha, rtol=0, atol=bound)
        else:
            assert not differs.any(), f"{fmt} {forward} {bits}: {int(differs.sum())} differ"
