"""BinaryRelax's lambda lives in two non-persistent 0-d buffers of the layer (so torch.compile guards on a flag, not
on lambda's value): the relaxed weights equal the formula with lambda as a Python number, bit for bit, and the state
dict keys stay the float layer's."""

from __future__ import annotations

import pytest
import torch

from stelab.weights import QuantConv2d, relaxed_weight


def test_relaxed_forward_from_buffers_equals_the_scalar_formula():
    torch.manual_seed(0)
    layer = QuantConv2d(3, 4, 3, bits=2)
    assert layer.relax is None and torch.equal(layer.quantized_weight(), layer.project())
    for lam in (0.0, 1.0, 1.01**37, 1e4 / 3):
        layer.relax = lam
        assert layer.relax == lam
        expected = relaxed_weight(layer.weight, layer.project(), lam)  # lambda as a Python float
        assert torch.equal(layer.quantized_weight(), expected)
    assert set(layer.state_dict()) == {"weight", "bias"}
    layer.relax = None
    assert torch.equal(layer.quantized_weight(), layer.project())
    with pytest.raises(ValueError, match="lambda must be >= 0"):
        layer.relax = -1.0
    with pytest.raises(ValueError, match="needs its denominator"):
        relaxed_weight(layer.weight, layer.project(), torch.tensor(1.0))
    double = QuantConv2d(3, 4, 3, bits=2).double()  # the buffers follow the layer's dtype
    double.relax = 0.5
    assert double.quantized_weight().dtype == torch.float64
