"""Ray Data: the predict pipeline for folders and buckets too large for one machine.

    import ray
    from mnist_classifier.distributed import predict_dataset

    ds = ray.data.read_binary_files("s3://archive/scans/", include_paths=True)
    predict_dataset(ds).write_parquet("s3://archive/digits/")

The stages are the local engine's own code, spread over a cluster:
  1. Ray tasks decode and normalize each block of file bytes with ``preprocess.prepare_batch`` (numbers:
     ``segment.prepare_number``), the functions the local engine's worker processes run;
  2. a pool of actors, each holding one ``Predictor`` (the model loaded once per actor), classifies them;
  3. the rows carry the CSV's columns with their natural types; p0..p9 are the exact probabilities.
A file that cannot be read is a row with an ``error``, never a failed job. Ray retries the tasks of a worker
that dies and restarts a killed actor, re-running its batches.

Needs the optional extra: ``pip install 'mnist-classifier[ray]'``. Nothing else in the package imports this.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from .errors import ConfigError, MNISTClassifierError
from .formats import CSV_FIELDS, NUMBER_CSV_FIELDS, csv_row
from .predict import MODEL_BATCH, Predictor, collect_images, nothing_found
from .decode import IMAGE_EXTENSIONS
from .fit import MNIST_SIDE
from .preprocess import PreparedDigit, prepare_batch
from .segment import PreparedNumber, Segment, prepare_number

LOCAL_BLOCK = 1024   # local files per decoding task: a fraction of a second of work, many tasks per core
CLASSIFY_CPUS = 0.5  # an actor waits for decoded images part of the time: two share a core, or one a decoder's

# The output's columns are the CSV's (formats.CSV_FIELDS, NUMBER_CSV_FIELDS), in its order, plus the
# ``probabilities`` list of ``predict --json``; here only their Arrow types, text unless said otherwise.
_TYPES = {"digit": pa.int64(), "confidence": pa.float64(), "uncertain": pa.bool_(),
          **{f"p{d}": pa.float64() for d in range(10)}, "probabilities": pa.list_(pa.float64())}
_SCALARS = ("path", "number", "digit", "uncertain", "note", "reason", "error")  # as in the JSON row, not as text


def schema(number: bool = False) -> pa.Schema:
    """The output rows' columns and their types."""
    names = (NUMBER_CSV_FIELDS if number else CSV_FIELDS) + ["probabilities"]
    return pa.schema([(name, _TYPES.get(name, pa.string())) for name in names])


# ---------------------------------------------------------------------------------------------- decoding

def _sources(batch: pa.Table) -> list:
    # Without bytes (a local file) the local engine's reader opens the path itself. An empty object is an
    # empty file wherever it was stored: the one empty file every machine has lets that reader word it
    # exactly as it does for a local file.
    return [path if data is None else data if len(data) else os.devnull
            for data, path in zip(batch["bytes"].to_pylist(), batch["path"].to_pylist())]


# Between the stages images travel as the bytes of float32 arrays, in Arrow columns of explicit types: no
# objects are serialized, and a column of nothing but None stays a column of text.
_DECODED = pa.schema([("path", pa.string()), ("image", pa.binary()), ("reason", pa.string()),
                      ("error", pa.string())])
_SEGMENTED = pa.schema([("path", pa.string()), ("segments", pa.binary()), ("boxes", pa.list_(pa.int64())),
                        ("reason", pa.string()), ("error", pa.string()), ("scale", pa.float64()),
                        ("size", pa.list_(pa.int64()))])


def decode_digits(batch: pa.Table) -> pa.Table:
    """Ray task: a block of files (bytes, or local paths) -> each one's normalized 28x28, or reason / error."""
    names = batch["path"].to_pylist()
    prepared = prepare_batch(_sources(batch), names)
    return pa.table({"path": names,
                     "image": [None if p.image is None else p.image.astype(np.float32).tobytes() for p in prepared],
                     "reason": [p.reason for p in prepared],
                     "error": [p.error for p in prepared]}, schema=_DECODED)


