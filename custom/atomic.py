"""Atomic outputs: a reader sees the old file (or folder), or the complete new one, never a half-written one.

Everything is written under a hidden temporary name beside the target (same folder, hence the same file system)
and renamed into place only once complete; on any failure, interruptions included, the temporary is removed.
Files get the permissions of a plain ``open()`` (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "write_json_atomic", "save_torch_atomic", "staged_dir"]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary file path beside ``target``; on success it replaces ``target``, on failure it is removed.

    Args:
        target: the file to write; its folder is created if needed.
        suffix: ending of the temporary name, for writers that choose the format by extension (``".nii.gz"``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[str]], Any]) -> None:
    """Write text through ``write(file_object)`` (opened with ``newline=""``, as ``csv`` wants), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        write(f)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as JSON (indent 1, final newline) to ``path``, atomically; returns ``path``."""
    path = Path(path)

    def write(f: IO[str]) -> None:
        json.dump(obj, f, indent=1)
        f.write("\n")

    atomic_write(path, write)
    return path


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path``, atomically; returns ``path``."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


@contextmanager
def staged_dir(target: str | os.PathLike, accept_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a new, empty hidden folder beside ``target``; when the block succeeds it is renamed to ``target``.

    ``target`` must be absent or an empty folder (which is replaced). When the rename fails because another process
    filled ``target`` meanwhile and ``accept_existing(target)`` is true, the staged copy is discarded instead of
    raising. In every case the staged folder is gone afterwards.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        try:
            os.rename(tmp, target)
        except OSError:
            if accept_existing is None or not accept_existing(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
