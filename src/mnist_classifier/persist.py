"""One model file: safetensors weights plus JSON metadata in the safetensors header.

Safetensors stores raw tensors and a JSON header only, so loading a model file can never execute code
(unlike pickle-based ``torch.save``). Our metadata lives under one header key, which is also how a
foreign safetensors file is told apart from ours.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .atomic import atomic_path
from .engines import METADATA_KEY, pretrained_path  # noqa: F401 (pretrained_path is public here too)
from .errors import ConfigError, ModelFileError, first_line
from .models import build_model, check_config

FORMAT_VERSION = 1
# A model file's header holds the tensor list and our metadata (config, metrics, a training history):
# kilobytes. Anything far larger is not one of ours, and parsing it would cost memory in proportion.
MAX_HEADER_BYTES = 1 << 22
_DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64"}  # safetensors' names of the dtypes models hold


@dataclass
class LoadedModel:
    model: torch.nn.Module  # in eval mode, on the requested device
    metadata: dict
    path: Path


class CombinedModel(NamedTuple):
    """An ensemble made by combine_models, ready for save_model(path, model, "ensemble", config, **metadata)."""

    model: torch.nn.Module  # in eval mode, on the requested device
    config: dict            # the ensemble's architecture config: each member's architecture and config
    metadata: dict          # {"member_models": [each member's file name and training record]}


def save_model(path: str | os.PathLike, model: torch.nn.Module, architecture: str, config: dict,
               **metadata) -> Path:
    """Write weights and metadata atomically (temp file + rename): a crash never leaves half a model."""
    path = Path(path)
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "config": config,
        "package_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **metadata,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(meta)})
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """Our JSON metadata from a model file, validated (validate_metadata) before anything else is read."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors model file ({_short(first_line(exc), 200)})") from None
    if METADATA_KEY not in header:
        raise ModelFileError(f"{path}: a safetensors file, but not an mnist-classifier model (no {METADATA_KEY} metadata)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except (ValueError, RecursionError):  # also numbers of thousands of digits, and nesting thousands deep
        raise ModelFileError(f"{path}: model metadata is not valid JSON") from None
    return validate_metadata(meta, path)


def validate_metadata(meta, path: str | os.PathLike) -> dict:
    """The metadata's schema: a mapping with this format version, a registered architecture, and a config
    whose every option is of the right type and within the architecture's bounds (models.check_config;
    an ensemble's members each likewise). One-line ModelFileError naming the file otherwise."""
    if not isinstance(meta, dict) or "architecture" not in meta:
        raise ModelFileError(f"{path}: model metadata has no architecture")
    version = meta.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ModelFileError(f"{path}: model format version {_short(version)} is not {FORMAT_VERSION}, the one "
                             f"this version of mnist-classifier reads")
    try:
        check_config(meta["architecture"], meta.get("config", {}))
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the architecture named in the file and load its weights (never unpickling anything).

    In this order, so that a bad file costs next to nothing: the metadata is validated; the tensors the
    file lists (names, dtypes, shapes, from its header) are compared with those of the architecture; the
    weights are read and must be finite; only then is the model built.
    """
    path = Path(path)
    meta = read_metadata(path)
    name, config = meta["architecture"], meta.get("config", {})
    try:
        with safe_open(str(path), framework="pt") as fh:
            _check_tensors(fh, name, config, path)
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ModelFileError(f"{path}: weights do not match architecture {name!r} "
                             f"or are corrupt ({_short(first_line(exc), 200)})") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelFileError(f"{path}: weights contain NaN or infinite values (tensor {key})")
    model = build_model(name, **config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # the checks above leave nothing for this to find; should it, still one line
        raise ModelFileError(f"{path}: weights do not match architecture {name!r} ({_short(first_line(exc), 200)})") from None
    model.to(device).eval()
    return LoadedModel(model, meta, path)


def _check_header_size(path: Path) -> None:
    """Refuse a header too large for a model file of ours before safetensors parses it."""
    with open(path, "rb") as fh:
        prefix = fh.read(8)
    size = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
    if size > MAX_HEADER_BYTES:
        raise ModelFileError(f"{path}: not a readable safetensors model file (its header would be {size} bytes, "
                             f"over the {MAX_HEADER_BYTES} a model file's header may have)")


def _check_tensors(fh, name: str, config: dict, path: Path) -> None:
    """The file's tensors against the architecture's: same names, dtypes and shapes, read from the header
    only. The expected ones come from the model built on the meta device, which allocates nothing."""
    with torch.device("meta"):
        expected = {k: (_DTYPE_NAMES.get(v.dtype, str(v.dtype)), list(v.shape))
                    for k, v in build_model(name, **config).state_dict().items()}
    found = {k: (fh.get_slice(k).get_dtype(), list(fh.get_slice(k).get_shape())) for k in fh.keys()}
    problem = None
    if set(found) - set(expected):
        problem = f"unexpected tensor {_short(sorted(set(found) - set(expected))[0])}"
    elif set(expected) - set(found):
        problem = f"missing tensor {sorted(set(expected) - set(found))[0]}"
    else:
        wrong = next((k for k in expected if found[k] != expected[k]), None)
        if wrong:
            problem = (f"tensor {wrong} is {found[wrong][0]} {found[wrong][1]}, "
                       f"expected {expected[wrong][0]} {expected[wrong][1]}")
    if problem:
        raise ModelFileError(f"{path}: weights do not match architecture {name!r} ({_short(problem, 160)})")


def combine_models(paths, device: str | torch.device = "cpu") -> CombinedModel:
    """One ensemble from several model files, as a CombinedModel: the model, its config, and metadata
    recording each member's file and training. It unpacks as ``model, config, metadata``."""
    loaded = [load_model(path, device=device) for path in paths]
    members = [{"architecture": m.metadata["architecture"], "config": m.metadata.get("config", {})} for m in loaded]
    try:
        model = build_model("ensemble", members=members)
    except ConfigError as exc:
        raise ModelFileError(f"cannot combine {', '.join(map(str, paths))}: {exc}") from None
    for slot, member in zip(model.members, loaded):
        slot.load_state_dict(member.model.state_dict())
    kept = ("training", "metrics", "history", "train_seconds", "dataset_sha256", "finetuned")
    record = [{"file": m.path.name, **{k: m.metadata[k] for k in kept if k in m.metadata}} for m in loaded]
    return CombinedModel(model.to(device).eval(), {"members": members}, {"member_models": record})


def _short(value, limit: int = 60) -> str:
    """The value for a one-line message: a string as it is unless it holds line breaks or other unprintable
    characters (then escaped, as repr writes them), anything else as repr writes it; cut at ``limit``."""
    text = value if isinstance(value, str) and value.isprintable() else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
