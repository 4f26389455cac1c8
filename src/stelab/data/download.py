"""``stelab data download``: fetch the official archives over HTTPS, verify their MD5, write atomically, extract.

Every file is streamed into a temporary sibling of its destination and renamed into place only after its checksum
matches, so an interrupted, truncated or corrupted download leaves nothing behind. Checksums are the ones published
with the data sets (and used by torchvision). Readers never require local copies to match them (they validate
structure instead); ``download`` does: a file present with the wrong checksum, or an extracted CIFAR-10 file that
is missing or fails its checksum, is fetched again. So the command the readers' error messages name repairs the
damaged file instead of reporting "ready".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import unknown_name
from ..io import check_out_dir
from .paths import ENV_VAR, DataFormatError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """Where a data set comes from: mirrors (URL prefixes tried in order) and ``(file name, md5)`` pairs.

    ``folder`` is the subfolder of the data root the files go to; ``extract`` names the folder a tar archive
    unpacks to (the archive itself is deleted after a successful extraction). ``members`` are ``(file name, md5)``
    of the extracted files: an extracted folder is only kept when every one of them is present and intact.
    """

    mirrors: tuple[str, ...]
    files: tuple[tuple[str, str], ...]
    folder: str
    extract: str | None = None
    members: tuple[tuple[str, str], ...] = ()


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
        members=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                 ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                 ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                 ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                 ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                 ("test_batch", "40351d587109b95175f43aff81a1287e"),
                 ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888")),
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
        raise DataFormatError(f"{archive}: cannot extract ({err}); run the download again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def default_download_dir() -> Path:
    """``$STELAB_DATA`` if set, else ``./data`` (the shared read-only copy is never a download target)."""
    return Path(os.environ.get(ENV_VAR) or "data").expanduser()


def download(name: str, data_dir: str | os.PathLike | None = None, *, mirrors: tuple[str, ...] = (),
             opener: Opener = urllib.request.urlopen, force: bool = False, progress: bool = True) -> Path:
    """Download data set ``name`` into ``data_dir`` (default :func:`default_download_dir`); returns its folder.

    Files already present with the right checksum are kept, and so is an extracted folder whose files all match
    their checksums (unless ``force``); anything missing or damaged is fetched again. ``mirrors`` are URL prefixes
    tried before the built-in ones.
    """
    if name not in SOURCES:
        raise unknown_name("data set", name, SOURCES)
    source = SOURCES[name]
    root = Path(data_dir).expanduser() if data_dir is not None else default_download_dir()
    if source.extract and (root / source.extract).is_dir() and not force:
        damaged = _damaged(root / source.extract, source.members)
        if not damaged:
            return root / source.extract
        print(f"{name}: {', '.join(damaged)} in {root / source.extract} missing or corrupt (checksum); "
              "fetching the archive again", file=sys.stderr)
    for filename, md5 in source.files:
        dest = root / source.folder / filename
        if force or _damaged(dest.parent, ((filename, md5),)):
            if dest.is_file() and not force:
                print(f"{name}: {dest} fails its published checksum; fetching it again", file=sys.stderr)
            # before any mirror is tried: an unwritable folder is the folder's fault, not the mirrors'
            check_out_dir(dest.parent, flag="--data-dir")
            _fetch_any(filename, dest, md5, (*mirrors, *source.mirrors), opener, progress)
        if source.extract:
            _extract(dest, root, source.extract)
            dest.unlink()
    return root / (source.extract or source.folder)


def _damaged(folder: Path, files: tuple[tuple[str, str], ...]) -> list[str]:
    """Names of ``files`` that are missing from ``folder`` or whose MD5 is not the published one."""
    return [name for name, md5 in files if not (folder / name).is_file() or md5_of(folder / name) != md5]


def _fetch_any(filename: str, dest: Path, md5: str, prefixes: tuple[str, ...], opener: Opener,
               progress: bool) -> Path:
    """Fetch ``filename`` from the first of ``prefixes`` that serves it with checksum ``md5``."""
    errors = []
    for prefix in prefixes:
        url = prefix.rstrip("/") + "/" + filename
        try:
            return fetch(url, dest, md5, opener=opener, progress=progress)
        except (OSError, DataFormatError) as err:  # URLError and HTTPError are OSErrors
            errors.append(str(err) if url in str(err) else f"{url}: {err}")
    raise FileNotFoundError(f"could not download {filename} from any mirror:\n  " + "\n  ".join(errors))