def decode_numbers(batch: pa.Table) -> pa.Table:
    """Ray task: a block of files (bytes, or local paths) -> each one's digit segments, or reason / error."""
    names = batch["path"].to_pylist()
    prepared = [prepare_number(source, name) for source, name in zip(_sources(batch), names)]
    return pa.table({"path": names,
                     "segments": [np.array([s.image for s in p.segments], np.float32).tobytes() for p in prepared],
                     "boxes": [[int(v) for s in p.segments for v in s.box] for p in prepared],
                     "reason": [p.reason for p in prepared],
                     "error": [p.error for p in prepared],
                     "scale": [float(p.scale) for p in prepared],
                     "size": [None if p.size is None else list(p.size) for p in prepared]}, schema=_SEGMENTED)


def _images(flat: bytes) -> np.ndarray:
    return np.frombuffer(flat, np.float32).reshape(-1, MNIST_SIDE, MNIST_SIDE)


# ---------------------------------------------------------------------------------------------- classifying

class Classifier:
    """Ray actor: loads the model once, then classifies batch after batch with the local engine's Predictor."""

    def __init__(self, model=None, number: bool = False, threshold: float | None = None):
        import torch

        # Ray gives each actor a share of a node's cores: torch must not spread over all of them.
        torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.predictor = Predictor(model, device="auto", workers=1,
                                   **({} if threshold is None else {"threshold": threshold}))
        self.number = number

    def __call__(self, table: pa.Table) -> pa.Table:
        batch = table.to_pydict()
        results = self._numbers(batch) if self.number else self._digits(batch)
        return pa.Table.from_pylist([row(r) for r in results], schema=schema(self.number))

    def _digits(self, batch: dict) -> list:
        prepared = [PreparedDigit(None if image is None else _images(image)[0], reason, error)
                    for image, reason, error in zip(batch["image"], batch["reason"], batch["error"])]
        return self.predictor._classify(batch["path"], prepared)

    def _numbers(self, batch: dict) -> list:
        prepared = [PreparedNumber(_segments(images, boxes), reason, error, scale,
                                   None if size is None else tuple(size))
                    for images, boxes, reason, error, scale, size
                    in zip(batch["segments"], batch["boxes"], batch["reason"], batch["error"], batch["scale"],
                           batch["size"])]
        return self.predictor._read_numbers(batch["path"], prepared)


def _segments(flat_images: bytes, flat_boxes: list) -> list[Segment]:
    boxes = np.asarray(flat_boxes, np.int64).reshape(-1, 4)
    return [Segment(tuple(int(v) for v in box), image) for box, image in zip(boxes, _images(flat_images))]


def row(result) -> dict:
    """One output row of a Prediction or NumberPrediction: the CSV's columns with typed values, not text."""
    answer = result.to_dict()
    out = {name: answer[name] if name in _SCALARS else text for name, text in csv_row(result).items()}
    out["confidence"] = float(result.confidence)
    # Exact, not rounded as in the CSV and JSON: the rows equal the local engine's to float precision.
    probabilities = getattr(result, "probabilities", None) or answer["probabilities"]
    out.update({f"p{d}": float(p) for d, p in enumerate(probabilities) if f"p{d}" in out})
    out["probabilities"] = [float(p) for p in probabilities]
    return out


# ---------------------------------------------------------------------------------------------- the pipeline

def predict_dataset(ds: "ray.data.Dataset", model=None, number: bool = False, threshold: float | None = None,
                    actors: int | tuple[int, int] | None = None) -> "ray.data.Dataset":
    """A Dataset of rows with ``bytes`` and ``path`` -> one row of answers per file (see ``schema``).

    ``model`` is a model file every node can read (default: the shipped model). ``actors`` is the size of
    the classifying pool: a number, or (min, max) to let Ray grow it with the load (default: 1 to one per
    two cores of the cluster). Lazy, like every Dataset: nothing runs until it is written or iterated.

    Ray Data's defaults make the job survive lost workers: a task is retried (3 times) and a dead actor is
    restarted and its unfinished batches sent again (without limit); a Python error in the code is not
    retried, since it would fail again.
    """
    low, high = (actors, actors) if isinstance(actors, int) else actors or (1, _cores() // 2 or 1)
    # Whole blocks (no batch_size): Ray then fuses decoding into the task that read the files, and a
    # block's bytes never travel. Ray Data bounds a block's size.
    decoded = ds.map_batches(decode_numbers if number else decode_digits, batch_format="pyarrow")
    return decoded.map_batches(
        Classifier, fn_constructor_kwargs={"model": None if model is None else str(model), "number": number,
                                           "threshold": threshold},
        batch_size=MODEL_BATCH, batch_format="pyarrow", num_cpus=CLASSIFY_CPUS,
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high))


