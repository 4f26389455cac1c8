"""``stelab data download`` without network: archives the test builds, served from file:// URLs or a fake opener."""

import hashlib
import io
import tarfile

import numpy as np
import pytest

from stelab.cli import main
from stelab.data import DataFormatError, load_cifar10, load_mnist
from stelab.data import download as dl
from stelab.data.cifar10 import write_batch
from stelab.data.mnist import write_idx

MNIST_NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz")


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def serve_mnist(mirror):
    """Write tiny MNIST .gz files into ``mirror``; return their (name, md5) table."""
    rng = np.random.default_rng(0)
    for name in MNIST_NAMES:
        n = 5 if name.startswith("train") else 2
        shape = (n, 28, 28) if "images" in name else (n,)
        write_idx(mirror / name, rng.integers(0, 10, shape, dtype=np.uint8))
    return tuple((name, md5(mirror / name)) for name in MNIST_NAMES)


def leftovers(root):
    return sorted(p.name for p in root.rglob("*") if p.name.startswith("."))


@pytest.fixture
def mnist_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    files = serve_mnist(mirror)
    source = dl.Source(mirrors=(mirror.as_uri() + "/",), files=files, folder="MNIST")
    monkeypatch.setitem(dl.SOURCES, "mnist", source)
    return mirror


def test_download_mnist_from_file_url_then_load(tmp_path, mnist_mirror):
    target = tmp_path / "data"
    missing = (tmp_path / "no-such-mirror").as_uri()  # a dead mirror first: its error is skipped over
    assert dl.download("mnist", target, mirrors=(missing,), progress=False) == target / "MNIST"
    images, labels = load_mnist(target, "train")
    assert images.shape == (5, 1, 28, 28) and labels.shape == (5,)
    assert leftovers(target) == []
    before = (target / "MNIST" / MNIST_NAMES[0]).stat().st_mtime_ns
    dl.download("mnist", target, progress=False)  # present with the right checksum: kept
    assert (target / "MNIST" / MNIST_NAMES[0]).stat().st_mtime_ns == before


def test_corrupt_mirror_is_rejected_and_the_next_one_used(tmp_path, mnist_mirror, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in MNIST_NAMES:
        (bad / name).write_bytes((mnist_mirror / name).read_bytes()[:-3] + b"xyz")
    target = tmp_path / "data"
    dl.download("mnist", target, mirrors=(bad.as_uri(),), progress=False)
    assert all(md5(target / "MNIST" / n) == md5(mnist_mirror / n) for n in MNIST_NAMES)
    only_bad = dl.Source(mirrors=(bad.as_uri(),), files=dl.SOURCES["mnist"].files, folder="MNIST")
    monkeypatch.setitem(dl.SOURCES, "mnist", only_bad)
    fresh = tmp_path / "fresh"
    with pytest.raises(FileNotFoundError, match=r"(?s)could not download train-images-idx3-ubyte.gz.*does not match"):
        dl.download("mnist", fresh, progress=False)
    assert not any(p.is_file() for p in fresh.rglob("*"))  # nothing half-written left behind


class FakeResponse(io.BytesIO):
    def __init__(self, payload, length):
        super().__init__(payload)
        self.headers = {"Content-Length": str(length)}


def test_truncated_download_is_rejected(tmp_path):
    payload = b"0123456789" * 1000
    digest = hashlib.md5(payload).hexdigest()

    def cut_short(url, timeout):
        return FakeResponse(payload[:4000], len(payload))

    dest = tmp_path / "out" / "file.gz"
    with pytest.raises(DataFormatError, match="received 4000 of 10000 bytes"):
        dl.fetch("https://example.invalid/file.gz", dest, digest, opener=cut_short, progress=False)
    assert list((tmp_path / "out").iterdir()) == []
    dl.fetch("https://example.invalid/file.gz", dest, digest, opener=lambda url, timeout: FakeResponse(
        payload, len(payload)), progress=False)
    assert dest.read_bytes() == payload


def test_interrupted_download_leaves_nothing(tmp_path):
    class Dying(FakeResponse):
        def read(self, n=-1):
            if self.tell() >= 2000:
                raise KeyboardInterrupt
            return super().read(1000)

    with pytest.raises(KeyboardInterrupt):
        dl.fetch("https://x.invalid/f", tmp_path / "f", "0" * 32, opener=lambda url, timeout: Dying(b"a" * 9000, 9000),
                 progress=False)
    assert list(tmp_path.iterdir()) == []


def make_cifar_archive(path, evil=False):
    staging = path.parent / "staging" / "cifar-10-batches-py"
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_batch(staging / name, rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 2))
    with tarfile.open(path, "w:gz") as tar:
        tar.add(staging, arcname="cifar-10-batches-py")
        if evil:
            tar.add(staging / "test_batch", arcname="../escaped")
    return md5(path)


