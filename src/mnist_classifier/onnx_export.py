"""A model file as ONNX: one graph from pixels to probabilities, with the model file's metadata inside.

    export_model("digits.safetensors", "digits.onnx")   # what `mnist-classifier export` calls

The graph takes float32 images (N, 1, 28, 28), ink in [0, 1] on a 0 background as ``preprocess`` makes
them, for any N, and returns float32 probabilities (N, 10). The MNIST standardization is the models' own
first layer, so it is inside the graph too; an ensemble is one graph that averages its members. The
exporter is torch's own (``torch.export`` + onnxscript); onnx's checker passes on every graph written.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

from . import __version__
from .engines import METADATA_KEY, OnnxEngine, pretrained_path
from .errors import MNISTClassifierError, ModelFileError

OPSET = 18  # onnxscript's default opset for torch's exporter; onnxruntime has run it since 1.14
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"
CLASSES = list(range(10))  # output column d is digit d
PARITY_TOLERANCE = 1e-5  # max |onnxruntime - torch| probability allowed when an export is checked


class ExportError(MNISTClassifierError):
    """The model could not be exported, or the export does not answer as the model does."""


def to_onnx(module, metadata: dict) -> bytes:
    """The serialized ONNX model of a torch module, checked by onnx's checker, ``metadata`` in its metadata_props."""
    import onnx
    import torch

    # Softmax over the model's output (logits, or an ensemble's mean log-probability): the graph answers
    # what predict reports. A copy: the caller's model keeps its device and mode.
    model = torch.nn.Sequential(copy.deepcopy(module).cpu(), torch.nn.Softmax(dim=1)).eval()
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(model, (torch.zeros(2, 1, 28, 28),), input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=True,
                                        dynamic_shapes=({0: batch},), verbose=False)
    except ImportError as exc:
        raise ExportError(f"exporting to ONNX needs onnx and onnxscript: pip install 'mnist-classifier[onnx]' "
                          f"({exc})") from None
    proto = program.model_proto
    proto.doc_string = f"mnist-classifier {metadata.get('architecture', '?')}: {INPUT_NAME} -> {OUTPUT_NAME}"
    onnx.helper.set_model_props(proto, _metadata_props(metadata))
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def export_model(model=None, out: str | os.PathLike = "model.onnx") -> dict:
    """Export a model file (None: the shipped model) to ``out``, written atomically, after checking that
    onnxruntime answers as torch does. Returns what was written."""
    from .atomic import write_bytes
    from .persist import load_model, pretrained_path

    loaded = load_model(model or pretrained_path())
    onnx_bytes = to_onnx(loaded.model, loaded.metadata)
    difference = parity(onnx_bytes, loaded.model)
    if difference > PARITY_TOLERANCE:
        raise ExportError(f"{loaded.path}: the ONNX graph's probabilities differ from torch's by {difference:.2e} "
                          f"(allowed {PARITY_TOLERANCE:.0e}); nothing written")
    path = write_bytes(out, onnx_bytes)
    return {"model": str(loaded.path), "out": str(path), "architecture": loaded.metadata["architecture"],
            "opset": OPSET, "bytes": len(onnx_bytes), "max_probability_difference": difference}


def parity(onnx_bytes: bytes, module, n: int = 64, seed: int = 0) -> float:
    """Max |probability difference| between onnxruntime and torch on ``n`` seeded random images."""
    import numpy as np
    import torch

    images = np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)
    with torch.inference_mode():
        expected = torch.softmax(copy.deepcopy(module).cpu().eval()(torch.from_numpy(images[:, None])), 1).numpy()
    got = OnnxEngine(onnx_bytes, "(exported)").probabilities(images)
    return float(np.abs(got - expected).max())


def cached_export(model=None) -> tuple[Path, bytes]:
    """(model file, ONNX bytes) of a .safetensors model (None: the shipped one), exported on the first call and
    kept in the user cache dir under the file's content hash: later processes skip torch's exporter."""
    from .atomic import write_bytes
    from .data import cache_dir

    path = Path(model if model is not None else pretrained_path())
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    # The package version is part of the key: a new release exports anew instead of reading an old graph.
    key = hashlib.sha256(path.read_bytes() + f"{__version__}/{OPSET}".encode()).hexdigest()[:24]
    cached = cache_dir() / "onnx" / f"{path.stem}-{key}.onnx"
    if cached.is_file():
        return path, cached.read_bytes()
    from .persist import load_model

    loaded = load_model(path)
    onnx_bytes = to_onnx(loaded.model, loaded.metadata)
    with contextlib.suppress(OSError):  # a read-only home only costs the next start another export
        write_bytes(cached, onnx_bytes)
    return path, onnx_bytes


def _metadata_props(metadata: dict) -> dict[str, str]:
    import torch

    return {
        METADATA_KEY: json.dumps(metadata),  # the model file's metadata, as its safetensors header holds it
        "architecture": str(metadata.get("architecture")),
        "classes": json.dumps(CLASSES),
        "input": f"{INPUT_NAME}: float32 (N, 1, 28, 28), ink in [0, 1] on a 0 background (MNIST style); "
                 f"standardized inside the graph",
        "output": f"{OUTPUT_NAME}: float32 (N, 10), column d is the probability of digit d",
        "export": json.dumps({"package_version": __version__, "torch_version": torch.__version__, "opset": OPSET}),
    }


@contextlib.contextmanager
def _quiet_exporter():
    """torch's exporter logs about optional torchvision ops and warns about its own internals: not the user's
    concern, so those lines are held back while it runs."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)
