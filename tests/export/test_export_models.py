"""Every model stelab trains exports in every format and runs like PyTorch; the committed LeNet-5 weights on real
MNIST test images."""

import numpy as np
import pytest
import torch

from stelab import models
from stelab.train import TrainConfig
from stelab.train.runs import build_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from stelab.export.verify import verify  # noqa: E402

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def trained_like(name: str, weights: bool) -> torch.nn.Module:
    """Model ``name`` with A2 (and W2 LSQ weights), batch-norm statistics from a few random batches."""
    dataset = models.DEFAULT_DATASET[name]
    extra = {"weights": {"quantizer": "uniform", "bits": 2, "scale_rule": "lsq"}} if weights else {}
    cfg = TrainConfig.from_dict({"model": name, "dataset": dataset, "bits": 2, **extra})
    torch.manual_seed(0)
    model = build_model(cfg)
    shape = (1, 28, 28) if dataset == "mnist" else (3, 32, 32)
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model(torch.randn(16, *shape))
    return model.eval()


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("weights", [False, True])
def test_every_model_exports_and_runs_like_pytorch(name, weights):
    model = trained_like(name, weights)
    shape = (1, 28, 28) if models.DEFAULT_DATASET[name] == "mnist" else (3, 32, 32)
    x = torch.randn(3, *shape)
    formats = ("qdq", "float", "integer") + (("qonnx",) if name == "lenet5" else ())
    report = verify(model, x, formats)
    for runner, r in report.items():
        assert r["predictions_equal"] == 3, (runner, r)
        assert r["samples_all_codes_equal"] >= 2, (runner, r)
        assert r["logits_within_bound"], (runner, r)
    if weights:
        assert "int2" in report["qdq"]["int_types"].values()
        assert report["qdq"]["bytes"] < report["float"]["bytes"] / 4


def test_a_float_model_exports_too():
    cfg = TrainConfig.from_dict({"model": "lenet5", "dataset": "mnist", "bits": 2}).replace(quant=None)
    model = build_model(cfg).eval()
    report = verify(model, torch.randn(2, 1, 28, 28), ("qdq", "float", "integer"))
    assert all(r["predictions_equal"] == 2 and r["logits_within_bound"] for r in report.values())


@pytest.mark.parametrize("run", ["lenet5-a2", "lenet5-w2a2", "lenet5-w4a4"])
def test_committed_lenet5_weights_on_mnist(run, shared_data_dir):
    pytest.importorskip("qonnx")
    from stelab import data
    from stelab.cli.export import load_run

    model, config = load_run(REPO / "results" / "export-models" / run)
    images, labels = data.load("mnist", shared_data_dir, "test")
    x = data.normalise(images[:200], *data.STATS["mnist"])
    report = verify(model, x, labels=labels[:200].numpy())
    with torch.no_grad():
        accuracy = int((model(x).argmax(1) == labels[:200]).sum()) / 200  # as verify counts it
    for runner, r in report.items():
        assert r["predictions_equal"] == 200, (runner, r)
        assert r["accuracy"] == accuracy
        assert r["logits_within_bound"], (runner, r)
        first_other = r["codes_differing_first"] - r["codes_differing_on_documented_ties"]
        assert first_other == 0 or r["codes_differing_max_distance_to_threshold_alpha"] < 1e-4, (runner, r)
    assert report["qonnx"]["codes_differing"] <= report["qdq"]["codes_differing"] + 5
    assert np.isfinite(report["integer"]["logit_max_abs_error"])


@pytest.mark.parametrize("fmt", ["qdq", "qonnx", "float"])
def test_a_channels_last_model_exports_the_same_file(fmt):
    """Memory layout is PyTorch's business: the exported graph (NCHW, as ONNX is) is the same byte for byte."""
    from stelab.export.onnx_export import build

    model = trained_like("resnet20", True)
    x = torch.randn(2, 3, 32, 32)

    a = build(model, x, fmt).model.SerializeToString()
    cl = model.to(memory_format=torch.channels_last)
    b = build(cl, x.contiguous(memory_format=torch.channels_last), fmt).model.SerializeToString()
    assert a == b


def test_resnet20_with_conv_input_placement_exports_and_runs_like_pytorch():
    # Quantizers on the residual stream's values, whose resolutions were started from data; the stream stays float;
    # the batch norms before the quantizers have scales and shifts (--bn-affine).
    from stelab.activations import init_alphas_from_data

    cfg = TrainConfig.from_dict({"model": "resnet20", "dataset": "cifar10", "act_placement": "conv_input",
                                 "bn_affine": True, "quant": {"bits": 2, "learn_alpha": True, "alpha_rule": "lsq"},
                                 "weights": {"quantizer": "midrise", "bits": 2, "scale_rule": "lsq"}})
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model(torch.randn(16, 3, 32, 32))
        for name, m in model.named_modules():  # affine batch norms (--bn-affine) away from their start
            if isinstance(m, torch.nn.BatchNorm2d) and name.endswith("branch1.1"):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    assert len(init_alphas_from_data(model, torch.randn(16, 3, 32, 32))) == 9
    report = verify(model.eval(), torch.randn(3, 3, 32, 32), ("qdq", "float", "integer"))
    for runner, r in report.items():
        assert r["predictions_equal"] == 3 and r["logits_within_bound"], (runner, r)
