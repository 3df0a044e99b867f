"""Inference engines: what turns a stack of 28x28 digits into probabilities, chosen by name.

    engine = open_engine("onnx", "model.onnx")        # or open_engine("torch"): the shipped model
    engine.probabilities(images)                      # (N, 28, 28) -> (N, 10) float32
    engine.metadata["architecture"]                   # the model file's metadata, whichever engine

Every engine answers the same call, so ``predict``, ``evaluate`` and the server pick one by name and
never look inside. ``ENGINES`` is the one list of names; the CLI's ``--engine`` choices come from it.

- ``torch``: the model file in PyTorch, batch norm folded into the convolutions. The only
  one that uses CUDA, and the one a decoding pool forks beside safely (see OnnxEngine).
- ``onnx``: the model exported to ONNX (``onnx_export``) and run by onnxruntime on the CPU. It starts
  without importing torch when given an exported ``.onnx`` file or the shipped model (whose export ships
  beside it), and has less overhead per call. Given a ``.safetensors`` file it exports it on the fly, into
  memory, and keeps the result in the user cache dir keyed by the file's content, so that the next start
  reads it directly.
- ``auto`` (the default; evaluate's is torch, see COMMAND_DEFAULTS) picks one per model: onnx for the
  shipped model or an ``.onnx`` file when onnxruntime is installed and the device is the CPU, torch
  otherwise (a ``.safetensors`` file, CUDA).

This module imports neither torch nor onnxruntime: each engine imports its own runtime when opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelFileError, first_line

METADATA_KEY = "mnist_classifier"  # where a model file keeps its metadata: the safetensors header's key, and an
                                   # ONNX model's metadata_props key
ONNX_SUFFIX = ".onnx"
ONNX_BATCH = 64  # images per onnxruntime call: each layer's activations of a few dozen digits stay in cache


def pretrained_path() -> Path:
    """The model shipped inside the package, used wherever a command's model is left out."""
    return Path(__file__).parent / "pretrained" / "digits.safetensors"


def pretrained_onnx_path() -> Path:
    """The shipped model exported to ONNX (by ``mnist-classifier export``; a test checks it answers as the
    .safetensors file does), so that the onnx engine starts without torch."""
    return pretrained_path().with_suffix(ONNX_SUFFIX)


def model_input(images) -> np.ndarray:
    """uint8 (N, 28, 28) in 0..255, or float in [0, 1], with or without the channel axis -> float32 (N, 1, 28, 28)."""
    array = np.asarray(images)
    # One pass into one new array: astype then divide would write (and page in) the 60,000 digits twice.
    array = (np.divide(array, np.float32(255), dtype=np.float32) if array.dtype == np.uint8
             else array.astype(np.float32, copy=False))
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3:
        array = array[:, None]
    if array.shape[1:] != (1, 28, 28):
        raise ConfigError(f"expected images of shape (N, 28, 28), got {tuple(array.shape)}")
    return array


class TorchEngine:
    """A model file in PyTorch: BN folded for inference, on CUDA when asked for or present."""

    name = "torch"
    commands = ("predict", "evaluate", "serve")

    def __init__(self, loaded, threads: int | None = None):
        from .inference import prepare_for_inference

        if threads:
            import torch

            torch.set_num_threads(threads)
        self.model = loaded.model.eval()
        self.fast_model = prepare_for_inference(self.model)  # BN folded: same answers, faster
        self.metadata: dict = loaded.metadata
        self.model_path = str(loaded.path)

    @classmethod
    def open(cls, model=None, device: str = "auto", threads: int | None = None) -> TorchEngine:
        from .inference import resolve_device
        from .persist import LoadedModel, load_model, pretrained_path

        if isinstance(model, LoadedModel):
            return cls(model, threads)
        if model is not None and Path(model).suffix.lower() == ONNX_SUFFIX:
            raise ConfigError(f"{model}: an ONNX model runs with --engine onnx; the torch engine reads .safetensors")
        return cls(load_model(model or pretrained_path(), device=resolve_device(device)), threads)

    @classmethod
    def from_module(cls, module) -> TorchEngine:
        """A model that lives only in memory (during training, fine-tuning, a report)."""
        from .persist import LoadedModel

        return cls(LoadedModel(module, {}, Path("(in memory)")))

    def probabilities(self, images) -> np.ndarray:
        from .inference import predict_proba

        if len(images) == 0:
            return np.zeros((0, 10), dtype=np.float32)
        return predict_proba(self.fast_model, images)


