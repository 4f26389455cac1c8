"""Every command that writes checks its output folder before computing: an --out that is a file, that cannot be
created, or a read-only folder is a one-line error with exit status 2; analysis commands refuse to overwrite an
existing report without --force. Also `stelab --version` and a reader that closes the pipe early."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from stelab import models
from stelab.cli import main
from stelab.io import check_out_dir


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "float.pt"
    torch.save(models.build("lenet5").state_dict(), path)
    return path


def command(name, out, checkpoint):
    """argv of a small run of command ``name`` writing to ``out``."""
    argvs = {
        "theory": ["theory", "--quick", "--no-progress"],
        "symmetry": ["symmetry", "--quick", "--no-progress"],
        "classify": ["classify", "--quick", "--no-progress"],
        "diagnose": ["diagnose", "--model", "lenet5", "--checkpoint", str(checkpoint), "--synthetic", "64",
                     "--batches", "2", "--batch-size", "16", "--no-progress"],
        "train": ["train", "--synthetic", "64", "--epochs", "1", "--no-progress"],
        "reproduce": ["reproduce", "table1", "--synthetic", "64", "--epochs-scale", "0.02", "--no-progress"],
    }
    return [*argvs[name], "--out", str(out)]


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody may write in (root ignores permission bits: then /sys, which is read-only to it too)."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        probe.touch()
        probe.unlink()
    except OSError:
        yield folder
        folder.chmod(0o755)
        return
    folder.chmod(0o755)
    if os.path.isdir("/sys") and _cannot_write("/sys"):
        yield type(tmp_path)("/sys")
        return
    pytest.skip("no read-only folder available (running as root without a read-only mount)")


def _cannot_write(folder):
    try:
        fd = os.open(os.path.join(folder, ".stelab-test-probe"), os.O_CREAT | os.O_WRONLY)
    except OSError:
        return True
    os.close(fd)
    os.unlink(os.path.join(folder, ".stelab-test-probe"))
    return False


WRITERS = ("theory", "symmetry", "classify", "diagnose", "train", "reproduce")


def no_compute(monkeypatch):
    """Any training or analysis that starts is a test failure: the checks must come first."""
    import stelab.experiments.classify as classify
    import stelab.experiments.diagnose.run as diagnose_run
    import stelab.experiments.reproduce as reproduce
    import stelab.experiments.symmetry as symmetry
    import stelab.experiments.theory_lab as theory_lab
    import stelab.train as train

    def boom(*args, **kwargs):
        raise AssertionError("computation started before the output folder was checked")

    for module, name in ((theory_lab, "run_theory"), (symmetry, "run_symmetry"),
                         (classify, "run_synthetic"), (diagnose_run, "gradient_fidelity"), (train, "train"),
                         (reproduce, "run_table1")):
        monkeypatch.setattr(module, name, boom)


@pytest.mark.parametrize("name", WRITERS)
def test_out_that_is_a_file_fails_before_any_work(name, tmp_path, checkpoint, capsys, monkeypatch):
    no_compute(monkeypatch)
    target = tmp_path / "taken"
    target.write_text("precious")
    assert main(command(name, target, checkpoint)) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == "precious"
    assert main(command(name, target / "sub", checkpoint)) == 2  # a path below a file cannot be created either
    assert "cannot be created" in capsys.readouterr().err


@pytest.mark.parametrize("name", WRITERS)
def test_read_only_out_fails_before_any_work(name, readonly_dir, checkpoint, capsys, monkeypatch):
    no_compute(monkeypatch)
    assert main(command(name, readonly_dir / "run", checkpoint)) == 2
    err = capsys.readouterr().err
    assert "cannot write in" in err and "Traceback" not in err


@pytest.mark.parametrize("name, report", [("theory", "report.md"), ("symmetry", "results.json"),
                                          ("classify", "classify.md"), ("diagnose", "report.md")])
def test_analysis_commands_refuse_to_overwrite_a_report(name, report, tmp_path, checkpoint, capsys, monkeypatch):
    no_compute(monkeypatch)
    out = tmp_path / "done"
    out.mkdir()
    (out / report).write_text("the full report")
    assert main(command(name, out, checkpoint)) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / report).read_text() == "the full report"


def test_force_overwrites_a_report(tmp_path, checkpoint):
    out = tmp_path / "done"
    out.mkdir()
    (out / "report.md").write_text("old")
    assert main([*command("diagnose", out, checkpoint), "--widths", "0.5", "--force"]) == 0
    assert (out / "report.md").read_text() != "old"


def test_check_out_dir_accepts_new_and_empty_folders(tmp_path):
    assert check_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # a check creates nothing
    assert check_out_dir(tmp_path, reports=("report.md",)) == tmp_path
    (tmp_path / "report.md").write_text("x")
    assert check_out_dir(tmp_path, reports=("report.md",), force=True) == tmp_path
    with pytest.raises(ValueError, match="already holds a report"):
        check_out_dir(tmp_path, reports=("report.md",))


def test_version(capsys):
    assert main(["--version"]) == 0  # answered before any parser is built (tests/test_package.py: no torch)
    from stelab import __version__

    assert capsys.readouterr().out.strip() == f"stelab {__version__}"


def test_info_into_a_closed_pipe_exits_quietly():
    """`stelab info | head -3`: the reader is gone before stelab writes; no BrokenPipeError traceback."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "stelab.cli", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # like `head` after its lines: writes now fail with EPIPE
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141
