"""Training checkpoints: all a run needs to continue bit for bit, in one safetensors file, without pickle.

A checkpoint is a nested dict (the model's and the optimizer's state dicts, the LR schedule's state, every
random generator's state, the history, the run's settings). ``write`` splits it in two: its tensors go into
the safetensors body, and everything else becomes JSON in the safetensors header, with a small marker where
each tensor was. Reading one back therefore never executes anything, as with a model file (``torch.save``
and ``torch.load`` would pickle). Each epoch's checkpoint replaces the previous one atomically, so a run
killed at any moment leaves the last complete epoch's checkpoint whole.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .errors import TrainingError, first_line

FILE_NAME = "checkpoint.safetensors"
METADATA_KEY = "mnist_classifier_checkpoint"
FORMAT_VERSION = 1


def checkpoint_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / FILE_NAME


def write(folder: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` as the folder's checkpoint, replacing the previous one atomically."""
    body, tensors = flatten(state)
    header = json.dumps({"format_version": FORMAT_VERSION, "state": body}, allow_nan=False)
    path = checkpoint_path(folder)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: header})
    return path


def read(folder: str | os.PathLike) -> dict:
    """The folder's checkpoint as ``write`` was given it, or a one-line TrainingError."""
    path = checkpoint_path(folder)
    if not path.is_file():
        raise TrainingError(f"{folder}: no checkpoint to resume ({FILE_NAME} not found)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = json.loads((fh.metadata() or {})[METADATA_KEY])
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {header.get('format_version')!r}, expected {FORMAT_VERSION}")
        return unflatten(header["state"], tensors)
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise TrainingError(f"{path}: not a readable checkpoint ({first_line(exc)})") from None


# ---------------------------------------------------------------- nested state <-> JSON + tensors

def flatten(tree, path: str = "") -> tuple[object, dict[str, torch.Tensor]]:
    """(JSON-able tree, tensors by name): each tensor is replaced by ``{"$tensor": name}``.

    Markers keep what JSON alone would lose: tuples, dicts with integer keys (an optimizer's state is keyed
    by parameter index), numpy arrays and their dtype, and non-finite floats (JSON has none).
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(value, where: str):
        if isinstance(value, torch.Tensor):
            tensors[where] = value.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
            return {"$tensor": where}
        if isinstance(value, np.ndarray):
            tensors[where] = torch.from_numpy(value.astype(np.int64) if value.dtype.kind in "ui" else value.copy())
            return {"$ndarray": where, "dtype": value.dtype.str}
        if isinstance(value, np.generic):
            return encode(value.item(), where)
        if isinstance(value, float) and not math.isfinite(value):
            return {"$float": repr(value)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            items = [encode(v, f"{where}/{i}") for i, v in enumerate(value)]
            return {"$tuple": items} if isinstance(value, tuple) else items
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: encode(v, f"{where}/{k}") for k, v in value.items()}
            return {"$items": [[encode(k, f"{where}/{k}#key"), encode(v, f"{where}/{k}")] for k, v in value.items()]}
        raise TypeError(f"cannot checkpoint {type(value).__name__} at {where or '/'}")

    return encode(tree, path), tensors


def unflatten(tree, tensors: dict[str, torch.Tensor]):
    """The inverse of ``flatten``."""
    if isinstance(tree, list):
        return [unflatten(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "$tensor" in tree:
        return tensors[tree["$tensor"]]
    if "$ndarray" in tree:
        return tensors[tree["$ndarray"]].numpy().astype(np.dtype(tree["dtype"]))
    if "$float" in tree:
        return float(tree["$float"])
    if "$tuple" in tree:
        return tuple(unflatten(v, tensors) for v in tree["$tuple"])
    if "$items" in tree:
        return {unflatten(k, tensors): unflatten(v, tensors) for k, v in tree["$items"]}
    return {k: unflatten(v, tensors) for k, v in tree.items()}


# ---------------------------------------------------------------- random generators

def rng_states(generator: torch.Generator) -> dict:
    """Every generator a training run may draw from: torch's global one (dropout), CUDA's, numpy's,
    Python's, and the run's own ``generator`` (data order and augmentation)."""
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
              "generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    generator.set_state(states["generator"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
