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

import fnmatch
import glob
import multiprocessing.connection
import os
import signal
import stat
import sys
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import numpy as np

from .engines import DEFAULT_ENGINE, is_engine, open_engine
from .errors import ConfigError, MNISTClassifierError
from .decode import HARMLESS_IMAGE_PATTERN, IMAGE_EXTENSIONS, source_name
from .fit import occupied_span
from .preprocess import PreparedDigit, prepare_chunk
from .reprs import compact_repr
from .segment import PreparedNumber, prepare_number_chunk

DEFAULT_THRESHOLD = 0.6   # below this confidence an answer is flagged uncertain (still returned)
DEFAULT_TOP_K = 3
CHUNK = 256               # images per worker task: big enough to amortize inter-process traffic
PARALLEL_MIN = 64         # fewer images than this are decoded in-process: a pool costs more to start than it saves
MODEL_BATCH = 1024        # images gathered before a forward pass
WORKER_CHECK_SECONDS = 0.2  # a wait for decoded images looks this often whether a worker has died
NO_PROBABILITIES = [0.0] * 10  # rows without a classification keep the 10-float shape of the contract
# Ink this many times wider than tall is not one digit: the widest of MNIST's 10,000 test digits is 2.0.
SEVERAL_DIGITS_ASPECT = 2.2
SEVERAL_DIGITS_NOTE = ("the ink is much wider than one digit: several digits side by side? "
                       "Read them as a number (predict --number, POST /v1/predict/number)")


def _compact_repr(obj, names: tuple[str, ...]) -> str:
    """``Type(a=1, b=0.99, ...)``: confidences to two places, no arrays."""
    return compact_repr(obj, {name: getattr(obj, name) for name in names}, places=2)


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

    def __repr__(self) -> str:
        return _compact_repr(self, ("path", "digit", "confidence", "uncertain", "reason", "note", "error"))

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

    def __repr__(self) -> str:
        return _compact_repr(self, ("digit", "confidence", "box"))

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

    def __repr__(self) -> str:
        return _compact_repr(self, ("path", "number", "confidence", "uncertain", "reason", "error"))

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
    """Expand files, directories and glob patterns to a sorted list of paths, each file listed once.

    Files named explicitly are always kept (a bad one becomes an error row, not a silent skip); inside
    directories only names with one of ``extensions`` (case-insensitive) are taken. A path that does
    not exist and matches no glob is kept too, so that it is reported as "file not found".
    Symbolic links are followed, but each real directory is entered once, so a link loop is followed at
    most once; a file reached by several paths (through links) is listed once, under the first of them.
    """
    suffixes = {"." + e.lower().lstrip("*.") for e in extensions}  # "png", ".png" and "*.png" alike
    found: list[tuple[str, str]] = []  # (path as shown, real path)
    for raw in map(os.fspath, paths):
        if os.path.isdir(raw):
            found += sorted(_walk(raw, suffixes, recursive), key=_path_order)
        elif os.path.lexists(raw) or not glob.has_magic(raw):
            found.append((raw, os.path.realpath(raw)))
        else:
            found += sorted(_glob(raw, suffixes, recursive), key=_path_order)
    first_path = {}
    for path, real in found:
        first_path.setdefault(real, path)
    return list(first_path.values())


def nothing_found(paths, recursive: bool = False, extensions=IMAGE_EXTENSIONS) -> str:
    """Why ``collect_images`` found no file, path by path, in one line: a glob matched none, or a folder
    holds no file with an image extension (and maybe has subfolders, which only a recursive look enters)."""
    reasons = []
    for raw in map(os.fspath, paths):
        if not os.path.isdir(raw):
            reasons.append(f"{raw} matches no file")
            continue
        reason = f"{raw} holds no file named *.{{{','.join(e.lstrip('*.') for e in extensions)}}}"
        try:
            with os.scandir(raw) as listing:
                has_subfolders = any(entry.is_dir() for entry in listing)
        except OSError as exc:  # unreadable: say so rather than blame the extensions
            reasons.append(f"{raw} cannot be listed ({exc.strerror or exc})")
            continue
        if has_subfolders and not recursive:
            reason += " (its subfolders are read with --recursive)"
        reasons.append(reason)
    return "no images found: " + "; ".join(reasons)


def _path_order(item: tuple[str, str]) -> list[str]:
    """Directory by directory, then by name. The paths sorted together all start with the same folder,
    so splitting the string orders them as their parts would, without a Path for each."""
    return item[0].split(os.sep)


