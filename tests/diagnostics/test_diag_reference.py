import math

import pytest
import torch
from torch import nn

import stelab
from stelab.diagnostics import (
    quantized_loss_of,
    smoothed,
    smoothed_gradient,
    zeroth_order_directional,
    zeroth_order_gradient,
)
from stelab.diagnostics.reference import parameter_groups, preserved_state


def _max_abs_z(estimate, truth):
    return float(((estimate.mean - truth) / estimate.stderr).abs().max())


def test_zeroth_order_is_unbiased_on_a_quadratic():
    torch.manual_seed(0)
    a = torch.randn(5, 5, dtype=torch.float64)
    a = a @ a.T + torch.eye(5, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    theta = torch.randn(5, dtype=torch.float64)

    def f(t):
        return 0.5 * t @ a @ t + b @ t

    # Gaussian smoothing adds a constant to a quadratic, so the smoothed gradient is the gradient itself.
    truth = a @ theta + b
    estimate = zeroth_order_gradient(f, theta, sigma=0.7, n_directions=4000, seed=1)
    assert _max_abs_z(estimate, truth) < 4.0  # 5 coordinates: P(max |z| > 4) ~ 3e-4
    # and it is not trivially wide: the standard error is far below the gradient's size
    assert float(estimate.stderr.max()) < 0.1 * float(truth.abs().max())


def test_zeroth_order_estimates_the_smoothed_gradient_of_a_non_quadratic():
    theta = torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float64)
    sigma = 0.8

    def f(t):
        return torch.sin(t).sum()

    # E sin(t + sigma u) = sin(t) exp(-sigma^2 / 2): the smoothed gradient is cos(t) exp(-sigma^2 / 2), not cos(t).
    smoothed_truth = torch.cos(theta) * math.exp(-sigma**2 / 2)
    estimate = zeroth_order_gradient(f, theta, sigma=sigma, n_directions=6000, seed=2)
    assert _max_abs_z(estimate, smoothed_truth) < 4.0
    assert _max_abs_z(estimate, torch.cos(theta)) > 4.0  # the smoothing is visible: it is estimated, not ignored
    direction = torch.tensor([1.0, -2.0, 0.5, 1.0], dtype=torch.float64)
    along = zeroth_order_directional(f, theta, direction, sigma=sigma, n_directions=6000, seed=3)
    assert abs(float(along.mean) - float(smoothed_truth @ direction)) < 4.0 * float(along.stderr)


def test_zeroth_order_argument_errors():
    with pytest.raises(ValueError, match="sigma"):
        zeroth_order_gradient(lambda t: t.sum(), torch.zeros(2), sigma=0.0, n_directions=10)
    with pytest.raises(ValueError, match="n_directions"):
        zeroth_order_gradient(lambda t: t.sum(), torch.zeros(2), sigma=1.0, n_directions=1)


def _cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU(), nn.Dropout(0.3),
                        nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return stelab.quantize_activations(net, bits=2).train()


def test_smoothed_gradient_leaves_training_state_alone():
    model, x, y = _cnn(), torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = torch.get_rng_state()
    grads = smoothed_gradient(model, x, y, width=0.25)
    assert set(grads) == {n for n, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    # same seed, same dropout mask: deterministic
    again = smoothed_gradient(model, x, y, width=0.25)
    assert all(torch.equal(grads[k], again[k]) for k in grads)


def test_smoothed_gradient_matches_finite_differences_of_the_smoothed_loss():
    """Independent check of the autograd path: central differences of the smoothed network along directions."""
    model, x, y = _cnn().double().eval(), torch.randn(32, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (32,))
    width = 0.5
    grads = smoothed_gradient(model, x, y, width)
    names = ["0.weight", "0.bias"]
    flat = torch.cat([grads[n].reshape(-1) for n in names])
    gen = torch.Generator().manual_seed(0)
    with smoothed(model, width):
        loss, theta0 = quantized_loss_of(model, x, y, names)
        for _ in range(3):
            d = torch.randn(theta0.shape, generator=gen, dtype=torch.float64)
            h = 1e-5
            fd = (loss(theta0 + h * d) - loss(theta0 - h * d)) / (2 * h)
            assert fd == pytest.approx(float(flat @ d), rel=1e-5, abs=1e-9)
    # the real quantized loss is flat along almost every direction at this scale: smoothing is what makes it informative
    real, theta0 = quantized_loss_of(model, x, y, names)
    assert real(theta0 + 1e-9 * flat) == real(theta0)


def test_parameter_groups_exclude_learned_alpha():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    model = stelab.quantize_activations(net, learn_alpha=True)
    assert list(parameter_groups(model)) == ["0", "2"]


def test_preserved_state_restores_after_an_error():
    model = _cnn()
    before = {k: v.clone() for k, v in model.named_buffers()}
    with pytest.raises(RuntimeError):
        with preserved_state(model):
            model(torch.randn(4, 1, 8, 8) * 10)
            raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in model.named_buffers())


def test_zeroth_order_check_matches_autograd_on_the_smoothed_loss():
    """With the activations smoothed and a tiny sigma, the network check estimates the autograd directional
    derivative without bias (within its standard error), for the gradient direction and a random one."""
    from stelab.diagnostics.reference import zeroth_order_check

    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 3)).double()
    model = stelab.quantize_activations(net, bits=2)
    x, y = torch.randn(64, 5, dtype=torch.float64), torch.randint(0, 3, (64,))
    grads = smoothed_gradient(model, x, y, width=0.5)
    names = [n for group in parameter_groups(model).values() for n, _ in group]
    flat = torch.cat([grads[n].reshape(-1) for n in names])
    directions = {"gradient": flat, "random": torch.randn(flat.shape, dtype=torch.float64)}
    with smoothed(model, 0.5):
        out = zeroth_order_check(model, [(x, y)], directions, sigma=1e-4, n_directions=200, seed=0)
    for key, d in directions.items():
        truth = float(flat @ (d / d.norm()))
        assert abs(out[key]["estimate"] - truth) < 4 * out[key]["se"], (key, out[key], truth)
    assert out["gradient"]["estimate"] > 4 * out["gradient"]["se"]  # it resolves the sign
