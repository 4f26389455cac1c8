"""Bad input: modules the exporter cannot know, options it cannot honour, run folders without weights; and the
``stelab export`` command end to end."""

import shutil

import pytest
import torch
from torch import nn

from stelab import QuantReLU
from stelab.cli import main
from stelab.export import ExportError, lower

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


class Smooth(QuantReLU):
    def forward(self, x):
        return torch.tanh(x)


@pytest.mark.parametrize("layer, words", [(nn.Sigmoid(), ["module 1 (Sigmoid", "supported modules", "QuantReLU"]),
                                          (Smooth(bits=2), ["module 1 (Smooth)", "own forward"]),
                                          (nn.MaxPool2d(2, ceil_mode=True), ["module 1 (MaxPool2d"])])
def test_an_unknown_layer_is_named_with_what_is_supported(layer, words):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), layer).eval()
    with pytest.raises(ExportError) as err:
        lower(model)
    for w in words:
        assert w in str(err.value)


def test_an_unknown_function_and_training_mode():
    class Net(nn.Module):
        def forward(self, x):
            return torch.sigmoid(x)

    with pytest.raises(ExportError, match="sigmoid.*supported functions"):
        lower(Net().eval())
    with pytest.raises(ExportError, match="model.eval()"):
        lower(nn.Sequential(nn.ReLU()))


def test_a_bad_format_lists_the_valid_ones():
    pytest.importorskip("onnx")
    from stelab.export import build

    with pytest.raises(ValueError, match="valid choices: float, qdq, qonnx"):
        build(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval(), torch.zeros(2, 4), "qcdq")


def test_a_run_folder_without_weights_says_how_to_get_them(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(REPO / "results" / "lenet5-mnist-float" / "config.json", run / "config.json")
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "has no weights (model.pt or checkpoint.pt): train it first" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("fmt", ["qdq", "qonnx", "float"])
def test_the_command_writes_the_file_and_its_size(fmt, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / f"w2a2-{fmt}.onnx"
    assert main(["export", str(REPO / "results" / "export-models" / "lenet5-w2a2"), "--format", fmt,
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    model = onnx.load(out)
    assert f"wrote {out}: {fmt}, opset 25, {out.stat().st_size:,} bytes" in text
    if fmt == "qdq":
        assert "int2 (3 tensors)" in text and "odd integer" in text
        assert out.stat().st_size < 40_000
        assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"}
    if fmt == "qonnx":
        quants = [n for n in model.graph.node if n.op_type == "Quant"]
        modes = {a.s for n in quants for a in n.attribute if a.name == "rounding_mode"}
        assert modes == {b"CEIL", b"ROUND"}


def test_the_command_verifies_on_test_images(tmp_path, capsys, shared_data_dir):
    pytest.importorskip("onnxruntime")
    run = REPO / "results" / "export-models" / "lenet5-w4a4"
    code = main(["export", str(run), "--out", str(tmp_path / "m.onnx"), "--verify", "50",
                 "--data-dir", str(shared_data_dir)])
    assert code == 0
    text = capsys.readouterr().out
    assert "qdq: predictions equal 50/50" in text and "integer: predictions equal 50/50" in text
