"""``--bn-affine``: batch norms without affine parameters get a scale and shift started at 1 and 0 (the same
network), trained, saved, and kept by a start from such a run."""

import pytest
import torch
from torch import nn

from stelab import QuantConfig, models
from stelab.models.layers import make_batchnorms_affine
from stelab.train import TrainConfig, load_checkpoint, train
from stelab.train.runs import build_model


def test_the_affine_network_computes_the_same_function_and_its_new_parameters_learn():
    torch.manual_seed(0)
    model = models.build("resnet20", QuantConfig(bits=2))
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    before = model(x)
    names = make_batchnorms_affine(model)
    assert names == ["stem.1"] + [f"layer{s}.{b}.branch1.1" for s in (1, 2, 3) for b in range(3)]
    assert torch.equal(model(x), before)
    assert make_batchnorms_affine(model) == []  # nothing left to change
    model.train()
    model(x).sum().backward()
    bn = model.get_submodule("layer2.1.branch1.1")
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0 and bn.bias.grad.abs().sum() > 0


def test_a_bn_affine_run_trains_saves_and_passes_on_its_scales(tmp_path):
    base = TrainConfig(model="resnet20", dataset="cifar10", synthetic=128, batch_size=64, epochs=1, quant=None,
                       out=str(tmp_path / "float"))
    train(base)
    config = base.replace(quant=QuantConfig(bits=2), bn_affine=True, init=str(tmp_path / "float"),
                          out=str(tmp_path / "a2"))
    assert config.run_name() == "resnet20-cifar10-2bit-clipped_relu-bn_affine-seed0"
    assert TrainConfig.from_json(config.to_json()) == config
    assert train(config)["status"] == "finished"
    state = load_checkpoint(tmp_path / "a2" / "checkpoint.pt")["model"]
    gamma = state["layer1.0.branch1.1.weight"]
    assert not torch.equal(gamma, torch.ones_like(gamma))  # trained away from its start
    # a start from that run keeps them; a start from the float run begins at 1 and 0
    kept = build_model(config.replace(init=str(tmp_path / "a2")), init=str(tmp_path / "a2"))
    assert torch.equal(kept.get_submodule("layer1.0.branch1.1").weight.detach(), gamma)
    fresh = build_model(config, init=str(tmp_path / "float"))
    assert torch.equal(fresh.get_submodule("layer1.0.branch1.1").weight.detach(), torch.ones(16))
    # and a run without the flag cannot silently drop them
    with pytest.raises(ValueError, match="add --bn-affine"):
        build_model(config.replace(bn_affine=False), init=str(tmp_path / "a2"))


def test_only_batch_norms_without_parameters_change():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm1d(4, affine=False))
    assert make_batchnorms_affine(model) == ["1"]
    assert model[0].weight.shape == (3,) and model[1].affine and model[1].weight.shape == (4,)
