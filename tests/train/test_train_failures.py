"""What a damaged or mistaken run folder does: one-line errors, no lost records, no blocked reruns."""

from __future__ import annotations

import json
import os

import pytest
import torch

from stelab.cli import main
from stelab.io import read_jsonl, write_text
from stelab.train import TrainConfig, train
from stelab.train.runs import SUMMARY

TINY = ["--synthetic", "64", "--batch-size", "32", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 1-epoch LeNet-5 run (synthetic data), shared read-only by the tests below."""
    out = tmp_path_factory.mktemp("runs") / "lenet"
    assert main(["train", *TINY, "--bits", "2", "--out", str(out)]) == 0
    return out


def test_a_damaged_metrics_line_keeps_every_other_record(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_text(path, '{"kind": "epoch", "epoch": 1}\n{"kind": "ep\n{"kind": "epoch", "epoch": 2}\n3\n')
    with pytest.warns(UserWarning) as caught:
        records = read_jsonl(path)
    assert [str(w.message).rsplit("/", 1)[-1] for w in caught] == [
        "metrics.jsonl:2: not a JSON record, skipped", "metrics.jsonl:4: not a JSON record, skipped"]
    assert records == [{"kind": "epoch", "epoch": 1}, {"kind": "epoch", "epoch": 2}]


@pytest.mark.parametrize("damage", ["truncate", "empty", "random", "zeros"])
def test_an_unreadable_checkpoint_is_one_line(finished, tmp_path, capsys, damage):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (run / name).write_bytes((finished / name).read_bytes())
    blob = (finished / "checkpoint.pt").read_bytes()
    data = {"truncate": blob[: len(blob) // 2], "empty": b"", "random": os.urandom(4096), "zeros": bytes(4096)}
    (run / "checkpoint.pt").write_bytes(data[damage])
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is not a readable torch checkpoint" in err and "checkpoint.pt" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["diagnose", str(run), "--batches", "2", "--synthetic", "64", "--out", str(tmp_path / "d")]) == 2
    assert "is not a readable torch checkpoint" in capsys.readouterr().err


def test_init_from_another_model_or_file_names_the_problem(finished, tmp_path, capsys):
    argv = ["train", *TINY[:-1], "--model", "resnet20", "--dataset", "cifar10", "--init", str(finished),
            "--out", str(tmp_path / "r")]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds the weights of model 'lenet5'" in err and "--model lenet5" in err and "Traceback" not in err
    assert main(["train", *TINY, "--init", str(finished / "metrics.jsonl"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl is not a readable torch checkpoint" in err and "Traceback" not in err


def test_a_run_that_diverges_before_its_first_epoch_does_not_block_the_rerun(tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(["train", *TINY, "--lr", "1e38", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "no epoch was trained" in err and "last good checkpoint" not in err
    assert main(["train", *TINY, "--lr", "1e38", "--resume", "--out", str(out)]) == 3  # nothing to resume
    assert "rerun without --resume" in capsys.readouterr().err
    assert main(["train", *TINY, "--lr", "0.01", "--out", str(out)]) == 0  # the corrected rerun
    assert json.loads((out / SUMMARY).read_text())["status"] == "finished"
    assert not [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "diverged"]


def test_a_last_batch_of_one_image_joins_the_batch_before(tmp_path, capsys):
    # 129 images at batch 128: the lone last image crashed LeNet-5's BatchNorm1d after a full epoch.
    out = tmp_path / "odd"
    summary = train(TrainConfig(model="lenet5", synthetic=129, batch_size=128, epochs=1, out=str(out)),
                    progress=False)
    assert summary["status"] == "finished" and summary["steps"] == 1
    assert "the last batch of 1 image joins the batch before it" in capsys.readouterr().err


def test_resume_longer_of_a_finished_run_names_init(finished, capsys):
    assert main(["train", "--resume", "--out", str(finished), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert f"stelab train --init {finished} --epochs 3" in err


def test_train_does_not_overwrite_another_commands_report(tmp_path, capsys):
    out = tmp_path / "theory"
    out.mkdir()
    (out / "report.md").write_text("# another command's report\n")
    assert main(["train", *TINY, "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "report.md").read_text() == "# another command's report\n"
    assert main(["train", *TINY, "--out", str(out), "--force"]) == 0


def test_a_killed_write_leaves_no_temporary_behind_on_the_next_start(tmp_path, capsys):
    out = tmp_path / "killed"
    out.mkdir()
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"")  # what kill -9 during a checkpoint write leaves
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert not list(out.glob(".*.tmp"))
    assert "removed .checkpoint.pt.abc123.tmp" in capsys.readouterr().err


def test_a_learned_alpha_that_turns_nan_ends_the_run_as_diverged(tmp_path, monkeypatch):
    from stelab.activations.modules import QuantReLU

    real = QuantReLU.forward

    def poisoned(self, x):
        with torch.no_grad():
            self.alpha.fill_(float("nan"))
        return real(self, x)

    monkeypatch.setattr(QuantReLU, "forward", poisoned)
    out = tmp_path / "nan-alpha"
    summary = train(TrainConfig(model="lenet5", synthetic=64, batch_size=32, epochs=1, out=str(out),
                                quant=TrainConfig().quant.replace(learn_alpha=True)), progress=False)
    assert summary["status"] == "diverged"
    (record,) = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "diverged"]
    assert "learned resolution" in record["reason"] and "step 1" in record["reason"] and ".alpha" in record["reason"]


def test_a_learned_resolution_starts_from_a_float_or_fixed_run(finished, tmp_path):
    """A learned alpha is not in a float or fixed-resolution checkpoint: the layer keeps its initial value, and the
    run starts (before: 'N missing tensors, e.g. ...act.alpha')."""
    out = tmp_path / "learned"
    assert main(["train", *TINY, "--bits", "2", "--learn-alpha", "--alpha-rule", "pact", "--init", str(finished),
                 "--out", str(out)]) == 0
    assert main(["train", *TINY, "--float", "--out", str(tmp_path / "float")]) == 0
    assert main(["train", *TINY, "--bits", "2", "--learn-alpha", "--init", str(tmp_path / "float"),
                 "--out", str(tmp_path / "from-float")]) == 0


def test_a_bad_resolution_the_call_did_not_check_is_caught_with_the_loss(tmp_path, monkeypatch):
    """On a GPU a call does not read its learned alpha (that would be a sync per layer and step): the loop checks
    every learned resolution on the device, in the sync it makes for the loss. Simulated here by turning the
    per-call check off."""
    import stelab.activations.ops as ops
    from stelab.activations.modules import QuantReLU
    from stelab.train.resolutions import bad_resolutions, learned_resolutions, resolutions_ok

    real = QuantReLU.forward

    def poisoned(self, x):
        with torch.no_grad():
            self.alpha.fill_(-0.5)
        return real(self, x)

    import stelab.train.resolutions as resolutions

    monkeypatch.setattr(ops, "check_alpha", lambda value: value)  # as for a GPU alpha: not read per call
    monkeypatch.setattr(resolutions, "PER_CALL_CHECKED", ())  # ... so the loop checks it
    monkeypatch.setattr(QuantReLU, "forward", poisoned)
    out = tmp_path / "negative-alpha"
    summary = train(TrainConfig(model="lenet5", synthetic=64, batch_size=32, epochs=1, out=str(out),
                                quant=TrainConfig().quant.replace(learn_alpha=True)), progress=False)
    assert summary["status"] == "diverged"
    (record,) = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "diverged"]
    assert "left the positive numbers at step 1" in record["reason"] and ".alpha" in record["reason"]
    model = torch.nn.Sequential(QuantReLU(learn_alpha=True), QuantReLU(learn_alpha=True))
    assert len(learned_resolutions(model)) == 2  # PER_CALL_CHECKED is empty here
    assert bool(resolutions_ok(learned_resolutions(model))) and bad_resolutions(model) == ""
    with torch.no_grad():
        model[1].alpha.fill_(float("nan"))
    assert not bool(resolutions_ok(learned_resolutions(model))) and bad_resolutions(model) == "; bad: 1.alpha"


def test_a_results_folder_with_model_pt_starts_a_run(finished, tmp_path):
    """A folder committed under results/ keeps the weights alone as model.pt: as --init it loads those."""
    import shutil

    from stelab.train import load_checkpoint

    folder = tmp_path / "committed"
    folder.mkdir()
    torch.save(load_checkpoint(finished / "checkpoint.pt")["model"], folder / "model.pt")
    shutil.copy(finished / "config.json", folder / "config.json")
    assert main(["train", *TINY, "--bits", "2", "--init", str(folder), "--out", str(tmp_path / "r")]) == 0