def _walk(folder: str, suffixes: set[str], recursive: bool, pattern: tuple[str, ...] | None = None):
    """(path, real path) of the files with an image suffix in ``folder`` (and below it when recursive);
    given a glob ``pattern`` (its parts below ``folder``), of the files it matches and of the images in
    the directories it matches. Breadth first and each real directory once: a link loop costs one visit."""
    entered: set[tuple[int, int]] = set()
    pending = deque([(folder, (), pattern is None)])  # (directory, its parts below folder, all its images wanted)
    while pending:
        top, parts, whole = pending.popleft()
        try:
            info = os.stat(top)
            if (info.st_dev, info.st_ino) in entered:
                continue
            entered.add((info.st_dev, info.st_ino))
            real_top = os.path.realpath(top)
            with os.scandir(top) as listing:
                # Real entries before links: a directory is shown under its own name where it can be.
                entries = sorted(listing, key=lambda e: (e.is_symlink(), e.name))
        except OSError:
            continue  # vanished or unreadable: nothing to list
        for entry in entries:
            below = (*parts, entry.name)
            matched = pattern is not None and _glob_match(below, pattern)
            if entry.is_dir():
                inside = matched or (whole and recursive)
                if inside or (pattern is not None and _glob_match(below, pattern, prefix=True)):
                    pending.append((entry.path, below, inside))
                    continue
            # A directory called "x.jpg" is listed so that it is reported, not silently skipped.
            if matched or (whole and os.path.splitext(entry.name)[1].lower() in suffixes):
                real = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_top, entry.name)
                yield entry.path, real


def _glob(raw: str, suffixes: set[str], recursive: bool):
    """A glob pattern's matches as (path, real path), found by _walk (which visits each directory once,
    where glob.glob follows link loops over and over)."""
    parts = Path(raw).parts
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root = os.path.join(*parts[:fixed]) if fixed else os.curdir
    pattern = tuple(p if recursive or p != "**" else "*" for p in parts[fixed:])  # as glob.glob: "**" needs -r
    for path, real in _walk(root, suffixes, recursive, pattern):
        yield (os.path.relpath(path) if not fixed else path), real


