import gzip
import http.server
import shutil
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from mnist_classifier import data
from mnist_classifier.data import FILE_NAMES, idx_bytes, load_mnist, parse_idx
from mnist_classifier.errors import DataError


# ---------------------------------------------------------------- IDX parsing on tiny files

def test_parse_idx_round_trip_raw_and_gzip():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(images)
    assert raw[:4] == b"\x00\x00\x08\x03"
    np.testing.assert_array_equal(parse_idx(raw), images)
    np.testing.assert_array_equal(parse_idx(gzip.compress(raw)), images)
    labels = np.array([7, 2, 1], dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels), expected_shape=(3,)), labels)


@pytest.mark.parametrize("payload, message", [
    (b"\x00\x00\x09\x03" + b"\x00" * 12, "bad IDX magic"),
    (b"\x00\x00\x08\x02" + b"\x00" * 8, "bad IDX magic"),
    (b"\x00\x00\x08", "too short"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (idx_bytes(np.zeros((2, 2, 2), np.uint8))[:-1], "payload has 7 bytes but the header declares 8"),
    (idx_bytes(np.zeros((2, 2, 2), np.uint8)) + b"\x00", "payload has 9 bytes"),
    (gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)))[:1000],
     "corrupt or truncated gzip"),
], ids=["dtype", "ndim", "short", "header", "truncated", "padded", "gzip"])
def test_parse_idx_rejects_bad_files(payload, message):
    with pytest.raises(DataError, match=message):
        parse_idx(payload, "x.idx")


def test_parse_idx_checks_expected_shape():
    with pytest.raises(DataError, match=r"shape \(2, 2, 2\) does not match the expected \(60000, 28, 28\)"):
        parse_idx(idx_bytes(np.zeros((2, 2, 2), np.uint8)), "x", expected_shape=(60000, 28, 28))


# ---------------------------------------------------------------- the real files

def test_load_real_mnist(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    assert set(np.unique(mnist.test_labels)) == set(range(10))
    assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]  # the well-known first test digits


def _copy_mnist(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILE_NAMES:
        shutil.copy(src / name, dst / name)
    return dst


def test_corrupt_file_fails_checksum(mnist_dir, tmp_path):
    folder = _copy_mnist(mnist_dir, tmp_path / "m")
    target = folder / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(target.read_bytes())
    blob[-10] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: SHA-256 mismatch"):
        load_mnist(folder)


def test_missing_file_is_named(mnist_dir, tmp_path):
    folder = _copy_mnist(mnist_dir, tmp_path / "m")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is missing"):
        load_mnist(folder)


def test_uncompressed_files_are_accepted(mnist_dir, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in FILE_NAMES:
        (folder / name[:-3]).write_bytes(gzip.decompress((mnist_dir / name).read_bytes()))
    assert load_mnist(folder).test_labels[0] == 7


def test_missing_folder(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"nowhere: MNIST data folder does not exist \(named by data_dir \(--data-dir\)\)"):
        load_mnist(tmp_path / "nowhere")
    monkeypatch.setenv("MNIST_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="elsewhere: MNIST data folder does not exist .named by the MNIST_DATA environment"):
        load_mnist()


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """No MNIST_DATA, an empty cache dir and an empty home: the loader must search and then download."""
    monkeypatch.delenv("MNIST_DATA", raising=False)
    monkeypatch.delenv("MNIST_MIRRORS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_keras_npz_cache_is_used(mnist, isolated_home):
    keras_dir = isolated_home / "home" / ".keras" / "datasets"
    keras_dir.mkdir(parents=True)
    np.savez(keras_dir / "mnist.npz", x_train=mnist.train_images, y_train=mnist.train_labels,
             x_test=mnist.test_images, y_test=mnist.test_labels)
    loaded = load_mnist(download_missing=False)
    assert loaded.source.endswith("mnist.npz")
    np.testing.assert_array_equal(loaded.test_images, mnist.test_images)


def test_torchvision_raw_cache_is_used(mnist_dir, isolated_home):
    raw = isolated_home / "data" / "MNIST" / "raw"
    _copy_mnist(mnist_dir, raw)
    assert load_mnist(download_missing=False).source == str(raw)


# ---------------------------------------------------------------- download from a local HTTP server

@pytest.fixture
def mirror(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; yields (folder, url)."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def _dead_url() -> str:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


def test_download_falls_back_to_second_mirror(mnist_dir, mirror, isolated_home):
    root, url = mirror
    _copy_mnist(mnist_dir, root)
    loaded = load_mnist(mirrors=[_dead_url(), url], progress=False)
    cache = isolated_home / "cache" / "mnist-classifier"
    assert loaded.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILE_NAMES)  # no .part files left behind
    assert loaded.train_images.shape == (60000, 28, 28)


def test_download_rejects_wrong_checksum_and_writes_nothing(mnist_dir, mirror, isolated_home):
    root, url = mirror
    _copy_mnist(mnist_dir, root)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not mnist")
    with pytest.raises(DataError, match="SHA-256 mismatch for t10k-images-idx3-ubyte.gz"):
        load_mnist(mirrors=[url], progress=False)
    cache = isolated_home / "cache" / "mnist-classifier"
    assert not (cache / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]


def test_offline_message_names_files_and_variable(isolated_home):
    with pytest.raises(DataError) as info:
        load_mnist(mirrors=[_dead_url()], progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert all(name in message for name in FILE_NAMES)
    assert "MNIST_DATA" in message


def test_dataset_checksum_is_stable(mnist):
    assert mnist.sha256 == data.DATASET_SHA256 and len(mnist.sha256) == 64