def _cores() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


def predict_files(paths, model=None, number: bool = False, recursive: bool = False, extensions=None,
                  threshold: float | None = None) -> "ray.data.Dataset":
    """Files, folders, globs and URIs (s3://, gs://, any filesystem pyarrow has) -> one row per file.

    URIs are listed and read by Ray Data (``read_binary_files``: folders recursively, keeping
    ``extensions``). Local paths are expanded as the local engine expands them (``collect_images``) and
    each decoding task opens its files with the local engine's reader, so both engines read the same files
    and word a missing, empty or unreadable one alike; on a cluster they must be on a shared mount.
    """
    extensions = list(extensions or IMAGE_EXTENSIONS)
    uris = [str(p) for p in paths if "://" in str(p)]
    local = collect_images([p for p in paths if "://" not in str(p)], recursive=recursive, extensions=extensions)
    parts = [ray.data.read_binary_files(uris, include_paths=True, file_extensions=extensions)] if uris else []
    if local:
        # Ray Data resolves a list of paths one by one, milliseconds each: a list of local files is
        # handed over as it is, in blocks of LOCAL_BLOCK, and read by the decoding tasks themselves.
        listed = pa.table({"bytes": pa.nulls(len(local), pa.binary()), "path": pa.array(local, pa.string())})
        parts.append(ray.data.from_arrow([listed.slice(i, LOCAL_BLOCK) for i in range(0, len(local), LOCAL_BLOCK)]))
    if not parts:
        raise ConfigError(nothing_found(paths, recursive, extensions))
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return predict_dataset(ds, model=model, number=number, threshold=threshold)


def sorted_rows(ds: "ray.data.Dataset") -> list[dict]:
    """Every row, by path: for jobs small enough to hold in memory (``predict --json``)."""
    return sorted(ds.take_all(), key=lambda r: r["path"])


def read_parquet(out_dir) -> "ray.data.Dataset":
    """The rows ``write_parquet`` wrote."""
    return ray.data.read_parquet(str(out_dir))


def start(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address``, or start a local Ray on this machine's cores."""
    # Ray Data reports each stage's progress; predict's output is its rows, and a line at the end.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False


def _root_cause(exc: BaseException) -> str:
    """The first line of the error under Ray's wrappers; Ray prints the task's own traceback above it."""
    while (getattr(exc, "cause", None) or exc.__cause__) is not None:
        exc = getattr(exc, "cause", None) or exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def write_parquet(ds: "ray.data.Dataset", out_dir: str | os.PathLike) -> tuple[int, int]:
    """Write the Dataset's rows into ``out_dir``, complete or not at all; return (rows, rows with an error).

    The files go into a hidden folder beside ``out_dir`` that is renamed into place once every block is
    written; a failed job removes it and leaves any previous ``out_dir`` as it was. ``out_dir`` is a local
    path: on a cluster, a folder every node mounts (NFS, EFS, a Kubernetes volume).
    """
    target = Path(out_dir).absolute()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target}: exists and is not a folder")
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
    old = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.old"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()  # fails here, before any work, if the folder cannot be written
        ds.write_parquet(str(staging))
        if target.exists():
            target.rename(old)
        staging.rename(target)
    except Exception as exc:
        raise MNISTClassifierError(f"{target}: nothing written, the job failed ({_root_cause(exc)})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    files = list(target.glob("*.parquet"))
    errors = pq.read_table(files, columns=["error"])["error"] if files else pa.chunked_array([], pa.string())
    return len(errors), len(errors) - errors.null_count
