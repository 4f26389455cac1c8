"""MNIST idx and CIFAR-10 pickle readers: round trips through tiny files, every damaged-file case, the real data."""

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from stelab.data import STATS, DataFormatError, channel_stats, find_data_dir, load, load_cifar10, load_mnist
from stelab.data.cifar10 import read_batch, write_batch
from stelab.data.mnist import read_idx, write_idx

REPO = Path(__file__).resolve().parents[2]


def make_mnist(root, n_train=7, n_test=3, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        ext = ".gz" if gz else ""
        write_idx(root / "MNIST" / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(root / "MNIST" / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        out[split] = (images, labels)
    return out


def make_cifar(root, n_per_batch=4, seed=0):
    rng = np.random.default_rng(seed)
    out = {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch)
        write_batch(root / "cifar-10-batches-py" / name, images, labels)
        out["test" if name == "test_batch" else "train"].append((images, labels))
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trip(tmp_path, gz):
    ref = make_mnist(tmp_path, gz=gz)
    for split in ("train", "test"):
        images, labels = load_mnist(tmp_path, split)
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert images.shape == (len(ref[split][0]), 1, 28, 28)
        np.testing.assert_array_equal(images[:, 0].numpy(), ref[split][0])
        np.testing.assert_array_equal(labels.numpy(), ref[split][1])


def test_idx_header_is_the_published_format(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28) % 251)
    raw = path.read_bytes()
    assert raw[:4] == bytes.fromhex("00000803")
    assert [int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12)] == [2, 28, 28]
    assert raw[16] == 0 and raw[17] == 1 and len(raw) == 16 + 2 * 784


def test_mnist_torchvision_layout_is_found(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "MNIST").rename(tmp_path / "raw")
    (tmp_path / "MNIST").mkdir()
    (tmp_path / "raw").rename(tmp_path / "MNIST" / "raw")
    assert load_mnist(tmp_path, "test")[0].shape[0] == 3


def test_mnist_missing_file_says_how_to_download(tmp_path):
    make_mnist(tmp_path)
    os.unlink(tmp_path / "MNIST" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*stelab data download mnist --data-dir"):
        load_mnist(tmp_path, "test")


def test_mnist_bad_magic(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / "MNIST" / "train-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 1  # claims one dimension
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte.gz: bad idx magic number 0x00000801"):
        load_mnist(tmp_path)


def test_mnist_truncated_raw_and_gz(tmp_path):
    make_mnist(tmp_path, gz=False)
    raw = tmp_path / "MNIST" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:-5])
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte: header says shape \(7, 28, 28\).*truncated"):
        load_mnist(tmp_path)
    make_mnist(tmp_path / "gz")
    gz = tmp_path / "gz" / "MNIST" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:40])
    with pytest.raises(DataFormatError, match=r"cannot decompress.*stelab data download mnist"):
        load_mnist(tmp_path / "gz")
    garbage = tmp_path / "junk-idx1-ubyte.gz"
    garbage.write_bytes(b"not a gzip file at all")
    with pytest.raises(DataFormatError, match="cannot decompress"):
        read_idx(garbage, 1)


def test_mnist_count_mismatch_and_label_range(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "MNIST" / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataFormatError, match="has 3 images but .* has 4 labels"):
        load_mnist(tmp_path, "test")
    write_idx(tmp_path / "MNIST" / "t10k-labels-idx1-ubyte.gz", np.array([0, 10, 3], np.uint8))
    with pytest.raises(DataFormatError, match=r"label 10 is outside 0..9"):
        load_mnist(tmp_path, "test")
    write_idx(tmp_path / "MNIST" / "t10k-images-idx3-ubyte.gz", np.zeros((3, 28, 27), np.uint8))
    with pytest.raises(DataFormatError, match=r"expected \(28, 28\)"):
        load_mnist(tmp_path, "test")


def test_cifar_round_trip_and_pixel_layout(tmp_path):
    ref = make_cifar(tmp_path)
    images, labels = load_cifar10(tmp_path, "train")
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    np.testing.assert_array_equal(images.numpy(), np.concatenate([x for x, _ in ref["train"]]))
    np.testing.assert_array_equal(labels.numpy(), np.concatenate([y for _, y in ref["train"]]))
    # The file's rows are R plane, G plane, B plane, each row-major: check one pixel against the raw pickle.
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    test_images, _ = load_cifar10(tmp_path, "test")
    c, i, j = 2, 5, 17
    assert test_images[1, c, i, j] == raw[1, c * 1024 + i * 32 + j]


