"""ResNet-20's ``conv_input`` activation placement: which values are quantized, the float twin, the start of its
learned resolutions from data, and the errors of a placement that does not fit."""

import math

import pytest
import torch
from torch import nn

import stelab
from stelab import QuantConfig, models
from stelab.activations import init_alphas_from_data
from stelab.train import TrainConfig

LEARNED = QuantConfig(bits=2, learn_alpha=True, alpha_rule="lsq", check_nan=False)


def images(n=16, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def conv_inputs(model, x):
    """Each Conv2d's and each block's input on ``x``, by module name, in eval mode."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda _m, a, n=n: seen.__setitem__(n, a[0].detach()))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, models.BasicBlock))]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_every_conv_after_the_stem_computes_on_quantized_inputs_and_the_residual_stream_stays_float():
    torch.manual_seed(0)
    model = models.build("resnet20", LEARNED, placement="conv_input")
    quantizers = [m for m in model.modules() if isinstance(m, stelab.QuantReLU)]
    assert len(quantizers) == 18  # one per 3x3 conv after the stem: 9 block inputs, 9 inner activations
    x = images()
    inputs = conv_inputs(model, x)
    assert len([n for n in inputs if "layer" not in n or n.count(".") > 1]) == 19  # the convs
    assert torch.equal(inputs["stem.0"], x)  # the image itself
    # The quantizer feeding each conv: q_in for conv1 (branch1.0), branch1's activation for conv2.
    for block_name, block in model.named_modules():
        if not isinstance(block, models.BasicBlock):
            continue
        for conv, q in ((f"{block_name}.branch1.0", block.quant_in), (f"{block_name}.conv2", block.branch1[2])):
            k = inputs[conv] / q.current_alpha()  # integer codes 0..3 when quantized
            assert torch.allclose(k, k.round(), atol=1e-4) and k.min() >= 0 and k.max() <= 3, conv
        assert type(block.act) is nn.ReLU  # the block output, the residual stream, is float
    stream = inputs["layer2.0"]  # the residual stream entering a block: a float ReLU output, many distinct values
    assert stream.min() >= 0 and len(torch.unique(stream)) > 100


def test_the_relu_placement_quantizes_the_residual_stream():
    model = models.build("resnet20", QuantConfig(bits=2))
    stream = conv_inputs(model, images())["layer2.0"]  # the output of layer1's last block
    assert len(torch.unique(stream)) <= 4


def test_the_float_twins_of_both_placements_are_the_same_network():
    torch.manual_seed(0)
    relu = models.build("resnet20")
    conv_input = models.build("resnet20", placement="conv_input")
    assert relu.state_dict().keys() == conv_input.state_dict().keys()
    conv_input.load_state_dict(relu.state_dict())
    relu.eval(), conv_input.eval()
    x = images()
    assert torch.equal(relu(x), conv_input(x))
    # and a float network starts the quantized one: every key but the learned resolutions
    quant = models.build("resnet20", LEARNED, placement="conv_input")
    missing = quant.load_state_dict(relu.state_dict(), strict=False).missing_keys
    assert missing == [] and not any(m.alpha_loaded for m in quant.modules() if isinstance(m, stelab.QuantReLU))


def test_the_start_from_data_is_lsq_step_on_the_inputs_each_quantizer_sees():
    torch.manual_seed(0)
    model = models.build("resnet20", LEARNED, placement="conv_input")
    before = {n: m.current_alpha() for n, m in model.named_modules() if isinstance(m, stelab.QuantReLU)}
    x = images(32, seed=1)
    fitted = init_alphas_from_data(model, x)
    assert list(fitted) == [f"layer{s}.{b}.quant_in" for s in (1, 2, 3) for b in range(3)]  # forward order
    assert model.training  # the mode is restored
    # Independent check: with every resolution in place, each q_in's alpha is 2 mean|x| / sqrt(3) of its inputs.
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda _m, a, n=n: seen.__setitem__(n, a[0].double()))
             for n, m in model.named_modules() if n in fitted]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    for name, alpha in fitted.items():
        expected = 2 * seen[name].abs().mean().item() / math.sqrt(3)
        assert model.get_submodule(name).current_alpha() == pytest.approx(expected, rel=1e-5)
        assert alpha == pytest.approx(expected, rel=1e-5)
    # the quantizers behind standardising batch norms keep Lloyd's start
    for name, alpha in before.items():
        if name not in fitted:
            assert model.get_submodule(name).current_alpha() == alpha


def test_a_loaded_resolution_is_kept_and_a_model_without_marked_quantizers_is_untouched():
    torch.manual_seed(0)
    trained = models.build("resnet20", LEARNED, placement="conv_input")
    init_alphas_from_data(trained, images())
    model = models.build("resnet20", LEARNED, placement="conv_input")
    model.load_state_dict(trained.state_dict())
    assert init_alphas_from_data(model, images(seed=3)) == {}
    assert model.layer1[0].quant_in.current_alpha() == trained.layer1[0].quant_in.current_alpha()
    assert init_alphas_from_data(models.build("resnet20", LEARNED), images()) == {}


@pytest.mark.parametrize("fields, message", [
    (dict(model="lenet5", dataset="mnist", quant=LEARNED), "offered by: resnet20"),
    (dict(model="resnet20", dataset="cifar10", quant=QuantConfig(bits=2)), "add --learn-alpha"),
    (dict(model="resnet20", dataset="cifar10", quant=LEARNED, act_placement="inputs"), "conv_input"),
])
def test_a_placement_that_does_not_fit_says_how_to_fix_it(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(act_placement=fields.pop("act_placement", "conv_input"), **fields)


def test_the_fixes_work_and_the_placement_round_trips_through_json():
    config = TrainConfig(model="resnet20", dataset="cifar10", quant=LEARNED, act_placement="conv_input")
    assert TrainConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="drop --act-placement"):  # float: the placement would do nothing
        TrainConfig(model="resnet20", dataset="cifar10", quant=None, act_placement="conv_input")
    with pytest.raises(ValueError, match="signed"):
        models.build("resnet20", QuantConfig(bits=1, forward="sign", learn_alpha=True, alpha_rule="ae"),
                     placement="conv_input")


def test_a_conv_input_run_starts_its_stream_quantizers_from_data_once(tmp_path, capsys):
    from stelab.train import load_checkpoint, train
    from stelab.train.runs import build_model

    config = TrainConfig(model="resnet20", dataset="cifar10", synthetic=128, batch_size=64, epochs=1, quant=LEARNED,
                         act_placement="conv_input", out=str(tmp_path / "run"))
    assert config.run_name() == "resnet20-cifar10-2bit-clipped_relu-learned_lsq-conv_input-seed0"
    assert train(config)["status"] == "finished"
    assert "9 learned resolutions started from data" in capsys.readouterr().err
    trained = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    # a start from the trained run keeps its resolutions (none is fitted again) ...
    again = config.replace(init=str(tmp_path / "run"), out=str(tmp_path / "b"))
    model = build_model(again, init=again.init)
    assert model.layer3[2].quant_in.current_alpha() == pytest.approx(float(trained["layer3.2.quant_in.alpha"]))
    assert train(again)["status"] == "finished"
    assert "started from data" not in capsys.readouterr().err
