"""The documentation site builds with no warning (``mkdocs build --strict``: broken links and anchors, docstrings
that do not render), and every tutorial runs as written, in order, on real MNIST data, producing the figure it ends
with."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
# a fenced block whose first line starts so is shown and parsed (tests/cli/test_doc_commands.py), not run here
NOT_RUN = re.compile(r"^# on a (cluster|GPU)")
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)


def nav_tutorials() -> list[Path]:
    """The tutorials in the order of the site's navigation (later ones use earlier ones' runs)."""
    return [ROOT / "docs" / p for p in re.findall(r"(tutorials/[\w-]+\.md)", (ROOT / "mkdocs.yml").read_text())]


def test_the_navigation_lists_every_tutorial():
    assert sorted(nav_tutorials()) == sorted(TUTORIALS.glob("*.md"))


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    site = tmp_path / "site"
    gallery = (site / "gallery" / "stes" / "index.html").read_text()
    import stelab

    for name in stelab.ste.names():  # drawn from the registry: every STE, with its plot
        assert f"<code>{name}</code>" in gallery, name
        assert (site / "gallery" / "stes" / f"{name}.png").stat().st_size > 5000
    assert (site / "reproduction" / "index.html").is_file() and (site / "index.html").is_file()


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"`{shlex.join(argv)}` failed:\n{done.stderr[-3000:]}"


def test_every_tutorial_runs_and_makes_its_figure(tmp_path, shared_data_dir):
    pytest.importorskip("onnxruntime")
    env = {**os.environ, "STELAB_DATA": str(shared_data_dir), "MPLBACKEND": "Agg", "STELAB_IMPORT": ""}
    for tutorial in nav_tutorials():
        text = tutorial.read_text()
        for kind, body in BLOCK.findall(text):
            first = body.splitlines()[0]
            if kind == "python":
                name = re.match(r"# (\w+\.py)$", first)
                assert name, f"{tutorial.name}: a python block starts with '# file.py' (the file the reader saves)"
                (tmp_path / name.group(1)).write_text(body)
                continue
            if NOT_RUN.match(first):
                continue
            for line in body.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line.startswith("python "):
                    _run([sys.executable, *shlex.split(line)[1:]], tmp_path, env)
                elif line.startswith("stelab "):
                    _run([sys.executable, "-m", "stelab", *shlex.split(line)[1:]], tmp_path, env)
        figure = re.search(r"<!-- figure: (\S+) -->\n!\[[^\]]*\]\(([^)]+)\)\s*$", text)
        assert figure, f"{tutorial.name} ends with the figure it produces (<!-- figure: RUN_PATH --> and its image)"
        assert (tmp_path / figure.group(1)).stat().st_size > 5000, f"{tutorial.name}: {figure.group(1)} not made"
        assert (tutorial.parent / figure.group(2)).is_file()


def _hooks():
    pytest.importorskip("mkdocs")
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rest_math_and_roles_become_markdown():
    hooks = _hooks()
    text = "A :math:`x^2` and :class:`~stelab.ste.STE`, ``code``.\n\n    .. math::  y = q(x), \\qquad a\n" \
           "               + b\n\n    rest"
    want = "A $x^2$ and `stelab.ste.STE`, ``code``.\n\n    $$\n    y = q(x), \\qquad a + b\n    $$\n\n    rest"
    assert hooks.rst_to_markdown(text) == want


def test_the_gallery_shows_a_users_ste_with_no_docs_edit():
    import stelab
    from stelab.ste import Piecewise

    hooks = _hooks()
    stelab.ste.register("gallery_probe", piecewise=lambda slope=0.3: Piecewise((0.0,), (slope, 1.0)))
    try:
        files = dict(hooks.gallery_files())
    finally:
        stelab.ste.unregister("gallery_probe")
    page = files["gallery/stes.md"]
    assert "## `gallery_probe`" in page and 'ste="gallery_probe(slope=0.3)"' in page and "`(0.3, 1.0)`" in page
    assert files["gallery/stes/gallery_probe.png"][:4] == b"\x89PNG"
    assert {f"gallery/quantizers/{n}.png" for n in stelab.quantizers.names()} <= set(files)