def test_cifar_rejects_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataFormatError, match=r"refusing to load (posix|nt)\.system"):
        read_batch(path)


@pytest.mark.parametrize("case, message", [
    ("missing_key", r"missing key\(s\) \['labels'\]"),
    ("bad_shape", r"'data' is uint8 \(4, 3000\), expected uint8 of shape \(N, 3072\)"),
    ("bad_label", r"labels span 0..12, outside 0..9"),
    ("label_count", r"'labels' has shape \(3,\)"),
    ("truncated", r"not a readable CIFAR-10 batch.*truncated or corrupt"),
    ("not_dict", r"expected a pickled dict, got list"),
])
def test_cifar_damaged_batches(tmp_path, case, message):
    data = np.zeros((4, 3072), np.uint8)
    batch = {b"data": data, b"labels": [0, 1, 2, 3]}
    if case == "missing_key":
        del batch[b"labels"]
    elif case == "bad_shape":
        batch[b"data"] = np.zeros((4, 3000), np.uint8)
    elif case == "bad_label":
        batch[b"labels"] = [0, 12, 2, 3]
    elif case == "label_count":
        batch[b"labels"] = [0, 1, 2]
    elif case == "not_dict":
        batch = [data]
    blob = pickle.dumps(batch, protocol=2)
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob[: len(blob) // 2] if case == "truncated" else blob)
    with pytest.raises(DataFormatError, match=message) as err:
        read_batch(path)
    assert str(path) in str(err.value)


def test_cifar_missing_file(tmp_path):
    make_cifar(tmp_path)
    os.unlink(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(FileNotFoundError, match=r"data_batch_3 not found; run `stelab data download cifar10"):
        load_cifar10(tmp_path)


def test_find_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("STELAB_DATA", str(tmp_path / "env"))
    (tmp_path / "env").mkdir()
    assert find_data_dir(tmp_path) == tmp_path  # the argument wins
    assert find_data_dir() == tmp_path / "env"
    monkeypatch.setenv("STELAB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="STELAB_DATA"):
        find_data_dir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_data_dir(tmp_path / "typo")


def test_channel_stats_match_a_float64_computation():
    images = torch.randint(0, 256, (40, 3, 5, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    x = images.numpy().astype(np.float64) / 255
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-12)


def test_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'svhn'; valid choices: cifar10, mnist"):
        load("svhn", tmp_path)
    with pytest.raises(ValueError, match="valid choices: train, test"):
        load_mnist(tmp_path, "val")


# --- the real data sets, when this machine has them -----------------------------------------------------------------

def _real_root():
    for path in (os.environ.get("STELAB_DATA"), REPO.parent / "shared" / "data"):
        if path and Path(path).is_dir():
            return Path(path)
    return None


REAL = _real_root()
needs_mnist = pytest.mark.skipif(REAL is None or not (REAL / "MNIST").is_dir(),
                                 reason="real MNIST not found (set STELAB_DATA or place it in ../shared/data)")
needs_cifar = pytest.mark.skipif(REAL is None or not (REAL / "cifar-10-batches-py").is_dir(),
                                 reason="real CIFAR-10 not found (set STELAB_DATA or place it in ../shared/data)")


@needs_mnist
def test_real_mnist_counts_and_stats():
    images, labels = load("mnist", REAL, "train")
    assert images.shape == (60000, 1, 28, 28)
    assert labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean + std, STATS["mnist"][0] + STATS["mnist"][1], atol=1e-7)
    test_labels = load("mnist", REAL, "test")[1]
    assert test_labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_cifar
def test_real_cifar_counts_and_stats():
    images, labels = load("cifar10", REAL, "train")
    assert images.shape == (50000, 3, 32, 32)
    assert labels.bincount().tolist() == [5000] * 10
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean, STATS["cifar10"][0], atol=1e-7)
    np.testing.assert_allclose(std, STATS["cifar10"][1], atol=1e-7)
    # The published values (e.g. in the CIFAR literature) agree with STATS.
    np.testing.assert_allclose(STATS["cifar10"], [[0.49139968, 0.48215841, 0.44653091],
                                                  [0.24703223, 0.24348513, 0.26158784]], atol=1e-8)
    assert load("cifar10", REAL, "test")[1].bincount().tolist() == [1000] * 10
