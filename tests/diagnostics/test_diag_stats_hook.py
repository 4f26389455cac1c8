import json

import pytest
import torch
from torch import nn

import stelab
from stelab.diagnostics import DiagnosticsHook, activation_codes, activation_statistics, code_flip_ratio, flip_ratio


def _cnn(ste="clipped_relu"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    return stelab.quantize_activations(net, bits=2, ste=ste).train()


def test_activation_statistics_match_direct_counts():
    model, x = _cnn(), torch.randn(64, 1, 8, 8)
    stats = activation_statistics(model, x)
    assert list(stats) == ["2", "5"]
    model.eval()
    stats = activation_statistics(model, x)
    pre = model[1](model[0](x)).detach().reshape(-1).double()
    s, top = stats["2"], 3 * stelab.lloyd_alpha(2)
    assert s["below"] == pytest.approx(float((pre <= 0).double().mean()))
    assert s["above"] == pytest.approx(float((pre > s["top"]).double().mean()))
    assert s["top"] == pytest.approx(top, rel=1e-6)
    assert s["below"] + s["inside"] + s["above"] == pytest.approx(1.0)
    # fractions per level are the histogram of the quantized outputs
    q = stelab.staircase(pre, 2, s["alpha"])
    for k, frac in enumerate(s["level_fractions"]):
        assert frac == pytest.approx(float((q == k * s["alpha"]).double().mean()))
    assert sum(s["histogram"]["fractions"]) == pytest.approx(1.0)


def test_code_flip_ratio():
    model, x = _cnn().eval(), torch.randn(32, 1, 8, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert code_flip_ratio(model, x, state, state)["model"] == 0.0
    moved = dict(state)
    moved["0.weight"] = state["0.weight"] * 1.5
    ratio = code_flip_ratio(model, x, state, moved)
    with torch.no_grad():
        pre = model[1](model[0](x))
        model[0].weight.mul_(1.5)
        pre_moved = model[1](model[0](x))
    alpha = stelab.lloyd_alpha(2)
    want = (stelab.staircase(pre, 2, alpha) != stelab.staircase(pre_moved, 2, alpha)).double().mean()
    assert ratio["2"] == pytest.approx(float(want))
    assert 0 < ratio["2"] < 1
    with pytest.raises(ValueError, match="different layers"):
        flip_ratio(activation_codes(model, x), {})


def test_hook_record_is_json_and_leaves_training_untouched():
    model, x, y = _cnn(), torch.randn(48, 1, 8, 8), torch.randint(0, 3, (48,))
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = torch.get_rng_state()
    hook = DiagnosticsHook(every=10, max_samples=32, probe_samples=16)
    first = hook(step=10, epoch=0, model=model, inputs=x, targets=y, loss_fn=nn.CrossEntropyLoss())
    json.dumps(first)
    diag = first["diagnostics"]
    assert diag["samples"] == 32 and diag["flip"] is None
    assert set(diag["cosine"]) == {"identity", "relu", "clipped_relu"}
    assert set(diag["cosine"]["relu"]) == {"0", "4", "7", "model"}
    assert set(diag["saturation"]) == {"2", "5"}
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    assert torch.equal(torch.get_rng_state(), rng)
    with torch.no_grad():
        model[0].weight.add_(0.5 * torch.randn_like(model[0].weight))  # not a rescale: BN would undo that
    second = hook(step=20, epoch=0, model=model, inputs=x.flip(0), targets=y, loss_fn=None)
    assert second["diagnostics"]["flip"]["2"] > 0  # flips measured on the fixed probe batch


def test_hook_argument_errors():
    with pytest.raises(ValueError, match="every"):
        DiagnosticsHook(every=0)
    with pytest.raises(ValueError, match="unknown STE"):
        DiagnosticsHook(every=5, stes=("relu", "nope"))
    hook = DiagnosticsHook(every=5)
    with pytest.raises(ValueError, match="no quantized activations"):
        hook(step=5, epoch=0, model=nn.Sequential(nn.Linear(2, 2), nn.ReLU()), inputs=torch.randn(4, 2),
             targets=torch.zeros(4, dtype=torch.long), loss_fn=None)
