"""Where the data sets live, and the errors a reader raises when a file is missing or damaged."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "STELAB_DATA"
# src/stelab/data/paths.py -> the repository root is three levels above this package.
REPO_ROOT = Path(__file__).resolve().parents[3]


class DataFormatError(ValueError):
    """A data file exists but is not what its format promises (bad magic number, truncated, wrong shape, ...)."""


def download_hint(dataset: str, data_dir: str | os.PathLike | None = None) -> str:
    where = f" --data-dir {data_dir}" if data_dir is not None else ""
    return f"run `stelab data download {dataset}{where}` (or set {ENV_VAR} to a folder that holds it)"


def repair_hint(dataset: str, data_dir: str | os.PathLike) -> str:
    """The command that replaces a damaged file: ``download`` re-fetches whatever fails its published checksum."""
    return f"run `stelab data download {dataset} --data-dir {data_dir}` to fetch it again"


def candidate_dirs() -> list[Path]:
    """The default search order after an explicit argument: ``$STELAB_DATA``, ``<repo>/../shared/data``, ``./data``."""
    out = []
    if os.environ.get(ENV_VAR):
        out.append(Path(os.environ[ENV_VAR]).expanduser())
    out += [REPO_ROOT.parent / "shared" / "data", Path.cwd() / "data"]
    return out


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$STELAB_DATA``, ``<repo root>/../shared/data``, ``./data``.

    An explicit ``data_dir`` or ``$STELAB_DATA`` that does not exist is an error rather than a silent fall-through,
    so a typo never makes a run quietly read another copy of the data.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data directory {str(path)!r} does not exist; {download_hint('mnist', path)}")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={env!r} is not a directory; unset it or point it at the data folder")
        return path
    tried = candidate_dirs()
    for path in tried:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        "no data directory found; tried " + ", ".join(str(p) for p in tried)
        + f". Pass --data-dir DIR, set {ENV_VAR}=DIR, or download with `stelab data download mnist|cifar10 "
        "--data-dir DIR`"
    )
