"""Files, folders, bytes and arrays -> digit predictions; multi-digit numbers; "no digit".

    predictor = Predictor()                       # the shipped model, loaded once
    predictor.predict("photo.jpg")                # -> Prediction(digit=7, confidence=0.998, ...)
    predictor.predict_many(collect_images(["scans/"], recursive=True), progress=True)
    for p in predictor.iter_predictions(paths): ...   # the same, streamed: flat memory for any number of files
    predictor.read_number("cheque.png").number    # -> "2026"

A Predictor holds no mutable state while predicting, so one instance can serve several threads.
Batches are decoded in parallel worker processes (decoding is per-image Python, which threads would
serialize on the GIL), each normalizes its chunk as numpy stacks, then the model sees large batches.
"""

from __future__ import annotations

import glob
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .engines import DEFAULT_ENGINE, is_engine, open_engine
from .errors import ConfigError
from .preprocess import IMAGE_EXTENSIONS, occupied_span, prepare_batch, prepare_chunk, source_name
from .segment import prepare_number, prepare_number_chunk

DEFAULT_THRESHOLD = 0.6   # below this confidence an answer is flagged uncertain (still returned)
DEFAULT_TOP_K = 3
CHUNK = 256               # images per worker task: big enough to amortize inter-process traffic
PARALLEL_MIN = 64         # fewer images than this are decoded in-process (a pool costs ~0.1 s to start)
MODEL_BATCH = 1024        # images gathered before a forward pass
NO_PROBABILITIES = [0.0] * 10  # rows without a classification keep the 10-float shape of the contract
# Ink this many times wider than tall is not one digit: the widest of MNIST's 10,000 test digits is 2.0.
SEVERAL_DIGITS_ASPECT = 2.2
SEVERAL_DIGITS_NOTE = ("the ink is much wider than one digit: several digits side by side? "
                       "Read them as a number (predict --number, POST /v1/predict/number)")


@dataclass
class Prediction:
    """One input's answer. ``digit`` is None when there is no digit (``reason``) or the input is bad (``error``)."""

    path: str | None
    digit: int | None = None
    confidence: float = 0.0
    probabilities: list[float] = field(default_factory=lambda: list(NO_PROBABILITIES))
    top_k: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None
    uncertain: bool = False
    note: str | None = None          # a warning about the answer, e.g. when the image holds several digits
    image: np.ndarray | None = None  # the (28, 28) float array the model saw

    def to_dict(self, include_image: bool = False) -> dict:
        """One ``predict --json`` row (and one REST answer)."""
        row = {
            "path": self.path,
            "digit": self.digit,
            "confidence": round(float(self.confidence), 6),
            "probabilities": [round(float(p), 6) for p in self.probabilities],
            "top_k": [{"digit": int(d), "probability": round(float(p), 6)} for d, p in self.top_k],
            "uncertain": bool(self.uncertain),
            "note": self.note,
            "reason": self.reason,
            "error": self.error,
        }
        if include_image:
            row["image"] = None if self.image is None else np.round(self.image.astype(float), 3).tolist()
        return row


@dataclass
class DigitRead:
    """One digit of a number: what it is, how sure, and where: (x0, y0, x1, y1) in the original image's pixels."""

    digit: int
    confidence: float
    box: tuple[int, int, int, int]
    probabilities: list[float]
    image: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {"digit": self.digit, "confidence": round(float(self.confidence), 6), "box": list(self.box),
                "probabilities": [round(float(p), 6) for p in self.probabilities]}


@dataclass
class NumberPrediction:
    """A number read from one image. ``confidence`` is the product of the digits' (the whole string right)."""

    path: str | None
    number: str | None = None
    digits: list[DigitRead] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None
    uncertain: bool = False
    size: tuple[int, int] | None = None  # (width, height) of the image the boxes refer to

    @property
    def confidence(self) -> float:
        return float(np.prod([d.confidence for d in self.digits])) if self.digits else 0.0

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [d.box for d in self.digits]

    def to_dict(self) -> dict:
        """A ``predict --number --json`` row: the single-digit fields plus ``number`` and ``digits``."""
        single = self.digits[0] if len(self.digits) == 1 else None
        return {
            "path": self.path,
            "number": self.number,
            "digit": single.digit if single else None,
            "confidence": round(self.confidence, 6),
            "probabilities": [round(float(p), 6) for p in single.probabilities] if single else list(NO_PROBABILITIES),
            "digits": [d.to_dict() for d in self.digits],
            "size": list(self.size) if self.size else None,
            "uncertain": bool(self.uncertain),
            "reason": self.reason,
            "error": self.error,
        }