def _glob_match(parts: tuple[str, ...], pattern: tuple[str, ...], prefix: bool = False) -> bool:
    """Whether path ``parts`` match the glob ``pattern``'s parts (with ``prefix``: could, once longer), by
    glob.glob's rules: "**" spans any number of directories; a name starting with "." needs a pattern
    part that starts with "." too. Names match whatever their case, as the folder extension filter does:
    "*.png" takes "B.PNG"."""
    parts = tuple(part.lower() for part in parts)
    pattern = tuple(part.lower() for part in pattern)

    @lru_cache(maxsize=None)  # on (part, pattern part): linear time, however many "**" there are
    def match(i: int, j: int) -> bool:
        if i == len(parts):
            return j < len(pattern) if prefix else all(p == "**" for p in pattern[j:])
        if j == len(pattern):
            return False
        hidden = parts[i].startswith(".")
        if pattern[j] == "**":
            return match(i, j + 1) or (not hidden and match(i + 1, j))
        return (hidden <= pattern[j].startswith(".") and fnmatch.fnmatchcase(parts[i], pattern[j])
                and match(i + 1, j + 1))

    return match(0, 0)


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
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.workers = min(workers or usable_cores(), usable_cores())  # more processes than cores only add memory
        self.top_k = max(1, min(10, int(top_k)))
        if pool not in ("process", "thread"):
            raise ConfigError(f"pool must be 'process' or 'thread', got {pool!r}")
        self.pool = pool  # processes: decoding is per-image Python that threads would serialize on the GIL

    # -------------------------------------------------------------- model

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 28, 28) normalized images -> (N, 10) float32 probabilities, in large batches."""
        return self.engine.probabilities(images)

    def _classify(self, names, prepared) -> list[Prediction]:
        """The answers for prepared images: every image with ink goes through the model in one call, and
        the answers are ranked as one array."""
        ready = [i for i, p in enumerate(prepared) if p.image is not None]
        answers = {}
        if ready:
            images = np.stack([prepared[i].image for i in ready])
            probs = self.probabilities(images)
            ranked = np.argsort(probs, axis=1)[:, ::-1][:, :self.top_k]
            answers = dict(zip(ready, zip(probs.tolist(), ranked.tolist(), _wider_than_a_digit(images).tolist())))
        return [self._answer(name, p, *answers[i]) if p.error is None and i in answers
                else Prediction(path=name, error=p.error, reason=None if p.error else p.reason)
                for i, (name, p) in enumerate(zip(names, prepared))]

    def _answer(self, name, prepared, probs: list[float], ranked: list[int], wide: bool) -> Prediction:
        digit, note = ranked[0], SEVERAL_DIGITS_NOTE if wide else None
        return Prediction(path=name, digit=digit, confidence=probs[digit], probabilities=probs,
                          top_k=[(d, probs[d]) for d in ranked],
                          uncertain=probs[digit] < self.threshold or note is not None, note=note, image=prepared.image)

    # -------------------------------------------------------------- public

    def predict(self, source, name: str | None = None) -> Prediction:
        """One input (path, bytes, PIL image or numpy array). Bad input -> ``error``; never raises for it."""
        label = source_name(source, name)
        return self._classify([label], prepare_safely(prepare_chunk, ([source], [label])))[0]

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
        return self._read_numbers([label], prepare_safely(prepare_number_chunk, ([source], [label])))[0]

    def read_numbers(self, sources, progress: bool = False, names=None) -> list[NumberPrediction]:
        """Many numbers, in order; segmentation runs on all cores."""
        return list(self.iter_numbers(sources, progress, names))

    def iter_numbers(self, sources, progress: bool = False, names=None) -> Iterator[NumberPrediction]:
        """read_numbers, one answer at a time as they are ready."""
        sources = list(sources)
        labels = [source_name(s, n) for s, n in zip(sources, names or [None] * len(sources))]
        for names_part, prepared in self._prepared_chunks(prepare_number_chunk, sources, labels, progress):
            yield from self._read_numbers(names_part, prepared)

    def _read_numbers(self, labels, prepared: list[PreparedNumber]) -> list[NumberPrediction]:
        """The answers for prepared numbers: all their digits go through the model in one call."""
        images = [segment.image for p in prepared for segment in p.segments]  # none where error or reason
        probs = self.probabilities(np.stack(images)) if images else np.zeros((0, 10), np.float32)
        ends = np.cumsum([len(p.segments) for p in prepared], dtype=int)
        return [self._read_prepared(label, p, probs[end - len(p.segments):end])
                for label, p, end in zip(labels, prepared, ends)]

    def _read_prepared(self, label, prepared: PreparedNumber, probs: np.ndarray) -> NumberPrediction:
        """A number's answer from its prepared segments and their probabilities (one row per segment)."""
        segments, scale, size = prepared.segments, prepared.scale, prepared.size
        if prepared.error:
            return NumberPrediction(path=label, error=prepared.error)
        if prepared.reason or not segments:
            return NumberPrediction(path=label, reason=prepared.reason or "no ink found", size=size)
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
        work = partial(prepare_safely, work)
        bar = _progress_bar(progress and len(sources) > size, len(sources))
        try:
            if not parallel:
                for chunk in chunks:
                    yield chunk[1], work(chunk)
                    bar.update(len(chunk[1])) if bar else None
                return
            yield from self._in_pool(work, chunks, bar)
        finally:
            if bar:
                bar.close()

    def _in_pool(self, work, chunks, bar):
        pool = self._executor()
        try:
            window = deque()
            for chunk in chunks:
                window.append((chunk[1], pool.submit(work, chunk)))
                if len(window) >= self.workers * 4:
                    yield self._next_done(pool, window, bar)
            while window:
                yield self._next_done(pool, window, bar)
        except BrokenProcessPool:  # raised by submit() or result(), whichever first sees the dead worker
            _stop_now(pool)
            raise MNISTClassifierError("a decoding worker process ended unexpectedly "
                                       "(killed by a signal, or out of memory)") from None
        except BaseException:  # interrupted, stopped by a signal, or the reader stopped early
            _stop_now(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _next_done(pool, window, bar):
        names, future = window.popleft()
        while not wait([future], timeout=WORKER_CHECK_SECONDS).done:
            if _a_worker_ended(pool):
                raise BrokenProcessPool("a worker process ended while its pool was in use")
        prepared = future.result()
        if bar:
            bar.update(len(names))
        return names, prepared

    def _executor(self):
        if self.pool == "thread":
            return ThreadPoolExecutor(max_workers=self.workers)
        context = _pool_context()
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_start_worker,
                                   initargs=(os.getpid(), context.get_start_method()))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cgroup cpusets, containers), which
    os.cpu_count() ignores."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _worker_processes(pool) -> list:
    """The worker processes of a process pool (none for a thread pool). The executor has no public way to
    reach them before Python 3.14 (kill_workers)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _a_worker_ended(pool) -> bool:
    """Whether a worker of a process pool has ended. The executor looks for that itself, but not while it
    reads a result: a worker killed halfway through sending one leaves it waiting for the rest forever."""
    sentinels = [process.sentinel for process in _worker_processes(pool)]
    return bool(multiprocessing.connection.wait(sentinels, timeout=0))


def _stop_now(pool) -> None:
    """Drop the queued chunks, kill the decoding workers (nobody waits for their answers any more), and
    wait for the executor's thread to finish, so that nothing of the pool is left running at exit."""
    if not isinstance(pool, ProcessPoolExecutor):
        pool.shutdown(wait=False, cancel_futures=True)
        return
    # shutdown() forgets the executor's processes, queues and thread: they are taken first.
    processes, results, manager = _worker_processes(pool), pool._result_queue, pool._executor_manager_thread
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.kill()
    # The executor's thread may be reading a result that a killed worker never finished sending: once
    # this process's copy of the pipe's writing end is closed as well, it reads the end of the pipe.
    results._writer.close()
    if manager is not None:
        manager.join()


