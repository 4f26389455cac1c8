"""BCGD and BinaryRelax against independent numpy implementations (plain SGD, a few steps), and a tiny end-to-end
training run with quantized weights and activations."""

import numpy as np
import pytest
import torch
from torch import nn

import stelab
from stelab.weights import QuantLinear, quantize_weights
from stelab.weights.optim import BCGD, BinaryRelax

LR = 0.05


def np_binary(w: np.ndarray) -> np.ndarray:
    """Binary, per output channel, mean rule: s_c = mean_j |w_cj|, Q = s_c * (+1 if w > 0 else -1)."""
    return np.abs(w).mean(1, keepdims=True) * np.where(w > 0, 1.0, -1.0)


def problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 4)), rng.standard_normal((6, 4)), rng.standard_normal((6, 3))


def torch_layer(w0: np.ndarray) -> QuantLinear:
    layer = QuantLinear(4, 3, bias=False, dtype=torch.float64, quantizer="binary")
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w0))
    return layer


def run(layer: QuantLinear, opt, x: np.ndarray, y: np.ndarray, steps: int) -> list[np.ndarray]:
    """``steps`` steps of 0.5 * ||x W^T - y||^2; the latent weights after each."""
    xt, yt, out = torch.from_numpy(x), torch.from_numpy(y), []
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * ((layer(xt) - yt) ** 2).sum()).backward()
        opt.step()
        out.append(layer.weight.detach().numpy().copy())
    return out


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_bcgd_matches_numpy(momentum):
    w, x, y = problem()
    rho = 0.2  # large, so the blend is visible
    layer = torch_layer(w)
    got = run(layer, BCGD(torch.optim.SGD(layer.parameters(), lr=LR, momentum=momentum), layer, rho=rho), x, y, 4)
    buf = np.zeros_like(w)
    for t in range(4):
        q = np_binary(w)
        g = (x @ q.T - y).T @ x  # coarse gradient at Q(w_f), identity STE
        buf = momentum * buf + g if t else g
        w = (1 - rho) * w + rho * q - LR * buf
        np.testing.assert_allclose(got[t], w, rtol=1e-12, atol=1e-14)


def test_binary_relax_matches_numpy():
    w, x, y = problem(1)
    lam, rate, hard_after = 0.5, 2.0, 3
    layer = torch_layer(w)
    opt = BinaryRelax(torch.optim.SGD(layer.parameters(), lr=LR), layer, lam=lam, rate=rate, hard_after=hard_after)
    assert layer.relax == lam
    got = run(layer, opt, x, y, 5)
    for t in range(5):
        q = np_binary(w)
        used = (w + lam * q) / (1 + lam) if t < hard_after else q  # relaxed phase, then the hard one
        w = w - LR * (x @ used.T - y).T @ x
        lam *= rate
        np.testing.assert_allclose(got[t], w, rtol=1e-12, atol=1e-14)
    assert opt.hard and layer.relax is None
    torch.testing.assert_close(layer.quantized_weight(), torch.from_numpy(np_binary(w)))


def test_wrappers_state_and_errors():
    w, _, _ = problem()
    layer = torch_layer(w)
    sgd = torch.optim.SGD(layer.parameters(), lr=LR)
    relax = BinaryRelax(sgd, layer, lam=1.0, rate=1.5)
    relax.lam = 3.0
    state = relax.state_dict()
    other = BinaryRelax(torch.optim.SGD(layer.parameters(), lr=LR), [layer])
    other.load_state_dict(state)
    assert other.lam == 3.0 and layer.relax == 3.0
    other.harden()
    assert layer.relax is None and other.param_groups is other.optimizer.param_groups
    with pytest.raises(ValueError, match="no QuantLinear/QuantConv2d layer found"):
        BCGD(sgd, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not update the weights"):
        BCGD(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), layer)
    with pytest.raises(ValueError, match="rho must be in"):
        BCGD(sgd, layer, rho=2.0)
    with pytest.raises(ValueError, match="rate must be"):
        BinaryRelax(sgd, layer, rate=0.5)


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=gen)
    y = (x @ torch.randn(8, generator=gen) > 0).long()  # linearly separable
    return x, y


@pytest.mark.parametrize("wrapper", ["adam", "bcgd", "binary_relax"])
def test_tiny_network_with_quantized_weights_and_activations_learns(wrapper):
    torch.manual_seed(0)
    x, y = _data()
    float_model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    model = quantize_weights(stelab.quantize_activations(float_model, bits=2), quantizer="ternary")
    model[2] = QuantLinear.from_float(model[2], bits=4)  # the last layer at 4 bits
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    if wrapper == "bcgd":
        opt = BCGD(opt, model)
    elif wrapper == "binary_relax":
        opt = BinaryRelax(opt, model, lam=1.0, rate=1.05, hard_after=100)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * losses[0], losses[::15]
    assert (model(x).argmax(1) == y).float().mean() > 0.85
