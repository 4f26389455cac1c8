"""``stelab train`` defaults and recoveries: the rate follows how the run starts, the run folder is printed,
``--resume`` takes its settings from config.json, model/data mismatches and failed starts never block a re-run."""

from __future__ import annotations

import pytest

from stelab.activations.config import QuantConfig
from stelab.cli import main
from stelab.io import read_json
from stelab.train import TrainConfig, train
from stelab.train.runs import SUMMARY, read_config

TINY = ["--synthetic", "64", "--batch-size", "32", "--epochs", "1", "--no-progress"]


def test_rate_follows_how_the_run_starts():
    assert TrainConfig(quant=QuantConfig(bits=2)).resolved_lr() == 0.1  # quantized from scratch: the from-scratch rate
    assert TrainConfig(quant=None).resolved_lr() == 0.1
    assert TrainConfig(quant=QuantConfig(bits=2), init="runs/float").resolved_lr() == 0.01  # fine-tuning
    assert TrainConfig(quant=QuantConfig(bits=2), init="runs/float", lr=0.3).resolved_lr() == 0.3


def test_train_prints_rate_with_reason_and_run_folder(tmp_path, capsys):
    out = tmp_path / "scratch"
    assert main(["train", *TINY, "--bits", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"stelab train: writing to {out}"
    assert lines[1].startswith("stelab train: initial learning rate 0.1 (from-scratch rate: no --init")
    assert lines[-1] == f"stelab train: run folder {out}"
    tuned = tmp_path / "tuned"
    assert main(["train", *TINY, "--init", str(out), "--out", str(tuned)]) == 0
    assert f"learning rate 0.01 (fine-tuning rate: the run starts from the trained model {out}" in \
        capsys.readouterr().out


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--model", "lenet5"), ("--dataset", "mnist"), ("--bits", "2"), ("--ste", "clipped_relu")):
        section = text.rsplit(f"{flag} {flag.strip('-').upper()}", 1)[1][:120]  # the option, not the usage
        assert f"default {default}" in section, (flag, section)


def test_resume_reads_the_saved_config(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--synthetic", "64", "--batch-size", "32", "--epochs", "2", "--bits", "4", "--ste", "relu",
            "--seed", "3", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    (out / SUMMARY).unlink()  # as if the run had been killed: unfinished, resumable
    config = read_config(out).flat_dict()
    # Flags optional: only --out (and a runtime flag) given, the run continues with its own settings.
    assert main(["train", "--resume", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert read_config(out).flat_dict() == {**config, "device": "cpu"}
    assert read_json(out / SUMMARY)["bits"] == 4
    capsys.readouterr()
    # A flag that is given and differs names itself -- even when its value is the parser's default.
    assert main(["train", "--resume", "--out", str(out), "--bits", "2"]) == 2
    err = capsys.readouterr().err
    assert "--bits gives bits=2" in err and "has 4" in err and "Traceback" not in err
    assert main(["train", "--resume", "--out", str(out), "--bits", "4", "--seed", "3", "--no-progress"]) == 0


def test_resume_of_a_missing_folder_is_an_error(tmp_path, capsys):
    out = tmp_path / "never-started"
    assert main(["train", *TINY, "--resume", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()  # no fresh run started in its place


@pytest.mark.parametrize("model, dataset", [("lenet5", "cifar10"), ("resnet20", "mnist"), ("vgg11", "mnist")])
def test_model_dataset_mismatch_fails_before_anything_is_created(model, dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--model", model, "--dataset", dataset, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"model {model} is built for" in err and f"--dataset {'mnist' if model == 'lenet5' else 'cifar10'}" in err
    assert not out.exists()
    fixed = "mnist" if model == "lenet5" else "cifar10"
    with pytest.raises(ValueError, match="built for"):
        TrainConfig(model=model, dataset=dataset)
    assert TrainConfig(model=model, dataset=fixed).dataset == fixed


class FailFirstStep:
    every = 1

    def __call__(self, **_):
        raise RuntimeError("out of memory")  # a start that fails after the folder was made


def test_a_failed_start_does_not_block_the_rerun(tmp_path):
    config = TrainConfig(synthetic=64, batch_size=32, epochs=1, out=str(tmp_path / "run"))
    with pytest.raises(RuntimeError):
        train(config, hooks=[FailFirstStep()], progress=False)
    assert (tmp_path / "run" / "config.json").is_file()  # the folder exists, with nothing trained in it
    assert train(config.replace(seed=1), progress=False)["status"] == "finished"  # corrected re-run, no --resume
    with pytest.raises(ValueError, match="already holds a run"):  # a trained epoch is never overwritten
        train(config.replace(seed=1), progress=False)


class InterruptSecondEpoch:
    every = 1

    def __call__(self, *, step, **_):
        if step == 3:  # the 1st step of epoch 2 (2 steps per epoch)
            raise KeyboardInterrupt


def test_trained_epochs_without_their_checkpoint_are_refused(tmp_path):
    config = TrainConfig(synthetic=64, batch_size=32, epochs=2, out=str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        train(config, hooks=[InterruptSecondEpoch()], progress=False)
    run = tmp_path / "run"
    (run / "checkpoint.pt").unlink()  # lost, e.g. a folder copied without its weights
    before = (run / "metrics.jsonl").read_text()
    for resume in (True, False):  # neither a silent restart at epoch 1 nor a fresh start over the records
        with pytest.raises(ValueError, match=r"1 trained epoch\(s\) in metrics.jsonl but has no checkpoint.pt"):
            train(config, resume=resume, progress=False)
    assert (run / "metrics.jsonl").read_text() == before


def test_other_commands_check_the_pair_first(tmp_path, capsys):
    out = tmp_path / "table"
    assert main(["reproduce", "table1", "--dataset", "cifar10", "--models", "vgg11", "lenet5", "--synthetic", "64",
                 "--out", str(out)]) == 2  # lenet5 is refused before vgg11's runs start
    assert "model lenet5 is built for mnist" in capsys.readouterr().err and not out.exists()
    assert main(["reproduce", "instability", "--model", "resnet20", "--out", str(out)]) == 2  # default mnist
    assert "model resnet20 is built for cifar10" in capsys.readouterr().err
    import torch

    from stelab import models

    torch.save(models.build("lenet5").state_dict(), tmp_path / "w.pt")
    assert main(["diagnose", "--model", "lenet5", "--checkpoint", str(tmp_path / "w.pt"), "--dataset", "cifar10",
                 "--synthetic", "64", "--out", str(tmp_path / "d")]) == 2
    assert "model lenet5 is built for mnist" in capsys.readouterr().err


def test_learned_activation_resolution_from_the_command_line(tmp_path, capsys):
    """--learn-alpha/--alpha-rule reach TrainConfig.quant, name the run, train the resolution, and --resume checks
    them like the other quantization flags."""
    import torch

    from stelab.train import load_model_from_run, read_config

    out = tmp_path / "learned"
    assert main(["train", *TINY, "--bits", "2", "--learn-alpha", "--alpha-rule", "lsq", "--alpha", "0.5",
                 "--out", str(out)]) == 0
    quant = read_config(out).quant
    assert (quant.learn_alpha, quant.alpha_rule, quant.alpha) == (True, "lsq", 0.5)
    assert read_config(out).run_kind() == "2bit-clipped_relu-learned_lsq"
    alphas = [p for name, p in load_model_from_run(out).named_parameters() if "alpha" in name]
    assert alphas and any(not torch.allclose(a, torch.tensor(0.5)) for a in alphas)  # trained away from 0.5
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--learn-alpha", "--alpha-rule", "pact"]) == 2
    assert "--alpha-rule gives alpha_rule='pact'" in capsys.readouterr().err
    assert main(["train", *TINY, "--bits", "2", "--learn-alpha", "--alpha-rule", "nope",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "valid choices: ae, lsq, mean, min, pact" in capsys.readouterr().err
    # a rule without a learned resolution would be ignored: an error, not silence
    assert main(["train", *TINY, "--bits", "2", "--alpha-rule", "pact", "--out", str(tmp_path / "fixed")]) == 2
    assert "give --learn-alpha too" in capsys.readouterr().err
    assert not (tmp_path / "fixed").exists()
