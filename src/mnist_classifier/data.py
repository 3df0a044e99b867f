"""MNIST files: find them, download them, verify them, and parse IDX into uint8 arrays.

Search order for the four official files:
  1. an explicit ``data_dir`` (``--data-dir``) or the ``MNIST_DATA`` environment variable;
  2. the user cache dir (``$XDG_CACHE_HOME/mnist-classifier`` or ``~/.cache/mnist-classifier``);
  3. an existing Keras ``mnist.npz`` or torchvision ``MNIST/raw`` cache;
  4. a download from the public mirrors into the user cache dir.
Every source is checked against the official SHA-256 digests before it is used.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_bytes
from .errors import DataError

# name -> (official .gz file, SHA-256 of the .gz, SHA-256 of the uncompressed IDX, expected shape)
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz",
                     "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                     "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", (60000, 28, 28)),
    "train_labels": ("train-labels-idx1-ubyte.gz",
                     "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                     "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", (60000,)),
    "test_images": ("t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", (10000, 28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", (10000,)),
}
FILE_NAMES = [spec[0] for spec in FILES.values()]

# More than one mirror: any single host has been down for months at a time.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# A digest of the four uncompressed files together identifies the dataset a model was trained on.
DATASET_SHA256 = hashlib.sha256("".join(spec[2] for spec in FILES.values()).encode()).hexdigest()

_IDX_UINT8 = 0x08


@dataclass(frozen=True)
class MNIST:
    """The dataset as uint8 arrays: images (N, 28, 28) in 0..255, labels (N,) in 0..9."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # where the files were found, for messages and metadata
    sha256: str = DATASET_SHA256


# ---------------------------------------------------------------- IDX parsing

def parse_idx(data: bytes, name: str = "<bytes>", expected_shape: tuple | None = None) -> np.ndarray:
    """Parse IDX bytes (gzip-compressed or raw) into a uint8 array, validating the whole header."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{name}: corrupt or truncated gzip data ({exc})") from None
    if len(data) < 4:
        raise DataError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _IDX_UINT8 or ndim not in (1, 3):
        raise DataError(f"{name}: bad IDX magic 0x{data[:4].hex()} (expected 0x00000801 or 0x00000803)")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise DataError(f"{name}: IDX shape {tuple(shape)} does not match the expected {tuple(expected_shape)}")
    payload = len(data) - header_size
    if payload != int(np.prod(shape)):
        raise DataError(f"{name}: IDX payload has {payload} bytes but the header declares {int(np.prod(shape))} "
                        "(truncated or padded file)")
    # A copy, so callers get a writable array (torch warns about read-only buffers).
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialize a uint8 array to IDX (the inverse of ``parse_idx``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, _IDX_UINT8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_digest(name: str, where: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise DataError(f"{where}: SHA-256 mismatch for {name} (expected {expected[:16]}..., got {actual[:16]}...); "
                        "the file is corrupt or not the official MNIST file")


# ---------------------------------------------------------------- sources

def cache_dir() -> Path:
    """The per-user cache folder the downloader writes to."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "mnist-classifier"


def _read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    """Read the four files from a folder, accepting the official .gz names or their uncompressed twins."""
    arrays = {}
    for key, (gz_name, gz_sha, raw_sha, shape) in FILES.items():
        gz_path, raw_path = folder / gz_name, folder / gz_name[:-3]
        if gz_path.is_file():
            data = _read_bytes(gz_path)
            _check_digest(gz_name, gz_path, _sha256(data), gz_sha)
        elif raw_path.is_file():
            data = _read_bytes(raw_path)
            _check_digest(raw_path.name, raw_path, _sha256(data), raw_sha)
        else:
            raise DataError(f"{folder}: {gz_name} is missing (needs {', '.join(FILE_NAMES)})")
        arrays[key] = parse_idx(data, str(gz_path if gz_path.is_file() else raw_path), shape)
    return arrays


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _has_idx_files(folder: Path) -> bool:
    return all((folder / n).is_file() or (folder / n[:-3]).is_file() for n in FILE_NAMES)