def _pool_context():
    # fork starts workers without importing anything again, and they only run torch-free code (preprocess,
    # segment), so torch's own thread pool is no obstacle. A process with other Python threads (a web
    # server) may hold a lock at the moment of forking; there a fork server starts the workers cleanly instead.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _wider_than_a_digit(images: np.ndarray) -> np.ndarray:
    """Which of (N, 28, 28) images hold a number squeezed into one field: far more columns of ink than rows."""
    ink = images > 0.05
    return occupied_span(ink.any(axis=1)) > SEVERAL_DIGITS_ASPECT * occupied_span(ink.any(axis=2))


def _start_worker(parent: int, start_method: str) -> None:
    # Ctrl-C and a terminal's hangup reach every process of its group. The parent stops the pool; workers
    # that raised KeyboardInterrupt too would each print a traceback on the way out. SIGTERM gets its
    # default back (a forked worker inherits the parent's handler): the executor ends workers with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_the_parent(parent, start_method)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_the_parent(parent: int, start_method: str) -> None:
    """Let the kernel kill this worker when its parent ends, however it ends, SIGKILL included.

    A parent killed with SIGKILL cleans nothing up, so only the kernel can. PR_SET_PDEATHSIG needs no
    watcher thread and no polling in the worker (a pipe or parent-pid watcher needs both, and a polled
    pid can be reused). It fires when the thread that forked the worker ends: fork is only used from a
    single-threaded process (_pool_context); under forkserver the parent is the fork server, which ends
    when the process it serves does.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if start_method == "forkserver":
        _let_go_of_the_fork_servers_lifeline()
        ended = not _alive(parent)
    else:
        ended = os.getppid() != parent
    if ended:  # the parent ended between the fork and the prctl: no signal would ever come
        os._exit(1)


def _let_go_of_the_fork_servers_lifeline() -> None:
    # The fork server ends when the last copy of the pipe it was started with closes, and it hands a copy
    # to every process it forks: while this worker held one, the server (and so this worker) would
    # outlive a killed parent forever. A decoding worker starts no processes, so it needs none.
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    lifeline = getattr(server, "_forkserver_alive_fd", None)
    if lifeline is not None:
        os.close(lifeline)
        server._forkserver_alive_fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


# ---------------------------------------------------------------------------------------------- screening

def prepare_safely(work, chunk: tuple[list, list]) -> list:
    """``work`` (prepare_chunk or prepare_number_chunk) on one chunk, where a file that is no regular file
    (a FIFO, device or socket: opening one can block forever) is refused unopened, and a library warning
    while decoding becomes that input's error instead of a line on stderr."""
    sources, names = chunk
    refused = {i: problem for i, source in enumerate(sources) if (problem := _not_a_regular_file(source, names[i]))}
    kept = [i for i in range(len(sources)) if i not in refused]
    with _decoding_quietly():
        prepared = iter(work(([sources[i] for i in kept], [names[i] for i in kept])) if kept else [])
    return [_ERROR_ROWS[work](refused[i]) if i in refused else next(prepared) for i in range(len(sources))]


_ERROR_ROWS = {  # one failed input's row, for each kind of work
    prepare_chunk: lambda error: PreparedDigit(None, None, error),
    prepare_number_chunk: lambda error: PreparedNumber([], error=error),
}

# Warnings about the code, not the input: never a reason to refuse an image, and no news for the user.
CODE_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning, ImportWarning, ResourceWarning)


@contextmanager
def _decoding_quietly():
    """While decoding, a library warning is an exception (which costs that input its row), and what C
    decoders write straight to file descriptor 2 (libtiff's complaints, which Pillow also raises as an
    error or a harmless warning) goes to /dev/null.

    Both are process-wide. Decoding workers and the command line have one thread; a process with others
    (a server) keeps them as they are, or those threads' warnings and messages would be lost too.
    """
    if threading.active_count() > 1:
        yield
        return
    with warnings.catch_warnings(), _stderr_to_devnull():
        warnings.simplefilter("error")
        for category in CODE_WARNINGS:
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", message=HARMLESS_IMAGE_PATTERN)
        yield


@contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _not_a_regular_file(source, name) -> str | None:
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        mode = os.stat(source).st_mode
    except OSError:
        return None  # missing or unreadable: opening it says which, in the usual words
    kind = next((kind for test, kind in _SPECIAL_FILES if test(mode)), None)
    return f"{source_name(source, name)}: not a regular file ({kind})" if kind else None


_SPECIAL_FILES = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="reading images", leave=False)


def _scaled(box, scale: float):
    return tuple(int(round(v * scale)) for v in box)
