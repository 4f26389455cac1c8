"""``stelab data download``: fetch the official archives over HTTPS, verify their MD5, write atomically, extract.

Every file is streamed into a temporary sibling of its destination and renamed into place only after its checksum
matches, so an interrupted, truncated or corrupted download leaves nothing behind. Checksums are the ones published
with the data sets (and used by torchvision); local copies are never required to match them (readers validate
structure instead), only what this module downloads.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import unknown_name
from .paths import ENV_VAR, DataFormatError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """Where a data set comes from: mirrors (URL prefixes tried in order) and ``(file name, md5)`` pairs.

    ``folder`` is the subfolder of the data root the files go to; ``extract`` names the folder a tar archive
    unpacks to (the archive itself is deleted after a successful extraction).
    """

    mirrors: tuple[str, ...]
    files: tuple[tuple[str, str], ...]
    folder: str
    extract: str | None = None


SOURCES: dict[str, Source] = {
    "mnist": Source(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        files=(("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
               ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
               ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
               ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
        folder="MNIST",
    ),
    "cifar10": Source(
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files=(("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
        folder="",
        extract="cifar-10-batches-py",
    ),
}

Opener = Callable[..., object]


def md5_of(path: str | os.PathLike) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # integrity against the published checksums, not security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, md5: str, *, opener: Opener = urllib.request.urlopen, timeout: float = 60.0,
          progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` if its MD5 is ``md5``; otherwise raise and leave ``dest`` untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest, size = hashlib.md5(usedforsecurity=False), 0
        with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
            bar = _progress(dest.name, int(total) if total else None, progress)
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                digest.update(block)
                size += len(block)
                bar.update(len(block))
            bar.close()
            out.flush()
            os.fsync(out.fileno())
        if total is not None and size != int(total):
            raise DataFormatError(f"{url}: received {size} of {total} bytes; the download was cut short, try again")
        if digest.hexdigest() != md5:
            raise DataFormatError(f"{url}: MD5 {digest.hexdigest()} does not match the published {md5}; the "
                                  f"download is corrupt or truncated (nothing was kept), try again or another mirror")
        os.replace(tmp, dest)
        return dest
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _progress(name: str, total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="B", unit_scale=True, disable=not enabled, leave=False)


def _extract(archive: Path, root: Path, folder: str) -> Path:
    """Unpack ``archive`` (which must only contain ``folder/...`` regular files) into ``root/folder`` atomically."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=root))
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if not parts or parts[0] != folder or ".." in parts or member.name.startswith("/") or not (
                        member.isfile() or member.isdir()):
                    raise DataFormatError(f"{archive}: unexpected archive member {member.name!r}; refusing to extract")
            # The members were vetted above; the "data" filter (Python >= 3.10.12) also drops odd permissions.
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, **kwargs)
        target = root / folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / folder, target)
        return target
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataFormatError(f"{archive}: cannot extract ({err}); delete it and download again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def default_download_dir() -> Path:
    """``$STELAB_DATA`` if set, else ``./data`` (the shared read-only copy is never a download target)."""
    return Path(os.environ.get(ENV_VAR) or "data").expanduser()


def download(name: str, data_dir: str | os.PathLike | None = None, *, mirrors: tuple[str, ...] = (),
             opener: Opener = urllib.request.urlopen, force: bool = False, progress: bool = True) -> Path:
    """Download data set ``name`` into ``data_dir`` (default :func:`default_download_dir`); returns its folder.

    Files already present with the right checksum are kept (and an extracted folder already present is kept
    unless ``force``). ``mirrors`` are URL prefixes tried before the built-in ones.
    """
    if name not in SOURCES:
        raise unknown_name("data set", name, SOURCES)
    source = SOURCES[name]
    root = Path(data_dir).expanduser() if data_dir is not None else default_download_dir()
    folder = root / source.folder
    if source.extract and (root / source.extract).is_dir() and not force:
        return root / source.extract
    for filename, md5 in source.files:
        dest = folder / filename
        if dest.is_file() and not force and md5_of(dest) == md5:
            continue
        errors = []
        for prefix in (*mirrors, *source.mirrors):
            url = prefix.rstrip("/") + "/" + filename
            try:
                fetch(url, dest, md5, opener=opener, progress=progress)
                break
            except (OSError, DataFormatError) as err:  # URLError and HTTPError are OSErrors
                errors.append(str(err) if url in str(err) else f"{url}: {err}")
        else:
            raise FileNotFoundError(f"could not download {filename} from any mirror:\n  " + "\n  ".join(errors))
        if source.extract:
            _extract(dest, root, source.extract)
            dest.unlink()
    return root / (source.extract or source.folder)
