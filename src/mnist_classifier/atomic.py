"""Atomic file writes: write a temporary file beside the target, then rename it into place.

A reader (or a crash) never sees half a file: the target is either the old file or the whole new one.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ConfigError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``target``, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def check_writable(target: str | os.PathLike, folder: bool = False) -> None:
    """Refuse, before any work is done, a target that could not be written later: a file path that is a
    folder (or a folder path that is a file), something under a file, or a place where no file can be made.

    Missing folders are fine (``atomic_path`` creates them); what is tried is the nearest one that exists.
    """
    target = Path(target)
    kind = "folder" if folder else "file"
    if target.exists() and target.is_dir() != folder:
        raise ConfigError(f"{target}: cannot write the {kind} there (it is a {'file' if folder else 'folder'})")
    existing = next(p for p in ((target,) if folder else ()) + (target.parent, *target.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{target}: cannot write the {kind} there ({existing} is a file, not a folder)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write the {kind} there ({exc.strerror or exc})") from None
