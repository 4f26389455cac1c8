"""Quantized weights in every export: integer codes in the narrowest type, scales per tensor or per channel, and the
same network in onnxruntime, the qonnx executor and the integer reference as in PyTorch."""

import numpy as np
import pytest
import torch
from torch import nn

from stelab import QuantConv2d, QuantLinear, QuantReLU

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import numpy_helper  # noqa: E402

from stelab.export import ExportError, IntegerModel, build  # noqa: E402
from stelab.export.verify import verify  # noqa: E402

CASES = [("binary", 1, "int2"), ("ternary", 2, "int2"), ("uniform", 2, "int2"), ("uniform", 3, "int4"),
         ("uniform", 4, "int4"), ("uniform", 8, "int8"), ("midrise", 2, "int4"), ("midrise", 3, "int4")]


def integer_net(quantizer: str, bits: int, granularity: str, rule: str | None = None, act_bits: int = 2,
                forward: str = "staircase") -> nn.Module:
    """Codes in, so every weighted layer has codes for inputs: an all-integer network but the final rescale."""
    torch.manual_seed(bits)
    w = {"quantizer": quantizer, "bits": bits, "granularity": granularity, "scale_rule": rule}
    net = nn.Sequential(QuantReLU(bits=act_bits, forward=forward), QuantConv2d(3, 8, 3, padding=1, bias=False, **w),
                        nn.BatchNorm2d(8), QuantReLU(bits=act_bits, forward=forward), nn.MaxPool2d(2),
                        QuantConv2d(8, 6, 3, stride=2, padding=1, **w), nn.BatchNorm2d(6, affine=False),
                        QuantReLU(bits=act_bits, forward=forward), nn.Flatten(), QuantLinear(24, 5, **w))
    with torch.no_grad():
        net[2].weight.uniform_(-1.5, 1.5)  # some negative BN scales: thresholds flip their comparison
        net.train()
        for _ in range(3):
            net(torch.randn(64, 3, 8, 8) * 2 + 0.5)
    return net.eval()


@pytest.mark.parametrize("quantizer, bits, int_type", CASES)
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_qdq_stores_the_codes_and_scales_exactly(quantizer, bits, int_type, granularity):
    net = integer_net(quantizer, bits, granularity)
    result = build(net, torch.zeros(2, 3, 8, 8), "qdq")
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    for name in ("1", "5", "9"):
        m = net.get_submodule(name)
        assert result.types[name] == int_type
        codes, scale = inits[f"{name}.codes"].astype(np.float32), inits[f"{name}.scale"]
        assert scale.shape == ((m.weight.shape[0],) if granularity == "channel" else ())
        view = scale.reshape(-1, *([1] * (codes.ndim - 1))) if scale.ndim else scale
        np.testing.assert_array_equal(view * codes, m.quantized_weight().detach().numpy())


@pytest.mark.parametrize("quantizer, bits, rule, granularity", [("binary", 1, None, "channel"),
                                                                ("ternary", 2, None, "tensor"),
                                                                ("uniform", 2, "lsq", "channel"),
                                                                ("uniform", 4, "max", "tensor"),
                                                                ("uniform", 8, "lsq", "tensor"),
                                                                ("midrise", 2, "lsq", "channel"),
                                                                ("midrise", 3, "max", "tensor")])
@pytest.mark.parametrize("forward", ["staircase", "round"])
def test_every_runner_matches_pytorch(quantizer, bits, rule, granularity, forward):
    pytest.importorskip("qonnx")
    net = integer_net(quantizer, bits, granularity, rule, act_bits=3, forward=forward)
    x = torch.randn(16, 3, 8, 8) * 2
    report = verify(net, x)
    for runner, r in report.items():
        assert r["predictions_equal"] == 16, runner
        assert r["samples_all_codes_equal"] >= 15, (runner, r)
        assert r["codes_differing_first"] == r["codes_differing_on_documented_ties"] or \
            r["codes_differing_max_distance_to_threshold_alpha"] < 1e-5, (runner, r)
        assert r["logits_within_bound"], (runner, r)
    arith = report["integer"]["arithmetic"]
    assert arith["1"] == arith["5"] == arith["9"] == "int32 accumulate"
    assert arith["2"] == arith["6"] == "folded into the thresholds"
    assert arith["3"] == arith["7"] == "int32 thresholds"
    assert arith["logits"] == "one float rescale m * acc + o"


def test_the_integer_sums_are_exact_integers():
    net = integer_net("uniform", 4, "channel")
    x = (torch.randn(4, 3, 8, 8) * 2).numpy()
    ref = IntegerModel.from_model(net)
    a, b = ref.run(x), ref.run(x, exact_int=True)
    np.testing.assert_array_equal(a.logits, b.logits)
    for k in a.codes:
        np.testing.assert_array_equal(a.codes[k], b.codes[k])


def test_sizes_shrink_with_the_bits():
    sizes = {bits: build(integer_net("uniform", bits, "channel"), torch.zeros(2, 3, 8, 8), "qdq").bytes
             for bits in (2, 4, 8)}
    floats = build(integer_net("uniform", 2, "channel"), torch.zeros(2, 3, 8, 8), "float").bytes
    assert sizes[2] < sizes[4] < sizes[8] < floats


def test_an_opset_too_old_for_the_requested_type_says_which_is_needed():
    net = integer_net("uniform", 2, "channel")
    with pytest.raises(ExportError, match="opset 25 or later"):
        build(net, torch.zeros(2, 3, 8, 8), "qdq", opset=21, int_bits=2)
    with pytest.raises(ExportError, match="opset 21 or later"):
        build(net, torch.zeros(2, 3, 8, 8), "qdq", opset=13, int_bits=4)
    assert set(build(net, torch.zeros(2, 3, 8, 8), "qdq", opset=21).types.values()) == {"int4", "uint8"}
    assert set(build(net, torch.zeros(2, 3, 8, 8), "qdq", opset=13).types.values()) == {"int8", "uint8"}
    with pytest.raises(ExportError, match="opset must be an int >= 13"):
        build(net, torch.zeros(2, 3, 8, 8), "qdq", opset=12)
