"""Adding a forward quantizer, a weight quantizer or a model is one registration in one file: every command, the
configs, the docs gallery and pickling find it with no other edit."""

from __future__ import annotations

import importlib.util
import io
import pickle
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

import stelab
from stelab import models
from stelab.activations import quantizers
from stelab.cli import main
from stelab.train import TrainConfig
from stelab.weights import quantize_weight
from stelab.weights import quantizers as weight_quantizers


@pytest.fixture
def half_step():
    """A forward quantizer on the round formula with its own default resolution, registered for one test."""
    q = quantizers.register("half_step", formula="round", max_bits=4, default_alpha=lambda bits: 0.5,
                            doc="round staircase at alpha 0.5 by default")
    yield q
    quantizers.unregister("half_step")


@pytest.fixture
def quinary():
    """A 5-level weight quantizer (codes -2..2, max-rule scale): the uniform math at 3 bits under another name."""
    def codes(c, s, bits, granularity):
        return weight_quantizers.uniform_codes(c / s, 2, 2)

    def scale(w, bits, granularity, rule):
        return weight_quantizers.floored(weight_quantizers.abs_max(w, granularity) / 2, w.dtype)

    q = weight_quantizers.register("quinary", codes=codes, scale=scale, code_values=lambda b: (-2, -1, 0, 1, 2),
                                   bits=(3, 3), rules=("max", "fixed"), doc="five levels", codes_follow_step=True,
                                   tag=lambda b: "w5l")
    yield q
    weight_quantizers.unregister("quinary")


def test_a_registered_forward_quantizer_works_everywhere(half_step):
    x = torch.linspace(-1, 3, 101, dtype=torch.float64)
    expected = quantizers.get("round")(x, 2, 0.5)
    assert torch.equal(half_step(x, 2), expected)  # its default resolution, the round formula
    assert torch.equal(half_step.thresholds(2, 0.5), quantizers.get("round").thresholds(2, 0.5))
    layer = stelab.QuantReLU(bits=2, forward="half_step")
    assert torch.equal(layer(x.float()).double(), quantizers.get("round")(x.float(), 2, 0.5).double())
    assert pickle.loads(pickle.dumps(layer)).quantizer is half_step  # pickles by name, lambdas and all
    y = stelab.quantize(x.clone().requires_grad_(), bits=2, forward="half_step", ste="clipped_relu")
    y.sum().backward()  # the fused op runs it by its formula
    with pytest.raises(ValueError, match="supports bits 1..4"):
        stelab.QuantConfig(bits=5, forward="half_step")
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["info"]) == 0
    assert "half_step" in out.getvalue() and "round staircase at alpha 0.5" in out.getvalue()
    with pytest.raises(ValueError, match="already registered"):
        quantizers.register("half_step")
    with pytest.raises(ValueError, match="unknown formula 'floor'"):
        quantizers.register("floor_step", formula="floor")


def test_a_registered_weight_quantizer_works_everywhere(quinary, tmp_path):
    w = torch.randn(6, 5, dtype=torch.float64)
    cfg = stelab.WeightQuantConfig(quantizer="quinary", bits=3, granularity="tensor")
    assert cfg.effective_bits == 3 and cfg.rule == "max"
    q = quantize_weight(w, cfg)
    s = w.abs().max() / 2
    assert torch.allclose(q, s * torch.clamp(torch.sign(w / s) * torch.ceil((w / s).abs() - 0.5), -2, 2))
    assert quinary.levels(3, 1.0) == [-2.0, -1.0, 0.0, 1.0, 2.0] and weight_quantizers.storage_bits("quinary", 3) == 3
    net = stelab.quantize_model(torch.nn.Sequential(torch.nn.Linear(5, 4)), weights=cfg)
    assert pickle.loads(pickle.dumps(net))[0].weight_quantizer is quinary
    config = TrainConfig(weights=cfg, synthetic=64, epochs=1, batch_size=32, out=str(tmp_path / "r"))
    assert config.run_kind().startswith("w5la2")  # its own run tag
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["info"]) == 0
    assert "quinary" in out.getvalue() and "five levels" in out.getvalue()
    with pytest.raises(SystemExit), redirect_stdout(out := io.StringIO()):
        main(["train", "--help"])
    assert "quinary" in out.getvalue()  # --weight-quantizer's help lists the registry
    with pytest.raises(ValueError, match="does not take scale rule 'lsq'"):
        stelab.WeightQuantConfig(quantizer="quinary", bits=3, scale_rule="lsq")
    with pytest.raises(ValueError, match="scale rule"):
        weight_quantizers.register("bad", codes=None, scale=None, code_values=None, bits=(2, 2), rules=("nope",),
                                   doc="")


def test_the_gallery_draws_registered_quantizers(half_step, quinary):
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", Path(__file__).parents[1] / "scripts" /
                                                  "mkdocs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    files = dict(hooks.gallery_files())
    assert files["gallery/quantizers/half_step.png"][:4] == b"\x89PNG"
    assert files["gallery/quantizers/w-quinary.png"][:4] == b"\x89PNG"
    assert "## Weights: `quinary`" in files["gallery/quantizers.md"]


def test_a_registered_model_is_a_choice_of_every_command():
    def tiny(quant=None, num_classes=10, **kwargs):
        act = torch.nn.ReLU() if quant is None else stelab.QuantReLU(config=quant)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 16), act, torch.nn.Linear(16, 10))

    models.register("tiny_mlp", tiny, dataset="mnist", epochs=3)
    try:
        config = TrainConfig(model="tiny_mlp")
        assert config.resolved_epochs() == 3
        assert isinstance(models.build("tiny_mlp", stelab.QuantConfig())[2], stelab.QuantReLU)
        assert "tiny_mlp" in models.describe()
        with pytest.raises(ValueError, match="built for mnist images, not cifar10"):
            TrainConfig(model="tiny_mlp", dataset="cifar10")
    finally:
        for table in (models._BUILDERS, models.DEFAULT_DATASET, models.PAPER_EPOCHS):
            table.pop("tiny_mlp")