def test_download_cifar_extracts_atomically(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    digest = make_cifar_archive(mirror / "cifar-10-python.tar.gz")
    source = dl.Source(mirrors=(mirror.as_uri(),), files=(("cifar-10-python.tar.gz", digest),), folder="",
                       extract="cifar-10-batches-py")
    monkeypatch.setitem(dl.SOURCES, "cifar10", source)
    target = tmp_path / "data"
    assert main(["data", "download", "cifar10", "--data-dir", str(target)]) == 0
    images, labels = load_cifar10(target, "train")
    assert images.shape == (10, 3, 32, 32)
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py"]  # archive removed, no staging


def test_archive_with_escaping_member_is_refused(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    digest = make_cifar_archive(mirror / "cifar-10-python.tar.gz", evil=True)
    source = dl.Source(mirrors=(mirror.as_uri(),), files=(("cifar-10-python.tar.gz", digest),), folder="",
                       extract="cifar-10-batches-py")
    monkeypatch.setitem(dl.SOURCES, "cifar10", source)
    target = tmp_path / "data"
    with pytest.raises(DataFormatError, match="unexpected archive member '../escaped'"):
        dl.download("cifar10", target, progress=False)
    assert not (target / "cifar-10-batches-py").exists() and not (tmp_path / "escaped").exists()
    assert leftovers(target) == []


def test_cli_download_and_check(tmp_path, mnist_mirror, capsys):
    target = tmp_path / "data"
    assert main(["data", "download", "mnist", "--data-dir", str(target)]) == 0
    assert main(["data", "check", "mnist", "--data-dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert "| mnist | train | 5 | 1x28x28 |" in out and "| mnist | test | 2 |" in out
    assert main(["data", "check", "cifar10", "--data-dir", str(target)]) == 2
    assert "stelab data download cifar10" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "download", "svhn"])


def suggested_command(message):
    """The `stelab data download ...` command an error message tells the user to run, as argv for main()."""
    import re
    import shlex

    found = re.search(r"`stelab (data download [^`]+)`", message)
    assert found, message
    return shlex.split(found.group(1))


def test_corrupt_mnist_file_is_repaired_by_the_command_its_message_names(tmp_path, mnist_mirror, capsys):
    root = tmp_path / "data"
    dl.download("mnist", root, progress=False)
    victim = root / "MNIST" / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:40])  # truncated
    with pytest.raises(DataFormatError) as err:
        load_mnist(root, "train")
    argv = suggested_command(str(err.value))
    assert argv[-2:] == ["--data-dir", str(root)]  # the data root, not its MNIST/ subfolder
    assert main(argv) == 0
    assert "fails its published checksum" in capsys.readouterr().err
    assert load_mnist(root, "train")[0].shape == (5, 1, 28, 28)
    assert not (root / "MNIST" / "MNIST").exists()


def test_mnist_hint_names_the_root_for_every_layout(tmp_path):
    from stelab.data.mnist import _data_root

    for sub in ("MNIST", "MNIST/raw", "mnist", ""):
        assert _data_root(tmp_path / sub / "t10k-labels-idx1-ubyte.gz") == tmp_path


@pytest.fixture
def cifar_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    digest = make_cifar_archive(mirror / "cifar-10-python.tar.gz")
    staging = mirror / "staging" / "cifar-10-batches-py"
    members = tuple((p.name, md5(p)) for p in sorted(staging.iterdir()))
    source = dl.Source(mirrors=(mirror.as_uri(),), files=(("cifar-10-python.tar.gz", digest),), folder="",
                       extract="cifar-10-batches-py", members=members)
    monkeypatch.setitem(dl.SOURCES, "cifar10", source)
    return staging


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_damaged_cifar_batch_is_refetched_not_reported_ready(tmp_path, cifar_mirror, damage, capsys):
    root = tmp_path / "data"
    dl.download("cifar10", root, progress=False)
    victim = root / "cifar-10-batches-py" / "data_batch_3"
    if damage == "corrupt":
        victim.write_bytes(victim.read_bytes()[:100])
        with pytest.raises(DataFormatError) as err:
            load_cifar10(root, "train")
    else:
        victim.unlink()
        with pytest.raises(FileNotFoundError) as err:
            load_cifar10(root, "train")
    assert main(suggested_command(str(err.value))) == 0
    assert "data_batch_3" in capsys.readouterr().err  # says what it repairs
    assert md5(victim) == md5(cifar_mirror / "data_batch_3")
    assert load_cifar10(root, "train")[0].shape == (10, 3, 32, 32)
    assert main(["data", "check", "cifar10", "--data-dir", str(root)]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]


def test_intact_cifar_folder_is_kept(tmp_path, cifar_mirror):
    root = tmp_path / "data"
    dl.download("cifar10", root, progress=False)
    before = (root / "cifar-10-batches-py" / "data_batch_1").stat().st_mtime_ns
    (cifar_mirror.parent.parent / "cifar-10-python.tar.gz").unlink()  # a re-fetch would now fail
    assert dl.download("cifar10", root, progress=False) == root / "cifar-10-batches-py"
    assert (root / "cifar-10-batches-py" / "data_batch_1").stat().st_mtime_ns == before


def test_official_cifar_source_checks_every_extracted_file():
    names = {name for name, _ in dl.SOURCES["cifar10"].members}
    assert names == {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch", "batches.meta"}