class OnnxEngine:
    """An ONNX model (from ``export``) in onnxruntime, on the CPU, using every core this process may use."""

    name = "onnx"
    commands = ("predict", "evaluate", "serve")

    def __init__(self, onnx_bytes: bytes, model_path: str, threads: int | None = None):
        # The graph is checked and its metadata read by a session on the calling thread alone. The session
        # that runs batches starts a thread pool, so it is made at the first batch: a predictor forks its
        # decoding workers before that, and a fork never copies a process whose native threads may hold a lock.
        self._onnx_bytes, self._threads, self._session = onnx_bytes, threads or available_cores(), None
        try:
            probe = self._new_session(threads=1)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise ModelFileError(f"{model_path}: not a readable ONNX model ({first_line(exc)})") from None
        self.metadata: dict = _mnist_metadata(probe, model_path)
        self.model_path = model_path
        self.input_name = probe.get_inputs()[0].name

    def _new_session(self, threads: int):
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # a chain of layers: nothing runs side by side
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(self._onnx_bytes, options, providers=["CPUExecutionProvider"])

    @property
    def session(self):
        if self._session is None:
            self._session = self._new_session(self._threads)
        return self._session

    @classmethod
    def open(cls, model=None, device: str = "auto", threads: int | None = None) -> OnnxEngine:
        if device not in (None, "auto", "cpu"):
            raise ConfigError(f"the onnx engine runs on the CPU; --device {device} needs --engine torch")
        if _is_shipped(model) and pretrained_onnx_path().is_file():
            return cls(pretrained_onnx_path().read_bytes(), str(pretrained_path()), threads)
        if isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() == ONNX_SUFFIX:
            path = Path(model)
            if not path.is_file():
                raise ModelFileError(f"{path}: model file not found")
            return cls(path.read_bytes(), str(path), threads)
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise ConfigError("the onnx engine reads a model file (.onnx, or .safetensors to export), "
                              f"not a {type(model).__name__}")
        from .onnx_export import cached_export  # exporting needs torch; a cached or exported file does not

        path, onnx_bytes = cached_export(model)
        return cls(onnx_bytes, str(path), threads)

    def probabilities(self, images) -> np.ndarray:
        x = model_input(images)
        if len(x) == 0:
            return np.zeros((0, 10), dtype=np.float32)
        parts = [self.session.run(None, {self.input_name: x[i:i + ONNX_BATCH]})[0] for i in range(0, len(x), ONNX_BATCH)]
        return np.concatenate(parts).astype(np.float32, copy=False)


ENGINES = {engine.name: engine for engine in [TorchEngine, OnnxEngine]}
AUTO = "auto"
DEFAULT_ENGINE = AUTO
# evaluate prints the metrics a model file records, which torch computed when it was saved: the same engine
# gives them back to the last digit (onnxruntime's sums differ in the ninth decimal of the loss).
COMMAND_DEFAULTS = {"evaluate": "torch"}
# Engines that run the whole pipeline, not only the model, and the commands that offer them:
# ray reads, decodes and classifies files on Ray Data (mnist_classifier.distributed, the [ray] extra).
PIPELINE_ENGINES = {"ray": ("predict",)}


def default_engine(command: str) -> str:
    """What a command's --engine is when left out."""
    return COMMAND_DEFAULTS.get(command, DEFAULT_ENGINE)


def engine_names(command: str) -> list[str]:
    """The engines a command offers (its ``--engine`` choices)."""
    return ([AUTO] + [name for name, engine in ENGINES.items() if command in engine.commands]
            + [name for name, commands in PIPELINE_ENGINES.items() if command in commands])


def open_engine(name: str = DEFAULT_ENGINE, model=None, device: str = "auto", threads: int | None = None):
    """The named engine around ``model``: a model file, or None for the shipped model (the torch engine also
    takes a ``persist.LoadedModel``).

    ``threads``: the engine's intra-op threads (None: torch's default; for onnxruntime every core available).
    """
    if name == AUTO:
        name = auto_engine(model, device)
    try:
        engine = ENGINES[name]
    except KeyError:
        raise ConfigError(f"unknown engine {name!r} (choose from {', '.join([AUTO, *ENGINES])})") from None
    return engine.open(model, device=device, threads=threads)


def auto_engine(model=None, device: str | None = "auto") -> str:
    """What ``auto`` runs ``model`` on: onnx where it needs no export (the shipped model, an .onnx file) and
    onnxruntime is installed, on the CPU; torch otherwise. Decided without importing either."""
    import importlib.util

    if device not in (None, "auto", "cpu") or importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    if _is_shipped(model):
        return "onnx" if pretrained_onnx_path().is_file() else "torch"
    if isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() == ONNX_SUFFIX:
        return "onnx"
    return "torch"


def _is_shipped(model) -> bool:
    """Whether ``model`` means the shipped model: left out, or given by its path (its export ships beside it)."""
    return model is None or (isinstance(model, (str, os.PathLike)) and Path(model) == pretrained_path())


def is_engine(obj) -> bool:
    return isinstance(obj, tuple(ENGINES.values()))


def as_engine(model):
    """An engine as it is, or a torch module wrapped in the torch engine."""
    return model if is_engine(model) else TorchEngine.from_module(model)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("the onnx engine needs onnxruntime: pip install 'mnist-classifier[onnx]'") from None
    return onnxruntime


def _mnist_metadata(session, model_path: str) -> dict:
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ModelFileError(f"{model_path}: an ONNX model, but not an mnist-classifier one (no {METADATA_KEY} "
                             f"metadata): export it with mnist-classifier export")
    try:
        metadata = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError:
        raise ModelFileError(f"{model_path}: model metadata is not valid JSON") from None
    if not isinstance(metadata, dict) or "architecture" not in metadata:
        raise ModelFileError(f"{model_path}: model metadata has no architecture")
    return metadata