# ---------------------------------------------------------------------------------------------- inputs

def collect_images(paths, recursive: bool = False, extensions=IMAGE_EXTENSIONS) -> list[str]:
    """Expand files, directories and glob patterns to a sorted, de-duplicated list of paths.

    Files named explicitly are always kept (a bad one becomes an error row, not a silent skip); inside
    directories only names with one of ``extensions`` (case-insensitive) are taken. A path that does
    not exist and matches no glob is kept too, so that it is reported as "file not found".
    """
    suffixes = {"." + e.lower().lstrip(".") for e in extensions}
    found: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += _list_directory(path, suffixes, recursive)
        elif path.exists() or not glob.has_magic(str(raw)):
            found.append(str(raw))
        else:
            for match in sorted(glob.glob(str(raw), recursive=recursive)):
                if Path(match).is_dir():
                    found += _list_directory(Path(match), suffixes, recursive)
                else:
                    found.append(match)
    return list(dict.fromkeys(found))


def _list_directory(folder: Path, suffixes: set[str], recursive: bool) -> list[str]:
    if recursive:
        entries = [p for p in folder.rglob("*") if p.suffix.lower() in suffixes and not p.is_dir()]
    else:
        # A directory called "x.jpg" is listed so that it is reported, not silently skipped.
        entries = [p for p in folder.iterdir() if p.suffix.lower() in suffixes]
    return [str(p) for p in sorted(entries)]


# ---------------------------------------------------------------------------------------------- predictor

