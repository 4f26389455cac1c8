"""What a user meets when something is off: clear errors early, warnings for what stays float, no silent change."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import stelab
from stelab.cli import main


def test_bad_ste_parameters_and_broken_user_stes_fail_at_once():
    with pytest.raises(ValueError, match=r"STE swish_sign\(beta=0.0\) is not usable: swish_sign beta must be"):
        stelab.ste.get("swish_sign(beta=0)")

    def broken(x, top):
        raise RuntimeError("oops")

    with pytest.raises(ValueError, match="STE broken_ste is not usable: RuntimeError: oops"):
        stelab.ste.register("broken_ste", broken)
    assert "broken_ste" not in stelab.ste.names()  # nothing half-registered

    with pytest.raises(ValueError, match="must return a tensor of x's shape"):
        stelab.ste.register("wrong_shape", lambda x, top: x[:2])
    with pytest.raises(ValueError, match="not finite at x"):
        stelab.ste.register("nan_ste", lambda x, top: x / x)  # 0/0 at x = 0
    with pytest.raises(ValueError, match="built in and cannot be unregistered"):
        stelab.ste.unregister("relu")
    assert "relu" in stelab.ste.names()


def test_unknown_names_suggest_the_nearest():
    with pytest.raises(ValueError, match=r"unknown STE 'clipped_rleu'; valid choices: .*; did you mean 'clipped_relu'"):
        stelab.ste.get("clipped_rleu")


def test_quantize_signature_and_help():
    x = torch.randn(16)
    with pytest.raises(TypeError, match=r"quantize\(x, bits=2\)"):
        stelab.quantize(x, 2)
    assert torch.equal(stelab.quantize(x, bits=2, ste="relu"), stelab.quantize(x, stelab.QuantConfig(ste="relu")))
    doc = stelab.quantize.__doc__
    assert doc.splitlines()[0] == "Quantized activation: ``q(x)`` forward, the STE ``mu'(x)`` backward."
    assert r"\lceil x/\alpha" in doc  # the staircase formula
    import inspect

    assert {"bits", "alpha", "ste", "forward", "learn_alpha", "alpha_rule"} <= set(inspect.signature(
        stelab.quantize).parameters)
    assert (os.path.dirname(stelab.__file__) + "/py.typed") and os.path.isfile(
        os.path.join(os.path.dirname(stelab.__file__), "py.typed"))


class Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(4, 4), nn.GELU()

    def forward(self, x):
        return self.act(self.fc(x))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_conversion_that_leaves_things_float_says_what():
    with pytest.warns(UserWarning, match=r"left float \(not a ReLU/ReLU6/Hardtanh module\): act \(GELU\)"):
        stelab.quantize_activations(Gelu(), bits=2)
    with pytest.warns(UserWarning, match="F.relu"):
        stelab.quantize_activations(Functional(), bits=2)
    with pytest.warns(UserWarning, match=r"left float \(only nn.Linear and nn.Conv2d are quantized\): 0 \(Conv1d\)"):
        stelab.quantize_weights(nn.Sequential(nn.Conv1d(2, 2, 3)), bits=4)
    with pytest.warns(UserWarning, match="neither activations nor weights given"):
        stelab.quantize_model(nn.Sequential(nn.Linear(2, 2)))


def test_hardtanh_follows_what_was_asked():
    model = nn.Sequential(nn.Linear(4, 4), nn.Hardtanh())
    with pytest.warns(UserWarning, match=r"1: Hardtanh\(-1, 1\) quantized as 1-bit sign"):
        q = stelab.quantize_activations(model, bits=2)
    assert q[1].config.forward == "sign" and q[1].config.bits == 1
    q = stelab.quantize_activations(model, bits=1, forward="sign", ste="approx_sign")  # asked for: kept, no warning
    assert q[1].config.ste == "approx_sign" and q[1].current_alpha() == 1.0
    clipped = nn.Sequential(nn.Linear(4, 4), nn.Hardtanh(0.0, 1.0))  # a clipped ReLU
    with pytest.raises(ValueError, match="give an override for it") as err:
        stelab.quantize_activations(clipped, bits=2)
    overrides = eval(str(err.value).split("e.g. overrides=")[1])  # the fix the error suggests works
    q = stelab.quantize_activations(clipped, bits=2, overrides=overrides)
    assert q[1].config.forward == "staircase" and q[1].current_alpha() == pytest.approx(1 / 3)  # top at 1


def test_summary_of_a_model_without_parameters():
    assert "no parameters" in stelab.summary(nn.Sequential(nn.ReLU())) and "nan" not in stelab.summary(
        nn.Sequential(nn.ReLU()))


def test_diagnose_bits_zero_is_an_error(tmp_path, capsys):
    assert main(["diagnose", "--model", "lenet5", "--checkpoint", str(tmp_path / "x.pt"), "--bits", "0",
                 "--synthetic", "64", "--out", str(tmp_path / "d")]) == 2
    assert "--bits: bits must be in 1..16, got 0" in capsys.readouterr().err


def test_help_shows_defaults_without_markup(capsys):
    for command in (["classify"], ["reproduce", "table1"], ["diagnose"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert "``" not in text and ":math:" not in text and ":mod:" not in text, command
        assert "(default: " in text, command
    with pytest.raises(SystemExit):
        main(["classify", "--help"])
    assert "(default: 2000)" in " ".join(capsys.readouterr().out.split())  # --steps


def test_download_into_an_unwritable_folder_blames_the_folder(tmp_path, capsys, monkeypatch):
    # root writes into read-only folders, so the probe stelab uses (a real file creation) is made to fail here
    import stelab.io

    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(stelab.io, "_can_create_in", lambda path: False)
    assert main(["data", "download", "mnist", "--data-dir", str(folder), "--mirror", "file:///nowhere/"]) == 2
    err = capsys.readouterr().err
    assert "cannot write in" in err and "--data-dir" in err and "mirror" not in err
