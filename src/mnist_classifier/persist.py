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

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .atomic import atomic_path
from .errors import ConfigError, ModelFileError
from .models import build_model

METADATA_KEY = "mnist_classifier"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    model: torch.nn.Module  # in eval mode, on the requested device
    metadata: dict
    path: Path


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
    """Our JSON metadata from a model file, validating that the file is a model file of ours."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors model file ({_first_line(exc)})") from None
    if METADATA_KEY not in header:
        raise ModelFileError(f"{path}: a safetensors file, but not an mnist-classifier model (no {METADATA_KEY} metadata)")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: model metadata is not valid JSON") from None
    if not isinstance(meta, dict) or "architecture" not in meta:
        raise ModelFileError(f"{path}: model metadata has no architecture")
    return meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the architecture named in the file and load its weights (never unpickling anything)."""
    path = Path(path)
    meta = read_metadata(path)
    try:
        model = build_model(meta["architecture"], **meta.get("config", {}))
    except ConfigError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}
        model.load_state_dict(state, strict=True)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ModelFileError(f"{path}: weights do not match architecture {meta['architecture']!r} "
                             f"or are corrupt ({_first_line(exc)})") from None
    model.to(device).eval()
    return LoadedModel(model, meta, path)


def combine_models(paths, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, dict]:
    """One ensemble from several model files: (the model, its config, metadata recording each member's
    file and training)."""
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
    return model.to(device).eval(), {"members": members}, {"member_models": record}


def pretrained_path() -> Path:
    """The model shipped inside the package, used wherever a command's model is left out."""
    return Path(__file__).parent / "pretrained" / "digits.safetensors"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
