"""Users' STEs from outside the package: ``--import FILE_OR_MODULE`` on every command, and installed packages' entry
points, so that an STE registered there works everywhere a built-in one does.

Three ways in, one registry (:mod:`stelab.ste`):

- in code: ``stelab.ste.register("my_ste", ...)`` before use;
- ``stelab --import my_stes.py <command> ...`` (or ``--import mypkg.stes``, anywhere on the command line, repeatable):
  the file or module runs first, and its ``register`` calls are what it contributes. The sources are also written to
  ``$STELAB_IMPORT`` (``os.pathsep``-separated), which the registry reads on first use, so that the processes a
  command starts (``--nproc``, ``--jobs``, a local Ray cluster) register the same STEs; setting the variable by hand
  does the same for any process;
- an installed package that declares ``[project.entry-points."stelab.stes"] name = "mypkg.stes"`` (a module, whose
  import registers; or a function, which is called): loaded on the registry's first use, with no flag. A broken
  entry point is reported in one warning naming it and its error, and the other STEs stay usable.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path

ENV = "STELAB_IMPORT"
GROUP = "stelab.stes"
_done: set[str] = set()  # sources imported in this process (a file by its resolved path)


class ImportSourceError(ValueError):
    """An ``--import`` source that is missing or raised while it ran."""


def _key(spec: str) -> str:
    return str(Path(spec).resolve()) if _is_file(spec) else spec


def _module_name(key: str) -> str:
    """A file's module name, the same in every process (so that what it defines pickles between them)."""
    return f"stelab_user_{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or Path(spec).is_file()


def import_source(spec: str) -> None:
    """Run ``spec``, a Python file (``my_stes.py``) or an importable module (``mypkg.stes``), once per process.

    Raises :class:`ImportSourceError` naming the source and the exception it raised."""
    key = _key(spec)
    if key in _done:
        return
    try:
        if _is_file(spec):
            path = Path(spec)
            if not path.is_file():
                raise FileNotFoundError(f"no such file {path}")
            name = _module_name(key)
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
            sys.modules[name] = module  # dataclasses and pickling look their module up here
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            importlib.import_module(spec)
    except Exception as err:
        sys.modules.pop(_module_name(key), None)
        run = f"python {spec}" if _is_file(spec) else f'python -c "import {spec}"'
        raise ImportSourceError(f"--import {spec}: {type(err).__name__}: {err} (run '{run}' for the whole "
                                "traceback)") from None
    _done.add(key)


def import_sources(specs: list[str]) -> None:
    """:func:`import_source` each of ``specs`` and add them to ``$STELAB_IMPORT`` for the processes started later (a
    file by its absolute path, since a worker may start in another folder)."""
    known = [s for s in os.environ.get(ENV, "").split(os.pathsep) if s]
    for spec in specs:
        import_source(spec)
        entry = _key(spec)
        if entry not in known:
            known.append(entry)
    if known:
        os.environ[ENV] = os.pathsep.join(known)


def load_external() -> None:
    """Called once by the registry after the built-ins: the sources of ``$STELAB_IMPORT``, then the entry points of
    the ``stelab.stes`` group. A failing entry point is a warning (an installed package must not break every
    command); a failing ``$STELAB_IMPORT`` source is an error, as ``--import`` is."""
    from importlib.metadata import entry_points  # here: 50 ms that `stelab --version` need not pay

    for spec in (s for s in os.environ.get(ENV, "").split(os.pathsep) if s):
        import_source(spec)
    for ep in entry_points(group=GROUP):
        try:
            loaded = ep.load()
            if callable(loaded):
                loaded()
        except Exception as err:  # one broken plugin: say which and go on
            warnings.warn(f"STE entry point {ep.name!r} ({ep.value}) of group {GROUP!r} failed and was skipped: "
                          f"{type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
