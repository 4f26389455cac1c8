import math

import numpy as np
import pytest
import torch
from torch import nn

import stelab
from stelab.diagnostics import batch_gradients, gradient_fidelity, reference_key
from stelab.diagnostics.fidelity import EXTRAPOLATED, extrapolate_to_zero, gram_statistics


def test_gram_statistics_match_direct_formulas():
    rng = np.random.default_rng(0)
    B, V, P = 7, 3, 11
    vecs = rng.standard_normal((B, V, P)) + rng.standard_normal((1, V, P))  # a shared mean plus noise
    flat = torch.tensor(vecs.reshape(B * V, P))
    st = gram_statistics((flat @ flat.T).reshape(B, V, B, V))
    a, c = 0, 2

    def cos(x, y):
        return x @ y / np.linalg.norm(x) / np.linalg.norm(y)

    sums = vecs.sum(0)
    assert float(st["cosine"][a, c]) == pytest.approx(cos(sums[a], sums[c]), rel=1e-12)
    loo = np.array([cos(sums[a] - vecs[b, a], sums[c] - vecs[b, c]) for b in range(B)])
    jack = math.sqrt((B - 1) / B * ((loo - loo.mean()) ** 2).sum())
    assert float(st["cosine_se"][a, c]) == pytest.approx(jack, rel=1e-10)
    u = sum(vecs[b, a] @ vecs[bb, c] for b in range(B) for bb in range(B) if b != bb) / (B * (B - 1))
    assert float(st["inner"][a, c]) == pytest.approx(u, rel=1e-12)
    loo_u = np.array([sum(vecs[b, a] @ vecs[bb, c] for b in range(B) for bb in range(B) if len({b, bb, k}) == 3)
                      / ((B - 1) * (B - 2)) for k in range(B)])
    assert float(st["inner_se"][a, c]) == pytest.approx(math.sqrt((B - 1) / B * ((loo_u - loo_u.mean()) ** 2).sum()),
                                                        rel=1e-10)
    per_batch = [cos(vecs[b, a], vecs[b, c]) for b in range(B)]
    assert float(st["batch_cosine"][a, c]) == pytest.approx(np.mean(per_batch), rel=1e-12)


def test_extrapolation_removes_a_linear_bias_exactly():
    truth, slope = torch.randn(5), torch.randn(5)
    assert torch.allclose(extrapolate_to_zero(truth + 0.2 * slope, truth + 0.05 * slope, 0.2, 0.05), truth, atol=1e-6)


def _mlp(ste="clipped_relu"):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    return stelab.quantize_activations(net, bits=2, ste=ste)


def _data(n=1024, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=gen)
    y = (x @ torch.randn(10, 4, generator=gen)).argmax(1)
    return x, y


def test_batch_gradients_equal_the_training_gradient_of_each_ste():
    x, y = _data(64)
    grads = batch_gradients(_mlp(), x, y, stes=["identity", "relu"], widths=[0.5])
    for name in ("identity", "relu"):
        model = _mlp(name)
        nn.functional.cross_entropy(model(x), y).backward()
        assert torch.allclose(grads[name]["0"], torch.cat([model[0].weight.grad.reshape(-1), model[0].bias.grad]))
    # the last layer sees no STE: every estimator gives it the same gradient
    assert torch.equal(grads["identity"]["4"], grads["relu"]["4"])
    assert set(grads) == {"identity", "relu", reference_key(0.5)}


def test_fidelity_result_structure_and_sanity():
    x, y = _data()
    batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, len(x), 128)]
    result = gradient_fidelity(_mlp(), batches, widths=(0.2, 0.1))
    assert result.n_batches == 8 and result.references[-1] == EXTRAPOLATED
    assert result.layers == ["0", "2", "4", "model"]
    for row in result.rows:
        assert -1 <= row["cosine"] <= 1 and row["cosine_se"] >= 0
        assert row["cosine_ci"][0] <= row["cosine"] <= row["cosine_ci"][1]
    # the output layer's gradient passes through no STE, so it agrees with the reference up to the smoothing of its
    # inputs; the first layer's passes through two STE backwards and agrees less
    assert result.cosine("relu", "4") > 0.99
    assert result.cosine("relu", "0") < result.cosine("relu", "4")
    assert result.get("relu", "model")["inner"] > 0  # coarse gradient points downhill on average


def test_clear_errors():
    x, y = _data(8)
    float_model = nn.Sequential(nn.Linear(10, 4), nn.ReLU())
    with pytest.raises(ValueError, match="no quantized activations.*quantize_activations"):
        gradient_fidelity(float_model, [(x, y)])
    with pytest.raises(ValueError, match="unknown STE 'relu6'.*clipped_relu"):
        gradient_fidelity(_mlp(), [(x, y)], stes=["relu", "relu6"])
    with pytest.raises(ValueError, match="widths must be positive"):
        gradient_fidelity(_mlp(), [(x, y)], widths=[0.0])
    with pytest.raises(ValueError, match="at least one batch"):
        gradient_fidelity(_mlp(), [])
    result = gradient_fidelity(_mlp(), [(x, y)], widths=[0.5])
    with pytest.raises(KeyError, match="layers"):
        result.get("relu", "nope")
