"""The ``lsq`` rule for a learned activation resolution: LSQ's step gradient times 1/sqrt(N L), N the elements of
one sample, checked against a gradient computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

import stelab
from stelab.activations.ops import lsq_grad_scale


def test_lsq_alpha_gradient_by_hand():
    # round forward (LSQ's own quantizer, ties down), 2 bits: L = 3, alpha = 0.5, u = x / alpha
    x = torch.tensor([[-0.5, 0.2, 0.7], [1.3, 2.5, 0.0]], requires_grad=True)
    alpha = torch.tensor(0.5, requires_grad=True)
    y = stelab.quantize(x, bits=2, alpha=alpha, alpha_rule="lsq", forward="round", ste="clipped_relu")
    # u = -1, 0.4, 1.4 | 2.6, 5, 0 -> k = 0, 0, 1 | 3, 3 (clipped), 0
    assert y.tolist() == [[0.0, 0.0, 0.5], [1.5, 1.5, 0.0]]
    y.backward(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    # dq/dalpha: 0 (u <= 0), k - u = -0.4, -0.4 | 0.4, L = 3 (u >= L), 0; N = 3 features per sample -> g = 1/3
    expected = (1 * 0 + 2 * -0.4 + 3 * -0.4 + 4 * 0.4 + 5 * 3 + 6 * 0) / math.sqrt(3 * 3)
    assert alpha.grad.item() == pytest.approx(expected, rel=1e-6)
    # the input's gradient is the STE's (clipped relu on (0, L alpha]), as with the other rules
    assert x.grad.tolist() == [[0.0, 2.0, 3.0], [4.0, 0.0, 0.0]]


def test_lsq_alpha_gradient_staircase_and_n_per_sample():
    # staircase (ceil), 1 bit: L = 1; one value inside (k - u = 1 - 0.25), one above (L = 1)
    x = torch.tensor([[[[0.1, 0.9]]], [[[0.0, -1.0]]]])  # batch 2 of shape 1x1x2: N = 2 per sample, not 4
    alpha = torch.tensor(0.4, requires_grad=True)
    stelab.quantize(x, bits=1, alpha=alpha, alpha_rule="lsq").sum().backward()
    assert alpha.grad.item() == pytest.approx((0.75 + 1.0) / math.sqrt(2 * 1), rel=1e-6)
    assert lsq_grad_scale(torch.zeros(8, 16, 4, 4), 3) == pytest.approx(1 / math.sqrt(16 * 4 * 4 * 3))
    assert lsq_grad_scale(torch.zeros(5), 3) == pytest.approx(1 / math.sqrt(15))  # 1-d: all of it


def test_lsq_is_a_rule_of_the_layer_and_config():
    assert "lsq" in stelab.ALPHA_RULES
    layer = stelab.QuantReLU(bits=2, learn_alpha=True, alpha_rule="lsq")
    layer(torch.rand(4, 8) * 3).sum().backward()
    assert layer.alpha.grad is not None and layer.alpha.grad.item() > 0  # values above the top pull alpha up
    cfg = stelab.QuantConfig(learn_alpha=True, alpha_rule="lsq")
    assert stelab.QuantConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="needs alpha_rule 'ae'"):
        stelab.QuantConfig(bits=1, forward="sign", learn_alpha=True, alpha_rule="lsq")
