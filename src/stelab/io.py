"""Atomic file output, run folders, and :class:`JsonConfig` (typed configuration dataclasses that round-trip to JSON).

Every config in stelab derives from :class:`JsonConfig`: ``to_dict``/``from_dict`` and ``to_json``/``from_json``
give back an equal object, and ``from_dict`` rejects unknown keys with the list of valid ones, so a typo in a
config file is an error rather than a silently ignored setting.

Every result file is written to a temporary file in the same directory and renamed into place, so a run that is
killed at any moment leaves either the previous version of a file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results should be as readable as any other file
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_safe(obj: Any) -> Any:
    """Replace non-finite floats by strings ("nan", "inf") so the output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return _json_safe(obj.tolist())
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    with atomic_open(path) as f:
        json.dump(_json_safe(obj), f, indent=indent, allow_nan=False)
        f.write("\n")
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; a file that is not valid JSON raises ``ValueError`` naming it."""
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); restore it or remove the folder to start over") \
                from None


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line. A line is written with a single ``write`` call and fsynced, so a crash can at worst
    leave a truncated last line, which :func:`read_jsonl` skips."""
    line = json.dumps(_json_safe(record), allow_nan=False) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every valid record of a JSON-lines file (``[]`` if it is missing). A line that does not parse (a torn last
    line from a crash, or a damaged one) is skipped with a warning naming it; the records after it are kept."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                out.append(record)
            else:
                warnings.warn(f"{path}:{number}: not a JSON record, skipped", stacklevel=2)
    return out


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_open` leaves when its process is killed (``.<name>.*.tmp``);
    call it only where no other process is writing. Returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def epoch_axis(ax, epochs: list[int]) -> None:
    """Whole epochs on a plot's x axis; a single epoch gets one tick and a symmetric margin (not 0.6 .. 1.4)."""
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(set(epochs)) == 1:
        ax.set_xticks([epochs[0]])
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def make_run_dir(root: str | os.PathLike, name: str) -> Path:
    """``root/name``, created if missing."""
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (what a ``mkdir -p`` of ``path`` would start from)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def _can_create_in(folder: Path) -> bool:
    # A real probe, not os.access: it also sees read-only mounts, ACLs and root (for whom access() says yes).
    try:
        fd, tmp = tempfile.mkstemp(prefix=".stelab-probe.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


#: The report files every analysis command writes (``--force`` to overwrite them).
REPORTS = ("report.md", "results.json")


def check_out_dir(path: str | os.PathLike, *, reports: tuple[str, ...] = (), force: bool = False,
                  flag: str = "--out") -> Path:
    """Check, before any work is done, that ``path`` can become (or already is) a writable results folder.

    Nothing is created. ``reports`` are the files a command writes there: if one exists and ``force`` is false,
    refuse rather than overwrite a finished report. Raises ``ValueError`` with what is wrong and how to fix it.
    """
    path = Path(path).expanduser()
    base = _nearest_existing(path)
    if not base.is_dir():
        what = "is a file" if base == path else f"cannot be created: {base} is a file"
        raise ValueError(f"{flag} {path} {what}, not a folder; choose another {flag}")
    if not _can_create_in(base):
        raise ValueError(f"{flag} {path}: cannot write in {base} (permission denied or read-only); "
                         f"choose another {flag} or make {base} writable")
    existing = [name for name in reports if (path / name).exists()]
    if existing and not force:
        raise ValueError(f"{flag} {path} already holds a report ({', '.join(existing)}); pass --force to overwrite "
                         f"it or choose another {flag}")
    return path


T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin for dataclasses: JSON round-trip with strict keys. Validation lives in ``__post_init__``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        cls.check_fields(data)
        return cls(**data)

    @classmethod
    def check_fields(cls, names: Iterable[str]) -> None:
        """Raise ``ValueError`` listing the valid fields if any of ``names`` is not a field of this config."""
        # __dataclass_fields__ rather than dataclasses.fields(): torch.compile traces this (stelab.quantize) and
        # does not handle fields() of a class.
        valid = list(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        unknown = set(names) - set(valid)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; valid fields: {', '.join(valid)}")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
