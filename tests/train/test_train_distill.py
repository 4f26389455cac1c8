"""``--distill``: the loss of a student taught by a float teacher, checked against a numpy formula; a teacher that
does not fit the model is refused before any folder or epoch; a distilled run resumes as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stelab.cli import main
from stelab.io import read_json
from stelab.train import TrainConfig, train
from stelab.train.distill import kd_loss
from stelab.train.runs import read_config

TINY = ["--synthetic", "64", "--batch-size", "32", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "float"
    assert main(["train", *TINY, "--float", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("t, w", [(1.0, 0.0), (4.0, 0.5), (2.5, 1.0)])
def test_the_loss_is_the_formula(t, w):
    rng = np.random.default_rng(0)
    zs, zt = rng.standard_normal((5, 10)), rng.standard_normal((5, 10))
    y = rng.integers(0, 10, 5)

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    ce = -log_softmax(zs)[np.arange(5), y].mean()
    q, log_p = np.exp(log_softmax(zt / t)), log_softmax(zs / t)
    kl = (q * (np.log(q) - log_p)).sum(1).mean()
    expected = (1 - w) * ce + w * t * t * kl
    got = kd_loss(torch.tensor(ce), torch.tensor(zs), torch.tensor(zt), t, w)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # its gradient reaches the student only
    s = torch.tensor(zs, requires_grad=True)
    kd_loss(torch.nn.functional.cross_entropy(s, torch.tensor(y)), s, torch.tensor(zt), t, w).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_a_distilled_run_trains_records_its_teacher_and_resumes(teacher, tmp_path):
    out = tmp_path / "student"
    argv = ["train", *TINY[:-3], "--epochs", "2", "--no-progress", "--bits", "2", "--init", str(teacher),
            "--distill", str(teacher), "--distill-temperature", "3", "--distill-weight", "0.7", "--out", str(out)]
    assert main(argv) == 0
    config = read_config(out)
    assert (config.distill, config.distill_temperature, config.distill_weight) == (str(teacher), 3.0, 0.7)
    undistilled = config.replace(distill=None, distill_temperature=4.0, distill_weight=0.5, out=str(tmp_path / "plain"))
    plain = train(undistilled, progress=False)
    assert read_json(out / "results.json")["train_loss"] != plain["train_loss"]  # the teacher changed the loss
    (out / "results.json").unlink()  # as if killed after epoch 2's checkpoint: resuming keeps the teacher
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0


def test_a_teacher_of_another_model_is_refused_before_anything_is_made(teacher, tmp_path, capsys):
    out = tmp_path / "resnet"
    argv = ["train", *TINY, "--model", "resnet20", "--dataset", "cifar10", "--distill", str(teacher),
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds the weights of model 'lenet5'" in err and "Traceback" not in err
    assert not (out / "checkpoint.pt").exists()
    with pytest.raises(ValueError, match="distill_weight in \\[0, 1\\]"):
        TrainConfig(distill="x", distill_weight=1.5)
    with pytest.raises(ValueError, match="there is no teacher; give --distill TEACHER"):  # not silently ignored
        TrainConfig(distill_temperature=2.0)


def test_the_curves_say_what_the_training_loss_is(teacher, tmp_path):
    """With --distill the training loss is the distillation objective, not the cross-entropy: the plot says so, and
    its title names the learned resolution and the teacher."""
    from stelab.train.runs import describe_run

    out = tmp_path / "kd"
    assert main(["train", *TINY, "--bits", "2", "--learn-alpha", "--alpha-rule", "lsq", "--distill", str(teacher),
                 "--out", str(out)]) == 0
    title = describe_run(out)
    assert "learned alpha (lsq)" in title and "distilled" in title and (out / "curves.png").stat().st_size > 10_000
