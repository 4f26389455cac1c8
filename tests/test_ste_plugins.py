"""Users' STEs everywhere: parameterised piecewise tables, ``--import`` on the command line, ``$STELAB_IMPORT`` for
the processes a command starts, and installed packages' ``stelab.stes`` entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import stelab
from stelab.cli import main, take_imports
from stelab.ste import Piecewise

PLUGIN = textwrap.dedent('''
    import stelab
    from stelab.ste import Piecewise


    def soft_clip(slope: float = 0.2) -> Piecewise:
        """Clipped relu with a leaky tail above the top: mu' = 1 on (0, top], ``slope`` above."""
        return Piecewise((0.0, 1.0), (0.0, 1.0, float(slope)))


    stelab.ste.register("{name}", piecewise=soft_clip)
''')


@pytest.fixture
def plugin_file(tmp_path):
    """A user's file registering ``soft_clip_<n>`` (a fresh name per test: the registry is per process)."""
    name = f"soft_clip_{tmp_path.name[-12:].replace('-', '_')}"
    path = tmp_path / "my_stes.py"
    path.write_text(PLUGIN.format(name=name))
    yield path, name
    if name in stelab.ste.names():
        stelab.ste.unregister(name)


def test_a_parameterised_table_works_like_the_built_in_leaky_relu():
    def tail(slope: float = 0.5) -> Piecewise:
        return Piecewise((0.0, 1.0), (0.0, 1.0, float(slope)))

    stelab.ste.register("t_tail", piecewise=tail)
    try:
        ste = stelab.ste.get("t_tail(slope=0.25)")
        assert ste.piecewise == Piecewise((0.0, 1.0), (0.0, 1.0, 0.25)) and ste.params == {"slope": 0.25}
        assert stelab.ste.get("t_tail").piecewise.values == (0.0, 1.0, 0.5)  # the default
        assert ste.monotone and ste.zero_below and not ste.scale_invariant
        assert not stelab.ste.get("t_tail(slope=-1.0)").monotone  # derived from each table
        with pytest.raises(ValueError, match="no parameter.*its parameters: slope"):
            stelab.ste.get("t_tail(beta=1.0)")
        # the fused op runs it: dx = mu'(x) * dy, with the table's value in each region (top = 3 alpha at 2 bits)
        x = torch.tensor([-1.0, 0.5, 2.0, 4.0, 9.0], requires_grad=True)
        stelab.quantize(x, bits=2, alpha=1.0, ste="t_tail(slope=0.25)").sum().backward()
        assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.25, 0.25]
    finally:
        stelab.ste.unregister("t_tail")


def test_take_imports_finds_every_form():
    assert take_imports(["--import", "a.py", "info", "--import=b.mod", "--x", "--", "--import", "c"]) == (
        ["info", "--x", "--", "--import", "c"], ["a.py", "b.mod"])
    with pytest.raises(ValueError, match="needs a Python file or module"):
        take_imports(["info", "--import"])


def test_import_makes_a_users_ste_work_in_the_commands(plugin_file, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STELAB_IMPORT", raising=False)
    path, name = plugin_file
    assert main(["--import", str(path), "info"]) == 0
    assert name in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["train", "--model", "lenet5", "--synthetic", "128", "--epochs", "1", "--bits", "2", "--ste",
                 f"{name}(slope=0.3)", "--out", str(out), "--no-progress", "--import", str(path)]) == 0
    assert json.loads((out / "config.json").read_text())["activations"]["quant"]["ste"] == f"{name}(slope=0.3)"
    assert str(path.resolve()) in os.environ["STELAB_IMPORT"]  # for the processes a command starts


def test_a_failing_import_is_one_line_and_computes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    out = tmp_path / "run"
    assert main(["--import", str(bad), "train", "--synthetic", "64", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "RuntimeError: boom" in err and f"python {bad}" in err
    assert not out.exists()
    assert main(["info", "--import", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_unknown_ste_says_how_to_register_one():
    with pytest.raises(ValueError, match="valid choices.*stelab --import"):
        stelab.ste.get("my_own_ste")


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)


def test_entry_points_and_the_environment_variable_in_a_fresh_process(tmp_path, plugin_file):
    path, name = plugin_file
    # an installed package, as pip leaves it: a module and its dist-info with the entry point; and a broken one
    (tmp_path / "stelab_demo_plugin.py").write_text(PLUGIN.format(name="demo_soft_clip"))
    for dist, target in (("stelab_demo_plugin", "stelab_demo_plugin"), ("stelab_broken_plugin", "no_such_module")):
        info = tmp_path / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[stelab.stes]\n{dist} = {target}\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]), "STELAB_IMPORT": ""}
    done = _run("import stelab; print(stelab.ste.get('demo_soft_clip(slope=0.5)').piecewise)", env)
    assert done.returncode == 0, done.stderr
    assert "values=(0.0, 1.0, 0.5)" in done.stdout
    assert "'stelab_broken_plugin'" in done.stderr and "ModuleNotFoundError" in done.stderr  # said, then skipped
    done = _run(f"import stelab; print(stelab.ste.get('{name}').piecewise.values)", {"STELAB_IMPORT": str(path)})
    assert done.returncode == 0 and done.stdout.strip() == "(0.0, 1.0, 0.2)", done.stderr