def _read_keras_npz(path: Path) -> dict[str, np.ndarray]:
    """Keras caches MNIST as one npz; verify it by re-serializing each array to IDX and hashing."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {"train_images": npz["x_train"], "train_labels": npz["y_train"],
                      "test_images": npz["x_test"], "test_labels": npz["y_test"]}
    except Exception as exc:  # numpy raises many types for a bad zip
        raise DataError(f"{path}: not a readable Keras mnist.npz ({exc})") from None
    for key, array in arrays.items():
        gz_name, _, raw_sha, _ = FILES[key]
        _check_digest(gz_name[:-3], path, _sha256(idx_bytes(array)), raw_sha)
    return {k: np.ascontiguousarray(v, dtype=np.uint8) for k, v in arrays.items()}


def _third_party_caches() -> list[Path]:
    home = Path.home()
    return [home / ".keras" / "datasets" / "mnist.npz",
            Path.cwd() / "data" / "MNIST" / "raw",
            home / "data" / "MNIST" / "raw",
            home / ".cache" / "torchvision" / "MNIST" / "raw"]


# ---------------------------------------------------------------- download

def download(folder: Path, mirrors=MIRRORS, timeout: float = 30.0, progress: bool = True) -> None:
    """Fetch any of the four files missing from ``folder``, trying each mirror in turn.

    Each file is written to a temporary name, checked against its SHA-256, and only then renamed
    into place, so an interrupted or corrupt download never leaves a file that looks complete.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for gz_name, gz_sha, _, _ in FILES.values():
        target = folder / gz_name
        if target.is_file():
            continue
        failures = []
        for mirror in mirrors:
            try:
                data = _fetch(mirror.rstrip("/") + "/" + gz_name, timeout, progress)
                _check_digest(gz_name, Path(mirror), _sha256(data), gz_sha)
            except (OSError, DataError) as exc:
                failures.append(f"{mirror}: {getattr(exc, 'reason', None) or exc}")
                continue
            write_bytes(target, data)
            break
        else:
            raise DataError(offline_message(failures))


def _fetch(url: str, timeout: float, progress: bool) -> bytes:
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                  disable=not progress, file=sys.stderr, leave=False) as bar:
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    return b"".join(chunks)


def offline_message(failures=()) -> str:
    detail = f" (download failed: {'; '.join(failures)})" if failures else ""
    return (f"MNIST data not found and could not be downloaded{detail}. Put {', '.join(FILE_NAMES)} in a folder "
            "and point MNIST_DATA (or --data-dir) at it.")


# ---------------------------------------------------------------- entry point

def load_mnist(data_dir: str | os.PathLike | None = None, *, download_missing: bool = True,
               mirrors=None, progress: bool = True) -> MNIST:
    """Find, verify and load MNIST (see the module docstring for the search order)."""
    explicit = data_dir if data_dir is not None else os.environ.get("MNIST_DATA") or None
    if explicit is not None:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            source = "data_dir (--data-dir)" if data_dir is not None else "the MNIST_DATA environment variable"
            raise DataError(f"{folder}: MNIST data folder does not exist (named by {source})")
        return _make(_read_idx_folder(folder), str(folder))

    cache = cache_dir()
    if _has_idx_files(cache):
        return _make(_read_idx_folder(cache), str(cache))
    for candidate in _third_party_caches():
        if candidate.suffix == ".npz" and candidate.is_file():
            return _make(_read_keras_npz(candidate), str(candidate))
        if candidate.is_dir() and _has_idx_files(candidate):
            return _make(_read_idx_folder(candidate), str(candidate))
    if not download_missing:
        raise DataError(offline_message())
    mirrors = mirrors or os.environ.get("MNIST_MIRRORS", "").split() or MIRRORS
    download(cache, mirrors=mirrors, progress=progress)
    return _make(_read_idx_folder(cache), str(cache))


def _make(arrays: dict[str, np.ndarray], source: str) -> MNIST:
    return MNIST(source=source, **arrays)
