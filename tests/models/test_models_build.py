"""LeNet-5, VGG-11, ResNet-20: shapes, parameter counts, staircase-only activations, float <-> quantized twins."""

import pytest
import torch
from torch import nn

import stelab
from stelab import QuantConfig
from stelab.models import build, names

INPUT = {"lenet5": (1, 28, 28), "lenet5-caffe": (1, 28, 28), "vgg11": (3, 32, 32), "resnet20": (3, 32, 32)}
# Activation counts: LeNet 4 (Caffe widths: 3); VGG one per conv (8); ResNet stem + 2 per block (1 + 18).
N_ACTIVATIONS = {"lenet5": 4, "lenet5-caffe": 3, "vgg11": 8, "resnet20": 19}


def batch(name, n=4, seed=0):
    return torch.randn((n, *INPUT[name]), generator=torch.Generator().manual_seed(seed))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_architectures():
    # Counted by hand from the layer tables in the module docstrings (conv weights have no bias; see there).
    lenet = 6 * 25 + 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10 + 10
    caffe = 20 * 25 + 50 * 20 * 25 + 800 * 500 + 500 * 10 + 10  # 28 -> 24 -> 12 -> 8 -> 4: 50 * 4 * 4 = 800
    vgg_convs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    vgg = sum(9 * a * b for a, b in vgg_convs) + 512 * 10 + 10
    resnet = 9 * 3 * 16 + 6 * 9 * 16 * 16 + (9 * 16 * 32 + 5 * 9 * 32 * 32) + (9 * 32 * 64 + 5 * 9 * 64 * 64)
    resnet += 64 * 10 + 10 + 3 * 2 * (16 + 32 + 64)  # classifier and the affine BN2 of each block
    expected = {"lenet5": lenet, "lenet5-caffe": caffe, "vgg11": vgg, "resnet20": resnet}
    for name in names():
        float_model, quant_model = build(name), build(name, QuantConfig(bits=2))
        assert n_params(float_model) == n_params(quant_model) == expected[name]
    assert 0.26e6 < resnet < 0.28e6


@pytest.mark.parametrize("name", ["lenet5", "lenet5-caffe", "vgg11", "resnet20"])
def test_output_shapes_and_activation_types(name):
    for quant, kind in ((None, nn.ReLU), (QuantConfig(bits=2, ste="relu"), stelab.QuantReLU)):
        model = build(name, quant, num_classes=7)
        assert model(batch(name, 3)).shape == (3, 7)
        acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, stelab.QuantReLU))]
        assert len(acts) == N_ACTIVATIONS[name] and all(type(m) is kind for m in acts)
        assert len({id(m) for m in acts}) == len(acts)  # one module per site, so hooks can tell them apart


def test_every_bn_feeding_an_activation_has_no_affine_parameters():
    # Trace the data flow (module registration order is not execution order: ResNet's BN2 feeds the residual sum).
    for name in names():
        graph = torch.fx.symbolic_trace(build(name))
        mods = dict(graph.named_modules())
        feeding = 0
        for node in graph.graph.nodes:
            if node.op == "call_module" and isinstance(mods[node.target], (nn.BatchNorm1d, nn.BatchNorm2d)):
                users = list(node.users)
                if any(u.op == "call_module" and isinstance(mods[u.target], nn.ReLU) for u in users):
                    assert not mods[node.target].affine, (name, node.target)
                    feeding += 1
                else:
                    assert name == "resnet20" and node.target.endswith("bn2"), (name, node.target)
        assert feeding == {"lenet5": 4, "lenet5-caffe": 3, "vgg11": 8, "resnet20": 10}[name]


@pytest.mark.parametrize("name", ["lenet5", "lenet5-caffe", "vgg11", "resnet20"])
@pytest.mark.parametrize("bits", [2, 4])
def test_quantized_models_emit_only_staircase_levels(name, bits):
    model = build(name, QuantConfig(bits=bits, ste="clipped_relu"))
    seen = {}

    def record(module, _inputs, output):
        seen[module] = output.detach()

    quantized = stelab.quantized_modules(model)
    assert len(quantized) == N_ACTIVATIONS[name]
    for _, m in quantized:
        m.register_forward_hook(record)
    model(batch(name, 8))
    assert len(seen) == len(quantized)
    alpha = stelab.lloyd_alpha(bits)
    levels = alpha * torch.arange(2**bits, dtype=torch.float64)
    for out in seen.values():
        values = torch.unique(out).double()
        distance = (values[:, None] - levels[None, :]).abs().min(dim=1).values
        assert distance.max() < 1e-5, f"{name}: off-level output {values[distance.argmax()]}"
        assert len(values) >= 2  # the layer is not stuck on one level


@pytest.mark.parametrize("name", ["lenet5", "lenet5-caffe", "vgg11", "resnet20"])
def test_state_dicts_load_across_float_and_quantized(name):
    torch.manual_seed(0)
    float_model = build(name)
    quant = QuantConfig(bits=2, ste="clipped_relu")
    quant_model = build(name, quant)
    assert float_model.state_dict().keys() == quant_model.state_dict().keys()
    quant_model.load_state_dict(float_model.state_dict())  # strict
    # Independent check that the quantized activations sit exactly where the float ReLUs were: converting the
    # float model with stelab.quantize_activations must give the same function as the built quantized twin.
    converted = stelab.quantize_activations(float_model, bits=2, ste="clipped_relu")
    x = batch(name)
    assert torch.equal(converted(x), quant_model(x))
    float_model.load_state_dict(quant_model.state_dict())
    assert not torch.allclose(float_model(x), quant_model(x))


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_ste_gradients_reach_every_weight(name):
    model = build(name, QuantConfig(bits=2, ste="clipped_relu"))
    loss = nn.functional.cross_entropy(model(batch(name, 8)), torch.arange(8) % 10)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


def test_channels_last_gives_the_same_function():
    # In float64 the two memory formats' rounding differences (~1e-16) cannot flip a staircase threshold in practice,
    # so even the quantized twins must agree to near machine precision.
    for quant in (None, QuantConfig(bits=4)):
        torch.manual_seed(1)
        model = build("resnet20", quant).double()
        twin = build("resnet20", quant, channels_last=True).double()
        twin.load_state_dict(model.state_dict())
        assert twin.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
        x = batch("resnet20").double()
        out_cl = twin(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(model(x), out_cl, rtol=1e-9, atol=1e-9)


def test_build_errors():
    valid = "lenet5, lenet5-caffe, resnet20, vgg11"
    with pytest.raises(ValueError, match=f"unknown model 'resnet18'; valid choices: {valid}"):
        build("resnet18")
    with pytest.raises(TypeError, match="QuantConfig"):
        build("lenet5", quant={"bits": 2})
    assert names() == ["lenet5", "lenet5-caffe", "vgg11", "resnet20"]
