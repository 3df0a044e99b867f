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


def unwritable(target: str | os.PathLike) -> str | None:
    """Why ``atomic_path(target)`` would fail, told before any work is done; None when it would not.

    The temporary file goes in the target's folder (created with its parents when missing), so the
    nearest folder that exists must take a new file: tried for real, the only answer that holds for
    read-only mounts, ACLs and root alike.
    """
    target = Path(target)
    if target.is_dir():
        return "is a directory"
    if target.exists() and not target.is_file():
        return "not a regular file (the file is written beside it and renamed into place)"
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or exc})"
    return None


def check_writable(target: str | os.PathLike, folder: bool = False) -> None:
    """Refuse with a ConfigError, before any work is done, a file (or, with ``folder``, a folder) that could
    not be written there later (see unwritable)."""
    target = Path(target)
    kind = "folder" if folder else "file"
    if folder:
        problem = "it is a file" if target.exists() and not target.is_dir() else unwritable(target / "probe")
    else:
        problem = unwritable(target)
    if problem:
        raise ConfigError(f"{target}: cannot write the {kind} there ({problem})")