class Predictor:
    """A loaded model plus the image pipeline. Thread-safe: nothing mutable is shared between calls."""

    def __init__(self, model=None, device: str = "auto", threshold: float = DEFAULT_THRESHOLD,
                 workers: int | None = None, top_k: int = DEFAULT_TOP_K, pool: str = "process",
                 engine: str = DEFAULT_ENGINE):
        # model: a path, a persist.LoadedModel, an open engine (engines.open_engine), or None: the shipped model.
        self.engine = model if is_engine(model) else open_engine(engine, model, device=device)
        self.metadata: dict = self.engine.metadata
        self.model_path = self.engine.model_path
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must be between 0 and 1, got {threshold}")
        self.threshold = float(threshold)
        self.workers = workers or os.cpu_count() or 1
        self.top_k = max(1, min(10, int(top_k)))
        if pool not in ("process", "thread"):
            raise ConfigError(f"pool must be 'process' or 'thread', got {pool!r}")
        self.pool = pool  # processes: decoding is per-image Python that threads would serialize on the GIL

    # -------------------------------------------------------------- model

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) normalized images -> (N, 10) float32 probabilities, in large batches."""
        return self.engine.probabilities(images)

    def _answer(self, name, image, reason, error, probs, wide=False) -> Prediction:
        if error is not None or image is None:
            return Prediction(path=name, error=error, reason=None if error else reason)
        order = np.argsort(probs)[::-1][: self.top_k]
        digit, confidence = int(order[0]), float(probs[order[0]])
        note = SEVERAL_DIGITS_NOTE if wide else None
        return Prediction(path=name, digit=digit, confidence=confidence, probabilities=probs.tolist(),
                          top_k=[(int(d), float(probs[d])) for d in order],
                          uncertain=confidence < self.threshold or note is not None, note=note, image=image)

    def _classify(self, names, prepared) -> list[Prediction]:
        ready = [i for i, (image, _, _) in enumerate(prepared) if image is not None]
        scores = {}  # index -> (probabilities, wider than a digit)
        if ready:
            images = np.stack([prepared[i][0] for i in ready])
            scores = dict(zip(ready, zip(self.probabilities(images), _wider_than_a_digit(images))))
        return [self._answer(name, *prepared[i], *scores.get(i, (None, False))) for i, name in enumerate(names)]

    # -------------------------------------------------------------- public

    def predict(self, source, name: str | None = None) -> Prediction:
        """One input (path, bytes, PIL image or numpy array). Bad input -> ``error``; never raises for it."""
        label = source_name(source, name)
        return self._classify([label], prepare_batch([source], [label]))[0]

    def predict_many(self, sources, progress: bool = False, names=None) -> list[Prediction]:
        """Many inputs, in order. Decoding runs on all cores; a bad input costs only its own row."""
        return list(self.iter_predictions(sources, progress, names))

    def iter_predictions(self, sources, progress: bool = False, names=None) -> Iterator[Prediction]:
        """predict_many, one answer at a time as they are ready: memory stays flat for any number of inputs."""
        sources = list(sources)
        labels = [source_name(s, n) for s, n in zip(sources, names or [None] * len(sources))]
        pending_names, pending = [], []
        for names_part, prepared in self._prepared_chunks(prepare_chunk, sources, labels, progress):
            pending_names += names_part
            pending += prepared
            if len(pending) >= MODEL_BATCH * 4:
                yield from self._classify(pending_names, pending)
                pending_names, pending = [], []
        yield from self._classify(pending_names, pending)

    def read_number(self, source, name: str | None = None) -> NumberPrediction:
        """Read a multi-digit number written on one line. Bad input -> ``error``; never raises for it."""
        label = source_name(source, name)
        return self._read_prepared(label, prepare_number(source, label))

    def read_numbers(self, sources, progress: bool = False, names=None) -> list[NumberPrediction]:
        """Many numbers, in order; segmentation runs on all cores."""
        return list(self.iter_numbers(sources, progress, names))

    def iter_numbers(self, sources, progress: bool = False, names=None) -> Iterator[NumberPrediction]:
        """read_numbers, one answer at a time as they are ready."""
        sources = list(sources)
        labels = [source_name(s, n) for s, n in zip(sources, names or [None] * len(sources))]
        for names_part, prepared in self._prepared_chunks(prepare_number_chunk, sources, labels, progress):
            yield from (self._read_prepared(n, p) for n, p in zip(names_part, prepared))

    def _read_prepared(self, label, prepared) -> NumberPrediction:
        segments, reason, error, scale, size = prepared
        if error:
            return NumberPrediction(path=label, error=error)
        if reason or not segments:
            return NumberPrediction(path=label, reason=reason or "no ink found", size=size)
        probs = self.probabilities(np.stack([s.image for s in segments]))
        digits = [DigitRead(int(p.argmax()), float(p.max()), _scaled(s.box, scale), p.tolist(), s.image)
                  for s, p in zip(segments, probs)]
        return NumberPrediction(path=label, number="".join(str(d.digit) for d in digits), digits=digits,
                                uncertain=any(d.confidence < self.threshold for d in digits), size=size)

    # -------------------------------------------------------------- decoding in parallel

    def _prepared_chunks(self, work, sources, labels, progress):
        """Yield (labels, prepared) chunk by chunk, in order; workers run a bounded window ahead."""
        parallel = len(sources) >= PARALLEL_MIN and self.workers > 1
        size = CHUNK if not parallel else max(8, min(CHUNK, -(-len(sources) // (self.workers * 4))))
        chunks = [(sources[i:i + size], labels[i:i + size]) for i in range(0, len(sources), size)]
        bar = _progress_bar(progress and len(sources) > size, len(sources))
        try:
            if not parallel:
                for chunk in chunks:
                    yield chunk[1], work(chunk)
                    bar.update(len(chunk[1])) if bar else None
                return
            with self._executor() as pool:
                window = deque()
                for chunk in chunks:
                    window.append((chunk[1], pool.submit(work, chunk)))
                    if len(window) >= self.workers * 4:
                        yield self._next_done(window, bar)
                while window:
                    yield self._next_done(window, bar)
        finally:
            if bar:
                bar.close()

    @staticmethod
    def _next_done(window, bar):
        names, future = window.popleft()
        prepared = future.result()
        if bar:
            bar.update(len(names))
        return names, prepared

    def _executor(self):
        if self.pool == "thread":
            return ThreadPoolExecutor(max_workers=self.workers)
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=_pool_context(),
                                   initializer=_leave_interrupts_to_the_parent)


def _pool_context():
    import multiprocessing
    import threading

    # fork starts workers in milliseconds, and they only run torch-free code (preprocess, segment), so
    # torch's own thread pool is no obstacle. A process with other Python threads (a web server) may hold
    # a lock at the moment of forking; there a fork server starts the workers cleanly instead.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _wider_than_a_digit(images: np.ndarray) -> np.ndarray:
    """Which of (N, 28, 28) images hold a number squeezed into one field: far more columns of ink than rows."""
    ink = images > 0.05
    return occupied_span(ink.any(axis=1)) > SEVERAL_DIGITS_ASPECT * occupied_span(ink.any(axis=2))


def _leave_interrupts_to_the_parent() -> None:
    # Ctrl-C reaches every process of the terminal's group. The parent stops the pool; workers that
    # raised KeyboardInterrupt too would each print a traceback on the way out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="reading images", leave=False)


def _scaled(box, scale: float):
    return tuple(int(round(v * scale)) for v in box)


# ---------------------------------------------------------------------------------------------- output

CSV_FIELDS = ["path", "digit", "confidence", "uncertain", "note", "reason", "error"] + [f"p{d}" for d in range(10)]
NUMBER_CSV_FIELDS = ["path", "number", "confidence", "uncertain", "digits", "confidences", "boxes", "reason", "error"]


def csv_row(result) -> dict:
    """One flat ``--csv`` row of a Prediction or a NumberPrediction."""
    if isinstance(result, NumberPrediction):
        return {"path": result.path, "number": result.number or "", "confidence": f"{result.confidence:.6f}",
                "uncertain": int(result.uncertain), "digits": " ".join(str(d.digit) for d in result.digits),
                "confidences": " ".join(f"{d.confidence:.4f}" for d in result.digits),
                "boxes": " ".join(",".join(map(str, d.box)) for d in result.digits),
                "reason": result.reason or "", "error": result.error or ""}
    row = {"path": result.path, "digit": "" if result.digit is None else result.digit,
           "confidence": f"{result.confidence:.6f}", "uncertain": int(result.uncertain),
           "note": result.note or "", "reason": result.reason or "", "error": result.error or ""}
    row.update({f"p{d}": f"{p:.6f}" for d, p in enumerate(result.probabilities)})
    return row


@contextmanager
def csv_writer(path, numbers: bool = False):
    """``with csv_writer(path) as write: write(result)`` streams rows into a temp file in the same folder,
    renamed over ``path`` only when the block ends without an error (atomic)."""
    import csv

    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=NUMBER_CSV_FIELDS if numbers else CSV_FIELDS)
        writer.writeheader()
        yield lambda result: writer.writerow(csv_row(result))


def table_width(paths) -> int:
    """The path column's width: the longest path, within 4..60 characters."""
    return min(60, max([len(str(p)) for p in paths] + [4]))


def table_header(width: int, numbers: bool = False) -> list[str]:
    head = f"{'path':<{width}}  {'number' if numbers else 'digit':>8}  confidence  note"
    return [head, "-" * len(head)]


def table_line(result, width: int) -> str:
    """One table line of a Prediction or a NumberPrediction; errors and "no digit" reasons in the last column."""
    numbers = isinstance(result, NumberPrediction)
    path = str(result.path)
    path = path if len(path) <= width else "..." + path[-(width - 3):]
    value = result.number if numbers else result.digit
    note = (result.error or (f"no digit: {result.reason}" if result.reason else "")
            or (None if numbers else result.note) or ("uncertain" if result.uncertain else ""))
    shown = "-" if value is None else str(value)
    confidence = f"{result.confidence:10.4f}" if value is not None else f"{'':>10}"
    return f"{path:<{width}}  {shown:>8}  {confidence}  {note}".rstrip()
